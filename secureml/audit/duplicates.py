"""Exact and near duplicates, within a split and across splits, in time linear in the data.

Every example gets a key; examples with equal keys are duplicates.
- Exact: images compare their 8-bit pixels (what the files held), texts their raw strings.
- Near: texts compare after normalization (lowercased, HTML tags, punctuation and extra white
  space removed); images compare a 64-bit perceptual hash (DCT of a 32x32 grayscale version,
  Zauner 2010) and count as near duplicates when the hashes differ in at most `max_distance`
  bits. Candidate pairs come from hash bands (split into max_distance + 1 bands, two hashes
  that close agree on at least one band), so no two images are compared unless they share a
  band; connected pairs form groups.
"""
from __future__ import annotations

import hashlib
import re

import numpy as np

SPLITS = ("train", "validation", "test")
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_TAGS = re.compile(r"<[^>]*>")
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize_text(text: str) -> str:
    return _NON_WORD.sub(" ", _TAGS.sub(" ", str(text).lower())).strip()


def _ids(values) -> np.ndarray:
    """Equal values get equal integer ids."""
    table: dict = {}
    return np.fromiter((table.setdefault(v, len(table)) for v in values), dtype=np.int64,
                       count=len(values))


def exact_keys(x: np.ndarray, kind: str) -> list:
    if kind == "text":
        return [str(t) for t in x]
    pixels = np.round(np.asarray(x) * 255).astype(np.uint8).reshape(len(x), -1)
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in pixels]


def perceptual_hashes(x: np.ndarray, batch: int = 4096) -> np.ndarray:
    """64-bit DCT hashes (as uint64) of images (N, H, W, C) in [0, 1]."""
    import tensorflow as tf
    from scipy.fft import dctn

    out = np.empty(len(x), dtype=np.uint64)
    weights = 1 << np.arange(64, dtype=np.uint64)
    for start in range(0, len(x), batch):
        gray = np.asarray(x[start:start + batch], dtype=np.float32).mean(axis=-1, keepdims=True)
        if gray.shape[1:3] != (32, 32):
            gray = tf.image.resize(gray, (32, 32), antialias=True).numpy()
        small = gray[..., 0]
        low = dctn(small, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(small), 64)
        # The median of the 63 AC coefficients splits the bits evenly for every image.
        bits = low > np.median(low[:, 1:], axis=1, keepdims=True)
        out[start:start + batch] = (bits.astype(np.uint64) * weights).sum(axis=1)
    return out


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    xor = np.bitwise_xor(a, b).view(np.uint8).reshape(len(a), 8)
    return _POPCOUNT[xor].sum(axis=1)


def _band_pairs(hashes: np.ndarray, max_distance: int, chunk: int = 2_000_000):
    """Index pairs (i < j) whose hashes differ in at most max_distance bits."""
    bands = max_distance + 1
    edges = np.linspace(0, 64, bands + 1).astype(int)
    found = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        band = (hashes >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(band, kind="stable")
        values = band[order]
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        sizes = np.diff(np.r_[starts, len(values)])
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
            members = order[start:start + size]
            rows, cols = np.triu_indices(size, 1)
            for c in range(0, len(rows), chunk):
                i, j = members[rows[c:c + chunk]], members[cols[c:c + chunk]]
                close = _hamming(hashes[i], hashes[j]) <= max_distance
                found.append(np.stack([np.minimum(i, j)[close], np.maximum(i, j)[close]], 1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0)


def near_image_ids(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Group ids: images linked by a chain of near-identical hashes share an id."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    unique, inverse = np.unique(hashes, return_inverse=True)
    pairs = _band_pairs(unique, max_distance) if max_distance > 0 else np.zeros((0, 2), int)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                       shape=(len(unique), len(unique)))
    _, component = connected_components(graph, directed=False)
    return component[inverse]


def key_ids(parts: dict[str, np.ndarray], kind: str, near: bool,
            max_distance: int = 4) -> dict[str, np.ndarray]:
    """Group ids for every example of every split, comparable across splits."""
    names = [s for s in SPLITS if s in parts]
    x_all = [parts[s] for s in names]
    sizes = [len(x) for x in x_all]
    if kind == "text":
        texts = [t for x in x_all for t in x]
        ids = _ids([normalize_text(t) for t in texts] if near else exact_keys(texts, "text"))
    elif near:
        ids = near_image_ids(np.concatenate([perceptual_hashes(x) for x in x_all]),
                             max_distance)
    else:
        ids = _ids([k for x in x_all for k in exact_keys(x, "image")])
    return dict(zip(names, np.split(ids, np.cumsum(sizes)[:-1])))


def duplicate_report(ids: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                     examples: int = 5) -> dict:
    """Duplicates within each split, overlaps between splits, label conflicts among copies."""
    within = {}
    for split, key in ids.items():
        unique, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        duplicated = counts[inverse] > 1
        conflicts = _label_conflicts(key[duplicated], labels[split][duplicated])
        groups = [{"indices": np.flatnonzero(key == g).tolist()}
                  for g in unique[counts > 1][:examples]]
        within[split] = {
            "examples": int(len(key)),
            "distinct": int(len(unique)),
            "groups": int(np.sum(counts > 1)),
            "redundant_copies": int(len(key) - len(unique)),
            "fraction": float((len(key) - len(unique)) / len(key)) if len(key) else 0.0,
            "label_conflicts": conflicts,
            "example_groups": groups,
        }
    across = {}
    for first, second in (("train", "test"), ("train", "validation"), ("validation", "test")):
        if first not in ids or second not in ids or not len(ids[second]):
            continue
        seen = np.isin(ids[second], ids[first])
        across[f"{first}_{second}"] = {
            "examples": int(seen.sum()),
            "fraction": float(seen.mean()),
            "of": second,
            "example_indices": np.flatnonzero(seen)[:examples].tolist(),
        }
    everything = np.concatenate(list(ids.values()))
    return {"within": within, "across": across,
            "distinct_all": int(len(np.unique(everything))), "total_all": int(len(everything))}


def _label_conflicts(key: np.ndarray, labels: np.ndarray) -> int:
    """Groups of copies that carry more than one label."""
    if not len(key):
        return 0
    pairs = np.unique(np.stack([key, labels], 1), axis=0)
    groups, counts = np.unique(pairs[:, 0], return_counts=True)
    return int(np.sum(counts > 1))
