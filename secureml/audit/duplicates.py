"""Exact and near duplicates, within a split and across splits.

Every example gets a class: examples of one class are identical copies.
- Exact: images compare their 8-bit pixels (what the files held), texts their raw strings.
- Near, text: texts compare after normalization (lowercased, HTML tags, punctuation and extra
  white space removed). Equality cannot chain, so its classes are the groups.
- Near, images: two images are near duplicates when their `THUMBNAIL` x `THUMBNAIL` grayscale
  thumbnails, each standardized (mean removed, divided by its standard deviation, or by
  `CONTRAST_FLOOR` if that is larger, so that faint noise on a flat image stays small), differ
  by at most `threshold` (root mean square). That ignores brightness and contrast changes,
  re-encoding and faint noise, and keeps different images apart even where they look alike
  (handwritten digits of one class). Candidate pairs come from 64-bit DCT perceptual hashes
  (Zauner 2010) at most `max_bits` apart, found through hash bands (the bits dealt into
  max_bits + 1 bands: two hashes that close agree on at least one band), so no all-pairs
  comparison is made; the hash only proposes pairs, the thumbnail distance decides. Exact
  copies are compared once.

Near-duplicate images form groups in which every two members are verified near duplicates of
each other (`clique_groups`), so a chain a~b~c with a far from c is never one group. A test
(validation) example is "also in the training set" when some training example is an exact
copy or a verified near duplicate of it.
"""
from __future__ import annotations

import hashlib
import re

import numpy as np

SPLITS = ("train", "validation", "test")
THUMBNAIL = 16
CONTRAST_FLOOR = 0.1
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_TAGS = re.compile(r"<[^>]*>")
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize_text(text: str) -> str:
    return _NON_WORD.sub(" ", _TAGS.sub(" ", str(text).lower())).strip()


def class_ids(values) -> np.ndarray:
    """Equal values get equal integer ids, numbered in order of first occurrence."""
    table: dict = {}
    return np.fromiter((table.setdefault(v, len(table)) for v in values), dtype=np.int64,
                       count=len(values))


def exact_keys(x: np.ndarray, kind: str) -> list:
    if kind == "text":
        return [str(t) for t in x]
    pixels = np.round(np.asarray(x) * 255).astype(np.uint8).reshape(len(x), -1)
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in pixels]


