"""A data set as decoded from its files, before splitting: what the cache stores.

Readers return a `Decoded` whose parts are "train" and, when the source has one, "test".
Images are uint8 (N, H, W, C) or float32 in [0, 1] (converted to float32 only after
splitting, so the cache and any `limit` stay small); texts are object arrays of str.
"""
from __future__ import annotations

import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError

# Bytes that are not UTF-8 are read with errors="surrogateescape", which keeps them as lone
# surrogates; they are counted and replaced here, so every text reader counts them the same.
_ESCAPED_BYTES = re.compile("[\udc80-\udcff]+")
_INTEGER = re.compile(r"[+-]?\d+")
# How a missing value reads in a column of numbers (pandas writes NaN for an empty cell).
_MISSING = re.compile(r"[+-]?(nan|inf|infinity)", re.IGNORECASE)
_PARTS = {"train": "training", "test": "test"}


@dataclass
class Decoded:
    kind: str
    parts: dict[str, tuple[np.ndarray, np.ndarray]]
    class_names: list[str]
    notes: dict = field(default_factory=dict)


def encode_labels(raw: dict[str, list], where: str | Path) -> tuple[dict[str, np.ndarray],
                                                                   list[str]]:
    """Map raw labels of every part to int64 ids with one shared class list.

    Integer labels 0..K-1 (ints or strings such as "3") keep their ids. Other integer labels
    (star ratings 1-4 and 7-10, say) are numbered in increasing order and named by their value,
    so no class is left without examples. Any other labels are named by their text and numbered
    in sorted order. Missing (NaN, None) and fractional labels are refused, and so are splits
    labelled with numbers next to splits labelled with text.
    """
    kinds = {part: _label_kind(labels, f"{where}: {_PARTS.get(part, part)} split")
             for part, labels in raw.items() if len(labels)}
    if {"numbers", "text"} <= {kind for kind, _ in kinds.values()}:
        described = "; ".join(f"the {_PARTS.get(p, p)} labels are {kind} such as {example!r}"
                              for p, (kind, example) in kinds.items())
        raise DataError(f"{where}: {described}. Label every split the same way (all numbers "
                        f"or all text), or its classes would not match the others'")
    values = [v for labels in raw.values() for v in labels]
    as_ints = _as_integers(values)
    if as_ints is not None:
        if as_ints and min(as_ints) < 0:
            raise DataError(f"{where}: label {min(as_ints)} is negative; integer labels must be "
                            f"class ids 0, 1, 2, ... (or use class names as labels)")
        distinct = sorted(set(as_ints))
        index = {value: i for i, value in enumerate(distinct)}
        ids = {part: np.fromiter((index[v] for v in _as_integers(labels)), dtype=np.int64,
                                 count=len(labels))
               for part, labels in raw.items()}
        return ids, [str(v) for v in distinct]
    class_names = sorted({str(v) for v in values})
    index = {name: i for i, name in enumerate(class_names)}
    ids = {part: np.fromiter((index[str(v)] for v in labels), dtype=np.int64, count=len(labels))
           for part, labels in raw.items()}
    return ids, class_names


def _label_kind(labels: list, where: str) -> tuple[str, object]:
    """('numbers' | 'text' | 'mixed', an example) for one split's labels; refuses missing
    labels (None, NaN, or 'nan' among class ids) and fractional numbers."""
    kinds, examples = set(), {}
    for i, v in enumerate(labels):
        if v is None or (isinstance(v, (float, np.floating)) and not math.isfinite(v)):
            _missing(where, i, v)
        if isinstance(v, (float, np.floating)) and not float(v).is_integer():
            raise DataError(f"{where}: label {i} is {float(v)!r}, not a whole number; labels "
                            f"must be class ids 0, 1, 2, ... or class names")
        kind = "text" if isinstance(v, str) else "numbers"
        kinds.add(kind)
        examples.setdefault(kind, v)
    # 'nan' among class ids is a number column with an empty cell; among names, a name.
    written = {i for i, v in enumerate(labels)
               if isinstance(v, str) and _MISSING.fullmatch(v.strip())}
    if written and all(_is_id(v) for i, v in enumerate(labels) if i not in written):
        _missing(where, min(written), labels[min(written)])
    if len(kinds) != 1:
        return "mixed", labels[0]
    kind = kinds.pop()
    return kind, examples[kind]


