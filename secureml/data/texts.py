"""Text readers: CSV/TSV, JSON lines, folders of .txt files (incl. aclImdb), SMS Spam Collection.

Files are read as UTF-8 (a leading byte-order mark is ignored) with errors="surrogateescape":
bytes that are not UTF-8 survive as escapes, and `finalize` counts and replaces them.
"""
from __future__ import annotations

import csv
import difflib
import gzip
import io
import json
from pathlib import Path

from tqdm import tqdm

from ..errors import DataError
from .decoded import Decoded, as_text_array, encode_labels
from .formats import Located

# csv refuses fields over 128 KiB by default; long documents are legitimate here.
csv.field_size_limit(2**31 - 1)


def _open_text(path: Path) -> io.TextIOBase:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    return opener(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="")


def _read_parts(located: Located, read_part) -> Decoded:
    """Apply `read_part(entry) -> (texts, raw labels)` to every part and number the labels."""
    texts, raw = {}, {}
    for part, entry in located.parts.items():
        try:
            texts[part], raw[part] = read_part(entry)
        except (OSError, EOFError) as err:  # unreadable file or truncated .gz
            where = getattr(err, "filename", None) or entry
            raise DataError(f"{where}: cannot read ({err}); check the file is complete and "
                            f"readable") from None
    labels, class_names = encode_labels(raw, located.root)
    return Decoded("text", {part: (as_text_array(texts[part]), labels[part]) for part in texts},
                   class_names, dict(located.notes))


def _missing_column(path: str | Path, option: str, column: str, available: list[str], what: str):
    hint = difflib.get_close_matches(column, available, n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    return DataError(f"{path}: no {what} {column!r} (data.{option}){did_you_mean}; the {what}s "
                     f"are: {', '.join(map(repr, available))}. Set data.text_column and "
                     f"data.label_column to the right names")


def read_table(located: Located, config, progress: bool) -> Decoded:
    delimiter = "\t" if located.format == "tsv" else ","

    def read_file(path: Path):
        with _open_text(path) as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: the file is empty; expected a header row naming the "
                                f"columns, then one example per row")
            header = [h.strip() for h in header]
            columns = []
            for option, column in (("text_column", config.text_column),
                                   ("label_column", config.label_column)):
                if column not in header:
                    raise _missing_column(path, option, column, header, "column")
                columns.append(header.index(column))
            text_at, label_at = columns
            texts, labels = [], []
            for row in reader:
                if not row:
                    continue
                if len(row) <= max(text_at, label_at):
                    raise DataError(f"{path}:{reader.line_num}: row has {len(row)} fields but "
                                    f"the header has {len(header)}; fix the row (quote fields "
                                    f"that contain the delimiter)")
                label = row[label_at].strip()
                if not label:
                    raise DataError(f"{path}:{reader.line_num}: empty label in column "
                                    f"{config.label_column!r}; label every row or remove it")
                texts.append(row[text_at])
                labels.append(label)
        return texts, labels

    return _read_parts(located, read_file)


def read_jsonl(located: Located, config, progress: bool) -> Decoded:
    def read_file(path: Path):
        texts, labels = [], []
        with _open_text(path) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{line_no}: not valid JSON ({err.msg}); each line "
                                    f"must be one JSON object") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{line_no}: expected a JSON object with keys "
                                    f"{config.text_column!r} and {config.label_column!r}, got "
                                    f"{type(record).__name__}")
                for option, key in (("text_column", config.text_column),
                                    ("label_column", config.label_column)):
                    if key not in record:
                        raise _missing_column(f"{path}:{line_no}", option, key, list(record),
                                              "key")
                label = record[config.label_column]
                if label is None or (isinstance(label, str) and not label.strip()):
                    raise DataError(f"{path}:{line_no}: empty label in key "
                                    f"{config.label_column!r}; label every line or remove it")
                text = record[config.text_column]
                texts.append("" if text is None else str(text))
                labels.append(label.strip() if isinstance(label, str) else label)
        return texts, labels

    return _read_parts(located, read_file)


def read_sms(located: Located, config, progress: bool) -> Decoded:
    def read_file(path: Path):
        texts, labels = [], []
        with _open_text(path) as f:
            for line_no, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                label, tab, text = line.partition("\t")
                if not tab or not label.strip():
                    raise DataError(f"{path}:{line_no}: expected '<label><TAB><text>' (as in "
                                    f"the SMS Spam Collection), got {line[:60]!r}")
                labels.append(label.strip())
                texts.append(text)
        return texts, labels

    return _read_parts(located, read_file)


def read_text_folder(located: Located, config, progress: bool) -> Decoded:
    """One example per .txt file; the class is the folder name (aclImdb: neg/pos renamed)."""
    total = sum(len(pairs) for pairs in located.parts.values())
    with tqdm(total=total, desc=f"reading texts in {located.root.name}", unit="file",
              disable=not progress, leave=False) as bar:
        def read_files(pairs):
            texts, labels = [], []
            for path, label in pairs:
                with open(path, "rb") as f:
                    texts.append(f.read().decode("utf-8-sig", errors="surrogateescape"))
                labels.append(label)
                bar.update()
            return texts, labels

        return _read_parts(located, read_files)


def read_corpus(path: str | Path) -> list[str]:
    """The documents of a text corpus: a file (.txt, optionally .gz) holds one a line, a folder
    one per .txt file under it (sorted by path). Bytes that are not UTF-8 are replaced."""
    path = Path(path)
    one_file = not path.is_dir()
    files = [path] if one_file else sorted(path.rglob("*.txt"))
    documents = []
    for file in files:
        try:
            opener = gzip.open if file.name.lower().endswith(".gz") else open
            with opener(file, "rt", encoding="utf-8-sig", errors="replace") as f:
                text = f.read()
        except (OSError, EOFError) as err:
            raise DataError(f"{file}: cannot read the corpus ({err}); give a .txt file (a "
                            f"document a line) or a folder of .txt files") from None
        if one_file:
            documents.extend(line for line in text.splitlines() if line.strip())
        elif text.strip():
            documents.append(text)
    if not documents:
        raise DataError(f"{path}: the corpus holds no text"
                        + ("" if one_file else " (no .txt files with text under it)"))
    return documents
