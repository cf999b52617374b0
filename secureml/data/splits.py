"""Deterministic stratified splits and subsets, and the final `Dataset`.

Order: when the source has no test split, `test_fraction` of it becomes the test split; then
`limit` and `test_limit` subsample train and test; then `validation_fraction` of the
(limited) training split becomes the validation split. Each step is stratified by label and
seeded; when a class is too small to stratify, the step falls back to a seeded random split
and says so in `notes["unstratified"]`.
"""
from __future__ import annotations

import math

import numpy as np
from sklearn.model_selection import train_test_split

from .dataset import Dataset
from .decoded import Decoded


def split_off(y: np.ndarray, count: int, seed: int, step: str,
              notes: dict) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, taken) where `taken` holds `count` examples, stratified by `y` if possible."""
    index = np.arange(len(y))
    try:
        rest, taken = train_test_split(index, test_size=count, random_state=seed, stratify=y)
    except ValueError as err:  # a class with one example, or fewer taken than classes
        notes.setdefault("unstratified", {})[step] = str(err)
        rest, taken = train_test_split(index, test_size=count, random_state=seed)
    return rest, taken


def _fraction_count(n: int, fraction: float) -> int:
    """Examples a fraction of n means: at least one when fraction > 0, and never all of them."""
    return min(max(math.ceil(n * fraction), 1), n - 1) if fraction > 0 and n > 1 else 0


def to_dataset(decoded: Decoded, config, seed: int, name: str, source: dict) -> Dataset:
    notes = dict(decoded.notes)
    x_train, y_train = decoded.parts["train"]
    if "test" in decoded.parts:
        x_test, y_test = decoded.parts["test"]
    else:
        count = _fraction_count(len(y_train), config.test_fraction)
        rest, taken = split_off(y_train, count, seed, "test", notes)
        x_test, y_test = x_train[taken], y_train[taken]
        x_train, y_train = x_train[rest], y_train[rest]
        notes["test_split"] = (f"carved from the training data "
                               f"(test_fraction {config.test_fraction})")
    if config.limit is not None and config.limit < len(y_train):
        _, taken = split_off(y_train, config.limit, seed, "limit", notes)
        x_train, y_train = x_train[taken], y_train[taken]
    if config.test_limit is not None and config.test_limit < len(y_test):
        _, taken = split_off(y_test, config.test_limit, seed, "test_limit", notes)
        x_test, y_test = x_test[taken], y_test[taken]
    count = _fraction_count(len(y_train), config.validation_fraction)
    if count:
        rest, taken = split_off(y_train, count, seed, "validation", notes)
        x_val, y_val = x_train[taken], y_train[taken]
        x_train, y_train = x_train[rest], y_train[rest]
    else:
        x_val, y_val = x_train[:0], y_train[:0]
    unseen = np.setdiff1d(y_test, y_train)
    if len(unseen):  # a class too rare to survive `limit` in the training split
        notes["test_classes_not_in_training"] = [decoded.class_names[i] for i in unseen]
    return Dataset(name=name, kind=decoded.kind,
                   x_train=_model_input(x_train), y_train=y_train.astype(np.int64),
                   x_val=_model_input(x_val), y_val=y_val.astype(np.int64),
                   x_test=_model_input(x_test), y_test=y_test.astype(np.int64),
                   class_names=list(decoded.class_names), source=source, notes=notes)


def _model_input(x: np.ndarray) -> np.ndarray:
    """Images become float32 in [0, 1] here, after subsetting, to keep memory low until now."""
    if x.dtype == np.uint8:
        out = x.astype(np.float32)
        out /= 255.0
        return out
    return x