def _missing(where: str, index: int, value) -> typing.NoReturn:
    raise DataError(f"{where}: label {index} is missing ({value!r}); every example needs a "
                    f"class id (0, 1, 2, ...) or a class name. Fix or remove the example")


def _is_id(v) -> bool:
    """An integer, an integral float or a digit string (not a bool)."""
    if isinstance(v, (bool, np.bool_)):
        return False
    return (isinstance(v, (int, np.integer))
            or (isinstance(v, (float, np.floating)) and float(v).is_integer())
            or (isinstance(v, str) and _INTEGER.fullmatch(v.strip()) is not None))


def _as_integers(values: list) -> list[int] | None:
    """The values as ints if every one is a class id (`_is_id`)."""
    if not all(_is_id(v) for v in values):
        return None
    return [int(v) for v in values]


def finalize(decoded: Decoded, where: str | Path) -> Decoded:
    """Clean texts and check the set is usable, recording what was changed in `notes`."""
    if decoded.kind == "text":
        dropped = replaced = 0
        for part, (texts, labels) in list(decoded.parts.items()):
            fixed = []
            for text in texts:
                if _ESCAPED_BYTES.search(text):
                    replaced += 1
                    text = _ESCAPED_BYTES.sub("\ufffd", text)
                fixed.append(text)
            keep = np.fromiter((bool(t.strip()) for t in fixed), dtype=bool, count=len(fixed))
            dropped += int((~keep).sum())
            decoded.parts[part] = (as_text_array([t for t, k in zip(fixed, keep) if k]),
                                   labels[keep])
        if dropped:
            decoded.notes["dropped_empty_texts"] = dropped
        if replaced:
            decoded.notes["texts_with_undecodable_bytes"] = replaced
    if "test" in decoded.parts and len(decoded.parts["test"][0]) == 0:
        del decoded.parts["test"]  # nothing left to test on: the split step carves a test set
    if len(decoded.parts["train"][0]) == 0:
        extra = (f" after dropping {decoded.notes['dropped_empty_texts']} empty texts"
                 if decoded.notes.get("dropped_empty_texts") else "")
        raise DataError(f"{where}: no examples left in the training data{extra}; check that the "
                        f"file holds labelled examples")
    if "test" in decoded.parts:
        test_labels = decoded.parts["test"][1]
        unseen = np.setdiff1d(test_labels, decoded.parts["train"][1])
        if len(unseen):
            names = ", ".join(repr(decoded.class_names[i]) for i in unseen[:5])
            more = f" and {len(unseen) - 5} more" if len(unseen) > 5 else ""
            raise DataError(f"{where}: {int(np.isin(test_labels, unseen).sum())} test examples "
                            f"are of classes the training data lacks ({names}{more}); no model "
                            f"trained on it can predict them. Add training examples of these "
                            f"classes or remove them from the test data")
    present = np.unique(np.concatenate([y for _, y in decoded.parts.values()]))
    if len(present) < 2:
        only = decoded.class_names[int(present[0])] if len(present) else "none"
        raise DataError(f"{where}: all examples have the same label ({only!r}); a classifier "
                        f"needs at least two classes; check the label column or class folders")
    present_ids = set(present.tolist())
    missing = [n for i, n in enumerate(decoded.class_names) if i not in present_ids]
    if missing:
        decoded.notes["classes_without_examples"] = missing
    return decoded


def as_text_array(texts: list[str]) -> np.ndarray:
    """A 1-D object array of str (np.array would make a fixed-width unicode array)."""
    out = np.empty(len(texts), dtype=object)
    out[:] = texts
    return out
