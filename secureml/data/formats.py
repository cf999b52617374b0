"""Finding the files of each format under a path, and telling formats apart.

`locate(path, format)` returns a `Located`: the format, the files decoding will read (the
cache key covers their sizes and modification times) and, per part ("train", optionally
"test"), what to read. With format "auto" the first format whose layout matches wins.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from .config import FORMATS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
TEXT_EXTENSIONS = (".txt",)
_TABLE_EXTENSIONS = {"csv": (".csv", ".csv.gz"), "tsv": (".tsv", ".tsv.gz"),
                     "jsonl": (".jsonl", ".jsonl.gz")}
SMS_FILE = "SMSSpamCollection"
CIFAR10_DIR, CIFAR100_DIR, ACLIMDB_DIR = "cifar-10-batches-py", "cifar-100-python", "aclImdb"
# Fashion-MNIST as Keras caches it (the original IDX files); found by auto-detection only.
IDX_FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}

LAYOUTS = {
    "image_folder": "class subfolders of images, <class>/*.jpg, or train/<class>/... and "
                    "test/<class>/...; image files end in " + " ".join(IMAGE_EXTENSIONS),
    "npz": "a .npz file with arrays x_train, y_train and optionally x_test, y_test, as "
           "keras.datasets saves them",
    "cifar_pickle": "the CIFAR python batches: data_batch_1..5 and test_batch (CIFAR-10) or "
                    "train, test and meta (CIFAR-100)",
    "csv": "a .csv or .csv.gz file with a header row, or a folder with train.csv and test.csv",
    "tsv": "a .tsv or .tsv.gz file with a header row, or a folder with train.tsv and test.tsv",
    "jsonl": "a .jsonl or .jsonl.gz file with one JSON object per line, or a folder with "
             "train.jsonl and test.jsonl (.gz allowed)",
    "text_folder": "class subfolders of .txt files, <class>/*.txt, or train/<class>/... and "
                   "test/<class>/...",
    "aclimdb": "the aclImdb folder: train/neg, train/pos, test/neg, test/pos of .txt reviews "
               "(unsup is ignored)",
    "sms_spam": f"the SMS Spam Collection file {SMS_FILE}: <label><TAB><text> per line, no "
                f"header",
}


@dataclass
class Located:
    format: str
    root: Path
    # Every file decoding reads. Class folders list them as str: Path objects for 60,000
    # files cost about a second.
    files: list[Path | str]
    # Per part ("train", optionally "test"): a file, a list of files, or (file, class) pairs.
    parts: dict[str, Any]
    notes: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def locate(path: Path, fmt: str = "auto") -> Located:
    if not path.exists():
        raise DataError(f"{path} does not exist; set data.path to an existing file or folder")
    if fmt != "auto":
        found = _EXPLICIT_LOCATORS[fmt](path)
        if found is None:
            raise DataError(f"{path} does not look like format {fmt!r}: expected "
                            f"{LAYOUTS[fmt]}. Fix the layout, or set data.format: auto to "
                            f"detect it")
        return found
    for locator in _AUTO_LOCATORS.values():
        found = locator(path)
        if found is not None:
            return found
    raise DataError(f"cannot tell the format of {path} ({_describe(path)}). Supported layouts:\n"
                    + "\n".join(f"  - {name}: {LAYOUTS[name]}" for name in FORMATS)
                    + "\nArrange the files like one of these, or set data.format to one of: "
                    + ", ".join(FORMATS))


def _describe(path: Path) -> str:
    if path.is_file():
        return f"a file named {path.name!r}"
    entries = _visible(path.iterdir())
    if not entries:
        return "an empty folder"
    names = [p.name for p in entries]
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    text = f"a folder holding {len(names)} entries: {shown}"
    if any(p.is_dir() for p in entries):
        text += (f"; no files ending in {' '.join(IMAGE_EXTENSIONS)} (images) or "
                 f"{' '.join(TEXT_EXTENSIONS)} (texts) were found in its subfolders")
    return text


def _visible(entries) -> list[Path]:
    # Hidden files include macOS "._name.jpg" resource forks, which are not images.
    return sorted(p for p in entries if not p.name.startswith("."))


def _ends_with(path: Path, extensions) -> bool:
    return path.name.lower().endswith(tuple(extensions))


def _locate_sms(path: Path) -> Located | None:
    file = path / SMS_FILE if path.is_dir() else path
    if file.is_file() and (path.is_dir() or file.name == SMS_FILE):
        return Located("sms_spam", path, [file], {"train": file})
    return None


def _locate_sms_explicit(path: Path) -> Located | None:
    # With format: sms_spam set, any tab-separated "label<TAB>text" file is accepted.
    if path.is_file():
        return Located("sms_spam", path, [path], {"train": path})
    return _locate_sms(path)


def _locate_cifar(path: Path) -> Located | None:
    if not path.is_dir():
        return None
    wrapped = [path / sub for sub in (CIFAR10_DIR, CIFAR100_DIR) if (path / sub).is_dir()]
    if wrapped:
        path = wrapped[0]
    batches = sorted(path.glob("data_batch_*"), key=lambda p: p.name)
    if batches and (path / "test_batch").is_file():
        meta = path / "batches.meta"
        return Located("cifar_pickle", path, batches + [path / "test_batch"]
                       + ([meta] if meta.is_file() else []),
                       {"train": batches, "test": [path / "test_batch"]},
                       extra={"meta": meta if meta.is_file() else None,
                              "label_key": "labels", "names_key": "label_names"})
    if all((path / f).is_file() for f in ("train", "test", "meta")):
        return Located("cifar_pickle", path, [path / "train", path / "test", path / "meta"],
                       {"train": [path / "train"], "test": [path / "test"]},
                       extra={"meta": path / "meta", "label_key": "fine_labels",
                              "names_key": "fine_label_names"})
    return None


def _locate_npz(path: Path) -> Located | None:
    if path.is_dir():
        files = [p for p in _visible(path.iterdir()) if p.suffix == ".npz" and p.is_file()]
        if len(files) != 1:
            return None
        path = files[0]
    if path.is_file() and path.suffix == ".npz":
        # The Keras imdb.npz holds token ids; its vocabulary is the JSON file next to it.
        word_index = path.with_name("imdb_word_index.json")
        extra_files = [word_index] if word_index.is_file() else []
        return Located("npz", path, [path] + extra_files, {"train": path},
                       extra={"word_index": word_index if extra_files else None})
    return None


def _locate_idx(path: Path) -> Located | None:
    if not path.is_dir():
        return None
    files = {}
    for key, stem in IDX_FILES.items():
        candidates = [path / stem, path / f"{stem}.gz"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            return None
        files[key] = found
    return Located("idx", path, list(files.values()),
                   {"train": (files["x_train"], files["y_train"]),
                    "test": (files["x_test"], files["y_test"])})


def _table_locator(fmt: str, explicit: bool):
    extensions = _TABLE_EXTENSIONS[fmt]

    def locate_table(path: Path) -> Located | None:
        if path.is_file():
            if explicit or _ends_with(path, extensions):
                return Located(fmt, path, [path], {"train": path})
            return None
        if not path.is_dir():
            return None
        by_part = {}
        for part in ("train", "test"):
            found = [path / f"{part}{ext}" for ext in extensions]
            found = [p for p in found if p.is_file()]
            if found:
                by_part[part] = found[0]
        if "train" not in by_part:
            files = [p for p in _visible(path.iterdir())
                     if p.is_file() and _ends_with(p, extensions)]
            if len(files) != 1:
                return None
            by_part = {"train": files[0]}
        return Located(fmt, path, list(by_part.values()), by_part)

    return locate_table


def _class_folder_locator(fmt: str, extensions, ignore=(), rename=None, wrapper=None):
    """A locator for <class>/<files> or train/<class>/... and test/<class>/... folders.

    `rename` maps folder names to class names; when given, train/ must hold those folders.
    `wrapper` is a folder name an archive unpacks to, looked into when present.
    """
    rename = rename or {}

    def locate_classes(path: Path) -> Located | None:
        if not path.is_dir():
            return None
        if wrapper and (path / wrapper).is_dir():
            path = path / wrapper
        if rename and not all((path / "train" / c).is_dir() for c in rename):
            return None
        split = (path / "train").is_dir()
        part_dirs = {"train": path / "train", "test": path / "test"} if split else {"train": path}
        parts, empty, files = {}, [], []
        for part, folder in part_dirs.items():
            if not folder.is_dir():
                continue
            items = []
            for class_dir in _visible(folder.iterdir()):
                if not class_dir.is_dir() or class_dir.name in ignore:
                    continue
                found = _walk(class_dir, extensions)
                if not found:
                    empty.append(relative(class_dir, path))
                items += [(f, rename.get(class_dir.name, class_dir.name)) for f in found]
                files += found
            parts[part] = items
        if not parts.get("train"):
            return None
        if "test" in parts:
            unknown = sorted({c for _, c in parts["test"]} - {c for _, c in parts["train"]})
            if unknown:
                raise DataError(f"{path / 'test'}: class folder(s) {', '.join(unknown)} have no "
                                f"matching folder under {path / 'train'}; every test class needs "
                                f"training examples (rename or remove the folder)")
            if not parts["test"]:
                del parts["test"]
        notes = {"empty_class_folders": empty} if empty else {}
        if split:
            ignored = [p.name for p in _visible(path.iterdir())
                       if p.is_dir() and p.name not in ("train", "test")]
            if ignored:
                notes["ignored_folders"] = ignored
        return Located(fmt, path, files, parts, notes=notes)

    return locate_classes


def _walk(folder: Path, extensions) -> list[str]:
    """Files under `folder` (recursively) with one of `extensions`, in a stable order."""
    found = []
    for current, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(current, n) for n in sorted(names)
                  if not n.startswith(".") and n.lower().endswith(extensions)]
    return found


def relative(path: Path | str, root: Path) -> str:
    """`path` relative to `root` for messages and cache keys (os.path.relpath is slow)."""
    path, prefix = str(path), str(root) + os.sep
    return path[len(prefix):] if path.startswith(prefix) else path


_EXPLICIT_LOCATORS = {
    "image_folder": _class_folder_locator("image_folder", IMAGE_EXTENSIONS),
    "text_folder": _class_folder_locator("text_folder", TEXT_EXTENSIONS),
    "aclimdb": _class_folder_locator("aclimdb", TEXT_EXTENSIONS, ignore=("unsup",),
                                     rename={"neg": "negative", "pos": "positive"},
                                     wrapper=ACLIMDB_DIR),
    "npz": _locate_npz,
    "cifar_pickle": _locate_cifar,
    "csv": _table_locator("csv", explicit=True),
    "tsv": _table_locator("tsv", explicit=True),
    "jsonl": _table_locator("jsonl", explicit=True),
    "sms_spam": _locate_sms_explicit,
}
# Specific layouts first: an aclImdb or CIFAR folder must not be read as generic class
# folders. Auto-detection needs a telling name or extension; an explicit format does not.
_AUTO_LOCATORS = {
    "sms_spam": _locate_sms,
    "cifar_pickle": _locate_cifar,
    "aclimdb": _EXPLICIT_LOCATORS["aclimdb"],
    "idx": _locate_idx,
    "npz": _locate_npz,
    "jsonl": _table_locator("jsonl", explicit=False),
    "csv": _table_locator("csv", explicit=False),
    "tsv": _table_locator("tsv", explicit=False),
    "image_folder": _EXPLICIT_LOCATORS["image_folder"],
    "text_folder": _EXPLICIT_LOCATORS["text_folder"],
}
