"""The `Dataset` every loader returns and every later stage reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


@dataclass
class Dataset:
    """A labelled data set split into train, validation and test.

    Images are float32 arrays of shape (N, H, W, C) with values in [0, 1]. Texts are 1-D
    object arrays of Python strings (raw text; vectorization happens in preprocessing and is
    fitted on the training split only). Labels are int64 class ids in [0, num_classes).
    """

    name: str
    kind: Literal["image", "text"]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    # Where the data came from: {"origin": "path|env|keras_cache|download|bundled",
    # "path": ..., "format": ...}; recorded in the run folder so numbers trace to files.
    source: dict = field(default_factory=dict)
    # What loading had to repair or skip: corrupt files skipped, undecodable bytes replaced.
    notes: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    def summary(self) -> dict:
        """Sizes, shapes and provenance, as JSON-ready values."""
        return {
            "name": self.name,
            "kind": self.kind,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "input_shape": list(self.input_shape),
            "sizes": {"train": int(len(self.y_train)), "validation": int(len(self.y_val)),
                      "test": int(len(self.y_test))},
            "source": self.source,
            "notes": self.notes,
        }
