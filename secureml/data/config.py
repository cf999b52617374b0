"""The `data:` section of an experiment config."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from ..schema import PositiveInt, Range, fail

# A split needs two examples; a vocabulary padding, out-of-vocabulary and one word.
Limit = Annotated[int, Range(2)]

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
    image_size: tuple[PositiveInt, PositiveInt] | None = None  # [height, width]
    channels: int | None = None
    on_corrupt: Literal["error", "skip"] = "error"
    limit: Limit | None = None
    test_limit: Limit | None = None
    validation_fraction: Annotated[float, Range(0, 1, "[)")] = 0.1
    test_fraction: Annotated[float, Range(0, 1, "()")] = 0.2
    vocab_size: Annotated[int, Range(3)] = 10000
    sequence_length: PositiveInt = 100
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
        if self.channels not in (None, 1, 3):
            fail("channels", f"must be 1 (grayscale), 3 (RGB) or null (keep), got "
                             f"{self.channels!r}")
