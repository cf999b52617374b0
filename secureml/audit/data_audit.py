"""Data audit: what is wrong with a data set before any model trains on it.

`audit_dataset(data)` checks class balance, exact and near duplicates within each split and
across splits (a test example that is also in the training set inflates test accuracy and is
a member for any membership attack), suspicious labels, outliers and, for text, personal data.
The runner stores the result under "audit" in `<run>/data.json`; docs/audit.md lists every
field. It takes seconds on 50,000 images or texts: every comparison goes through hashing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from tqdm.auto import tqdm

from .. import schema
from ..data import pii
from . import duplicates, labels

AUDIT_VERSION = 1


@dataclass
class DataAuditOptions:
    # Images whose 64-bit perceptual hashes differ in at most this many bits are near duplicates.
    near_duplicate_distance: Annotated[int, schema.Range(0, 16)] = 4
    label_check: bool = True
    # The label check fits a model on at most this many training examples, chosen at random.
    label_check_limit: Annotated[int, schema.Range(100)] = 20000
    examples: schema.NonNegativeInt = 5
    seed: schema.Seed = 0


def audit_dataset(data, *, options: DataAuditOptions | dict | None = None,
                  progress: bool = False) -> dict:
    """Audit a `secureml.data.Dataset`; a JSON-ready dict (see docs/audit.md)."""
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
    out = {}
    for level in ("exact", "near"):
        ids = duplicates.key_ids(parts, data.kind, near=level == "near",
                                 max_distance=options.near_duplicate_distance)
        report = duplicates.duplicate_report(ids, ys, options.examples)
        if data.kind == "text":
            _add_snippets(report, parts)
        out[level] = report
    out["method"] = {
        "exact": "identical raw text" if data.kind == "text" else "identical 8-bit pixels",
        "near": ("identical after lowercasing and removing HTML tags, punctuation and extra "
                 "white space" if data.kind == "text" else
                 f"64-bit DCT perceptual hashes at most {options.near_duplicate_distance} bits "
                 f"apart"),
    }
    return out


def _add_snippets(report: dict, parts: dict) -> None:
    """Show what a duplicated text looks like, personal data masked."""
    for split, within in report["within"].items():
        groups = within["example_groups"]
        texts = pii.anonymize_texts([str(parts[split][g["indices"][0]]) for g in groups])[0]
        for group, text in zip(groups, texts):
            group["text"] = text[:100] + ("..." if len(text) > 100 else "")