def image_signatures(x: np.ndarray, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """64-bit DCT hashes (uint64) and standardized grayscale thumbnails (float16, one row of
    THUMBNAIL**2 values each) of images (N, H, W, C) in [0, 1]."""
    import tensorflow as tf
    from scipy.fft import dctn

    hashes = np.empty(len(x), dtype=np.uint64)
    thumbs = np.empty((len(x), THUMBNAIL * THUMBNAIL), dtype=np.float16)
    weights = 1 << np.arange(64, dtype=np.uint64)
    for start in range(0, len(x), batch):
        gray = np.asarray(x[start:start + batch], dtype=np.float32).mean(axis=-1, keepdims=True)
        if gray.shape[1:3] != (32, 32):
            gray = tf.image.resize(gray, (32, 32), antialias=True).numpy()
        small = gray[..., 0]
        low = dctn(small, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(small), 64)
        # The median of the 63 AC coefficients splits the bits evenly for every image.
        bits = low > np.median(low[:, 1:], axis=1, keepdims=True)
        hashes[start:start + batch] = (bits.astype(np.uint64) * weights).sum(axis=1)
        f = 32 // THUMBNAIL  # area averaging
        thumb = small.reshape(len(small), THUMBNAIL, f, THUMBNAIL, f).mean(axis=(2, 4))
        thumb = thumb.reshape(len(small), -1)
        thumb -= thumb.mean(axis=1, keepdims=True)
        thumbs[start:start + batch] = thumb / np.maximum(thumb.std(axis=1, keepdims=True),
                                                         CONTRAST_FLOOR)
    return hashes, thumbs


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    xor = np.bitwise_xor(a, b).view(np.uint8).reshape(len(a), 8)
    return _POPCOUNT[xor].sum(axis=1)


def _band_pairs(hashes: np.ndarray, max_distance: int, chunk: int = 2_000_000):
    """Index pairs (i < j) whose hashes differ in at most max_distance bits."""
    bands = max_distance + 1
    found = []
    for first in range(bands):
        # Band `first` holds every bands-th bit: the hash's low-frequency bits, nearly constant
        # on centered digits, are spread over all bands instead of crowding one band's buckets.
        band = np.zeros(len(hashes), dtype=np.uint64)
        for position, bit in enumerate(range(first, 64, bands)):
            band |= ((hashes >> np.uint64(bit)) & np.uint64(1)) << np.uint64(position)
        order = np.argsort(band, kind="stable")
        values = band[order]
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        sizes = np.diff(np.r_[starts, len(values)])
        shared = sizes > 1
        for rows, cols in _bucket_pairs(starts[shared], sizes[shared], chunk):
            i, j = order[rows], order[cols]
            close = _hamming(hashes[i], hashes[j]) <= max_distance
            found.append(np.stack([np.minimum(i, j)[close], np.maximum(i, j)[close]], 1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0)


def _bucket_pairs(starts: np.ndarray, sizes: np.ndarray, chunk: int):
    """All pairs of positions within each bucket [start, start + size), in pieces of about
    `chunk` pairs (a bucket larger than that alone, in pieces of its own)."""
    counts = sizes * (sizes - 1) // 2
    ends = np.cumsum(counts)
    first = 0
    while first < len(sizes):
        if counts[first] > chunk:
            rows, cols = np.triu_indices(int(sizes[first]), 1)
            for c in range(0, len(rows), chunk):
                yield starts[first] + rows[c:c + chunk], starts[first] + cols[c:c + chunk]
            first += 1
            continue
        stop = max(int(np.searchsorted(ends, ends[first] - counts[first] + chunk, "right")),
                   first + 1)
        s, st = sizes[first:stop], starts[first:stop]
        local = np.arange(s.sum()) - np.repeat(np.cumsum(s) - s, s)   # position in its bucket
        later = np.repeat(s, s) - 1 - local                         # partners after it
        rows = np.repeat(np.repeat(st, s) + local, later)
        yield rows, rows + 1 + np.arange(later.sum()) - np.repeat(np.cumsum(later) - later,
                                                                   later)
        first = stop


def thumbnail_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root-mean-square difference of standardized thumbnails, row by row."""
    diff = a.astype(np.float32) - b.astype(np.float32)
    return np.sqrt(np.mean(diff * diff, axis=1))


def candidate_pairs(hashes: np.ndarray, thumbs: np.ndarray, max_bits: int,
                    chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of images whose hashes are at most `max_bits` apart, and the distance of
    their thumbnails (a pair is a near duplicate when that is at most the threshold)."""
    pairs = _band_pairs(hashes, max_bits)
    distances = np.concatenate([np.zeros(0, np.float32)] + [
        thumbnail_distance(thumbs[pairs[c:c + chunk, 0]], thumbs[pairs[c:c + chunk, 1]])
        for c in range(0, len(pairs), chunk)])
    return pairs, distances


def clique_groups(n: int, pairs: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Group id per node (the node that started the group) such that every two members of a
    group are a pair. Greedy: the node with the most pairs starts a group, its partners
    join closest first, each only if paired with every member so far; repeat."""
    group = np.arange(n)
    if not len(pairs):
        return group
    partners: dict[int, dict[int, float]] = {}
    for (a, b), d in zip(pairs.tolist(), distances.tolist()):
        partners.setdefault(a, {})[b] = d
        partners.setdefault(b, {})[a] = d
    assigned = np.zeros(n, dtype=bool)
    for node in sorted(partners, key=lambda k: (-len(partners[k]), k)):
        if assigned[node]:
            continue
        assigned[node] = True
        members = [node]
        for other, _ in sorted(partners[node].items(), key=lambda kv: (kv[1], kv[0])):
            if not assigned[other] and all(m in partners[other] for m in members[1:]):
                members.append(other)
                assigned[other] = True
                group[other] = node
    return group


def duplicate_report(classes: np.ndarray, sizes: dict[str, int], labels: dict[str, np.ndarray],
                     pairs: np.ndarray | None = None, distances: np.ndarray | None = None,
                     examples: int = 5, neighbours: np.ndarray | None = None) -> dict:
    """Duplicates within each split, overlaps between splits, label conflicts among copies.

    `classes` holds one class per example of every split, the splits concatenated in the
    order of `sizes`; `pairs` (with `distances`) links classes that are verified near
    duplicates; `neighbours` (pairs of classes with similar hashes, verified or not) adds
    `hash_neighbours` to each overlap, for review only. Indices in the result are positions
    in their split.
    """
    measured = pairs is not None  # the level has a distance (near images)
    pairs = np.zeros((0, 2), dtype=np.int64) if pairs is None else pairs
    distances = np.zeros(0, dtype=np.float32) if distances is None else distances
    n_classes = int(classes.max()) + 1 if len(classes) else 0
    offsets = dict(zip(sizes, np.cumsum([0, *sizes.values()])[:-1].tolist()))
    part = {s: classes[offsets[s]:offsets[s] + n] for s, n in sizes.items()}
    within = {split: _within(part[split], labels[split], n_classes, pairs, distances, examples,
                             measured) for split in sizes}
    across = {}
    for first, second in (("train", "test"), ("train", "validation"), ("validation", "test")):
        if first in sizes and sizes.get(second):
            across[f"{first}_{second}"] = _across(part[first], part[second], n_classes, pairs,
                                                  distances, examples, second, measured)
            if neighbours is not None:
                across[f"{first}_{second}"]["hash_neighbours"] = _across(
                    part[first], part[second], n_classes, neighbours,
                    np.zeros(len(neighbours), np.float32), 0, second, False)["examples"]
    everything = clique_groups(n_classes, pairs, distances)[classes]
    return {"within": within, "across": across,
            "distinct_all": int(len(np.unique(everything))), "total_all": int(len(everything))}


def _within(cls: np.ndarray, labels: np.ndarray, n_classes: int, pairs: np.ndarray,
            distances: np.ndarray, examples: int, measured: bool) -> dict:
    present = np.zeros(n_classes, dtype=bool)
    present[cls] = True
    inside = present[pairs[:, 0]] & present[pairs[:, 1]]
    of_class = clique_groups(n_classes, pairs[inside], distances[inside])
    key = of_class[cls]
    unique, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    duplicated = counts[inverse] > 1
    widest = np.zeros(n_classes, dtype=np.float32)  # the largest distance within each group
    linked = inside & (of_class[pairs[:, 0]] == of_class[pairs[:, 1]])
    np.maximum.at(widest, of_class[pairs[linked, 0]], distances[linked])
    groups = []
    for g in unique[counts > 1][:examples]:
        group = {"indices": np.flatnonzero(key == g).tolist()}
        if measured:
            group["max_distance"] = round(float(widest[g]), 4)
        groups.append(group)
    return {
        "examples": int(len(key)),
        "distinct": int(len(unique)),
        "groups": int(np.sum(counts > 1)),
        "redundant_copies": int(len(key) - len(unique)),
        "fraction": float((len(key) - len(unique)) / len(key)) if len(key) else 0.0,
        "label_conflicts": _label_conflicts(key[duplicated], labels[duplicated]),
        "example_groups": groups,
    }


def _across(first: np.ndarray, second: np.ndarray, n_classes: int, pairs: np.ndarray,
            distances: np.ndarray, examples: int, of: str, measured: bool) -> dict:
    """Examples of `second` with an exact copy or a verified near duplicate in `first`."""
    member = np.full(n_classes, -1, dtype=np.int64)   # the first index in `first` of a class
    classes, first_index = np.unique(first, return_index=True)
    member[classes] = first_index
    match, best = member.copy(), np.where(member >= 0, 0.0, np.inf)
    if len(pairs):  # classes without a copy in `first`: their closest verified partner's
        src = np.concatenate([pairs[:, 0], pairs[:, 1]])
        dst = np.concatenate([pairs[:, 1], pairs[:, 0]])
        d = np.concatenate([distances, distances]).astype(np.float64)
        keep = (member[dst] >= 0) & (member[src] < 0)
        src, dst, d = src[keep], dst[keep], d[keep]
        order = np.lexsort((d, src))
        src, dst, d = src[order], dst[order], d[order]
        closest = np.unique(src, return_index=True)[1]
        best[src[closest]], match[src[closest]] = d[closest], member[dst[closest]]
    found = match[second]
    seen = np.flatnonzero(found >= 0)
    shown = [{"index": int(i), "match": int(found[i])} for i in seen[:examples]]
    if measured:
        for row, i in zip(shown, seen[:examples]):
            row["distance"] = round(float(best[second[i]]), 4)
    return {"examples": int(len(seen)), "fraction": float(len(seen) / len(second)), "of": of,
            "example_pairs": shown}


def _label_conflicts(key: np.ndarray, labels: np.ndarray) -> int:
    """Groups of copies that carry more than one label."""
    if not len(key):
        return 0
    pairs = np.unique(np.stack([key, labels], 1), axis=0)
    groups, counts = np.unique(pairs[:, 0], return_counts=True)
    return int(np.sum(counts > 1))
