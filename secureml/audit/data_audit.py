"""Data audit: what is wrong with a data set before any model trains on it.

`audit_dataset(data)` checks class balance, exact and near duplicates within each split and
across splits (a test example that is also in the training set inflates test accuracy and is
a member for any membership attack), suspicious labels, outliers and, for text, personal data.
The runner stores the result under "audit" in `<run>/data.json`; docs/audit.md lists every
field. It takes seconds on 60,000 images or 50,000 texts: candidates for every comparison come
from hashing. Listed records are named by index and keyed hash (`records`); raw excerpts only
with `include_examples`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from tqdm.auto import tqdm

from .. import schema
from ..data import pii
from . import duplicates, labels, records

AUDIT_VERSION = 1


@dataclass
class DataAuditOptions:
    # Images whose 64-bit perceptual hashes differ in at most this many bits are compared ...
    near_duplicate_distance: Annotated[int, schema.Range(0, 16)] = 4
    # ... and are near duplicates when their standardized 16x16 grayscale thumbnails differ by
    # at most this much (root mean square, in standard deviations; docs/audit.md: calibration).
    near_duplicate_threshold: Annotated[float, schema.Range(0, 1, "(]")] = 0.08
    label_check: bool = True
    # The label check fits a model on at most this many training examples, chosen at random.
    label_check_limit: Annotated[int, schema.Range(100)] = 20000
    examples: schema.NonNegativeInt = 5
    # Listed texts carry an excerpt (personal data masked); off, they are named by index and
    # keyed hash only. audit.include_examples in a run config.
    include_examples: bool = False
    seed: schema.Seed = 0


def audit_dataset(data, *, options: DataAuditOptions | dict | None = None,
                  record_key: bytes | None = None, progress: bool = False) -> dict:
    """Audit a `secureml.data.Dataset`; a JSON-ready dict (see docs/audit.md).

    `record_key` (a run's, `records.run_key`) adds a keyed hash to every listed record.
    """
    options = schema.build(DataAuditOptions, options, "data audit")
    started = time.perf_counter()
    parts = {"train": data.x_train, "validation": data.x_val, "test": data.x_test}
    ys = {"train": data.y_train, "validation": data.y_val, "test": data.y_test}
    parts = {k: v for k, v in parts.items() if len(v)}
    ys = {k: ys[k] for k in parts}
    steps = ["duplicates", "labels", "outliers"] + (["personal data"] if data.kind == "text"
                                                    else [])
    bar = tqdm(total=len(steps), desc="data audit", unit="check", leave=False,
               disable=not progress)
    seconds = {}

    def timed(name, fn):
        t = time.perf_counter()
        bar.set_postfix_str(name)
        value = fn()
        seconds[name] = round(time.perf_counter() - t, 2)
        bar.update(1)
        return value

    record = {"version": AUDIT_VERSION, "kind": data.kind,
              "class_balance": class_balance(ys, data.class_names)}
    record["duplicates"] = timed("duplicates", lambda: _duplicates(data, parts, ys, options))
    features = None
    if options.label_check or data.kind == "image":
        features = (labels.text_features(data.x_train) if data.kind == "text"
                    else labels.image_features(data.x_train))
    record["labels"] = (timed("labels", lambda: labels.suspicious_labels(
        features, data.y_train, data.class_names, limit=options.label_check_limit,
        seed=options.seed, examples=options.examples)[0])
        if options.label_check else {"checked": 0, "reason": "switched off"})
    record["outliers"] = timed("outliers", lambda: (
        labels.text_outliers(data.x_train, options.examples) if data.kind == "text"
        else labels.image_outliers(features, data.x_train, options.examples)))
    if data.kind == "text":
        record["personal_data"] = timed("personal data", lambda: {
            split: pii.scan_texts(x, options.examples) for split, x in parts.items()})
    bar.close()
    _name_records(record, parts, record_key, options.include_examples)
    record["cost"] = {"seconds": seconds, "total_s": round(time.perf_counter() - started, 2)}
    return record


def class_balance(ys: dict[str, np.ndarray], class_names: list[str]) -> dict:
    """Examples per class and split, how uneven the training classes are, and how far the
    test split's class mix is from the training split's (total variation distance)."""
    k = len(class_names)
    counts = {split: np.bincount(y, minlength=k) for split, y in ys.items()}
    train = counts["train"]
    present = train[train > 0]
    result = {
        "counts": {split: dict(zip(class_names, c.tolist())) for split, c in counts.items()},
        "imbalance_ratio": float(present.max() / present.min()) if len(present) else None,
        "missing_in_train": [n for n, c in zip(class_names, train) if c == 0],
    }
    if "test" in counts and counts["test"].sum():
        p, q = train / train.sum(), counts["test"] / counts["test"].sum()
        result["train_test_distance"] = float(0.5 * np.abs(p - q).sum())
    return result


def _duplicates(data, parts, ys, options: DataAuditOptions) -> dict:
    names = list(parts)
    sizes = {split: len(parts[split]) for split in names}
    exact = duplicates.class_ids([k for split in names
                                  for k in duplicates.exact_keys(parts[split], data.kind)])
    out = {"exact": duplicates.duplicate_report(exact, sizes, ys, examples=options.examples)}
    if data.kind == "text":
        near = duplicates.class_ids([duplicates.normalize_text(t) for split in names
                                     for t in parts[split]])
        out["near"] = duplicates.duplicate_report(near, sizes, ys, examples=options.examples)
    else:
        signatures = [duplicates.image_signatures(parts[split]) for split in names]
        # Exact copies are compared once: through the first image of each class.
        first = np.unique(exact, return_index=True)[1]
        pairs, distances = duplicates.candidate_pairs(
            np.concatenate([h for h, _ in signatures])[first],
            np.concatenate([t for _, t in signatures])[first], options.near_duplicate_distance)
        close = distances <= options.near_duplicate_threshold
        out["near"] = duplicates.duplicate_report(exact, sizes, ys, pairs[close],
                                                  distances[close], options.examples, pairs)
        out["near"]["compared_pairs"], out["near"]["verified_pairs"] = len(pairs), int(close.sum())
    out["method"] = {
        "exact": "identical raw text" if data.kind == "text" else "identical 8-bit pixels",
        "near": ("identical after lowercasing and removing HTML tags, punctuation and extra "
                 "white space" if data.kind == "text" else
                 f"standardized {duplicates.THUMBNAIL}x{duplicates.THUMBNAIL} grayscale "
                 f"thumbnails at most {options.near_duplicate_threshold} apart (RMS), compared "
                 f"when their 64-bit DCT hashes are at most {options.near_duplicate_distance} "
                 f"bits apart; every two images of a group are that close"),
    }
    return out


def _name_records(record: dict, parts: dict, key: bytes | None, include: bool) -> None:
    """Add the hash (and, only if asked, the excerpt) of every record the audit lists."""
    def name(split, index):
        return records.describe(parts[split], index, key, include)

    for level in ("exact", "near"):
        report = record["duplicates"][level]
        for split, within in report["within"].items():
            for group in within["example_groups"]:
                named = [name(split, i) for i in group["indices"]]
                if key is not None:
                    group["hashes"] = [n["hash"] for n in named]
                if records.EXCERPT in named[0]:
                    group[records.EXCERPT] = named[0][records.EXCERPT]
        for across in report["across"].values():
            for row in across["example_pairs"]:
                row.update(name(across["of"], row["index"]))
    for row in record["labels"].get("examples", []) + record["outliers"]["examples"]:
        row.update(name("train", row["index"]))
    for split, scan in record.get("personal_data", {}).items():
        for entry in [*scan["by_type"].values(), scan["links"]]:
            for row in entry["examples"]:
                row.update(name(split, row["index"]))
