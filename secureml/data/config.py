"""The `data:` section of an experiment config."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..schema import fail

# Every format a user may set; "auto" detects it from the files at `path`.
FORMATS = ("image_folder", "npz", "cifar_pickle", "csv", "tsv", "jsonl", "text_folder",
           "aclimdb", "sms_spam")
NAMED_SETS = ("cifar10", "mnist", "fashion_mnist", "cifar100", "digits", "imdb", "sms_spam")


@dataclass
class DataConfig:
    """Which data set to load, from where, and how to decode and split it."""

    name: str | None = None
    path: str | None = None
    format: Literal["auto", "image_folder", "npz", "cifar_pickle", "csv", "tsv", "jsonl",
                    "text_folder", "aclimdb", "sms_spam"] = "auto"
    text_column: str = "text"
    label_column: str = "label"
    image_size: tuple[int, int] | None = None
    channels: int | None = None
    on_corrupt: Literal["error", "skip"] = "error"
    limit: int | None = None
    test_limit: int | None = None
    validation_fraction: float = 0.1
    test_fraction: float = 0.2
    vocab_size: int = 10000
    sequence_length: int = 100
    download: bool = True
    # Replace emails, phone numbers, URLs, IP addresses and card numbers in texts with typed
    # placeholders before anything trains on them (counts in Dataset.notes["anonymized"]).
    anonymize: bool = False

    def validate(self) -> None:
        if self.name is None and self.path is None:
            fail("name", f"set a named data set ({', '.join(NAMED_SETS)}) or a path to your "
                         f"own files")
        if self.name is not None and self.name not in NAMED_SETS:
            fail("name", f"unknown data set {self.name!r}; named sets are "
                         f"{', '.join(NAMED_SETS)} (for your own files set path instead)")
        if self.path is not None and not self.path.strip():
            fail("path", "is empty; give a file or folder, or remove the key")
        if self.format != "auto" and self.path is None:
            fail("format", f"{self.format!r} describes the files at data.path, but path is not "
                           f"set; set path or use format: auto")
        if self.image_size is not None and (len(self.image_size) != 2
                                            or min(self.image_size) < 1):
            fail("image_size", f"must be [height, width] with both at least 1, got "
                               f"{list(self.image_size)}")
        if self.channels not in (None, 1, 3):
            fail("channels", f"must be 1 (grayscale), 3 (RGB) or null (keep), got "
                             f"{self.channels!r}")
        for key in ("limit", "test_limit"):
            value = getattr(self, key)
            if value is not None and value < 2:
                fail(key, f"must be at least 2 examples or null (all), got {value}")
        if not 0.0 <= self.validation_fraction < 1.0:
            fail("validation_fraction", f"must be in [0, 1), got {self.validation_fraction}")
        if not 0.0 < self.test_fraction < 1.0:
            fail("test_fraction", f"must be in (0, 1), got {self.test_fraction}")
        if self.vocab_size < 3:
            fail("vocab_size", f"must be at least 3 (padding, out-of-vocabulary and one word), "
                               f"got {self.vocab_size}")
        if self.sequence_length < 1:
            fail("sequence_length", f"must be at least 1, got {self.sequence_length}")
