"""On-disk cache of decoded data sets, so only the first load pays for decoding.

Entries live under $SECUREML_CACHE_DIR (default ~/.cache/secureml/data), never next to the
data. The key covers the source path, every input file's size and modification time, the
decoding options and `CACHE_VERSION`; changing any of them makes a new entry. Entries are
plain .npz files (texts as UTF-8 bytes plus offsets), loaded without pickle.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from .decoded import Decoded, as_text_array
from .formats import Located, relative

# Bump when decoding changes what it produces, so old entries are not reused.
CACHE_VERSION = 2
DECODING_OPTIONS = ("image_size", "channels", "on_corrupt", "text_column", "label_column")

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    configured = os.environ.get("SECUREML_CACHE_DIR", "").strip()
    return Path(configured or "~/.cache/secureml/data").expanduser()


def fingerprint(located: Located) -> str:
    """A hash of the input files' names, sizes and modification times (no contents read)."""
    digest = hashlib.sha256()
    for path in located.files:
        stat = os.stat(path)
        name = relative(path, located.root)
        digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode("utf-8",
                                                                          "surrogateescape"))
    return digest.hexdigest()


def entry_path(located: Located, files_hash: str, config) -> Path:
    key = json.dumps({"version": CACHE_VERSION, "root": str(located.root.resolve()),
                      "format": located.format, "files": files_hash,
                      "options": {k: getattr(config, k) for k in DECODING_OPTIONS}},
                     sort_keys=True, default=list)
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return cache_dir() / f"{located.root.name}-{located.format}-{digest}.npz"


def load(path: Path) -> Decoded | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as entry:
            kind = str(entry["kind"])
            parts = {}
            for part in ("train", "test"):
                if f"y_{part}" not in entry.files:
                    continue
                x = (_unpack_texts(entry[f"x_{part}"], entry[f"offsets_{part}"])
                     if kind == "text" else entry[f"x_{part}"])
                parts[part] = (x, entry[f"y_{part}"])
            return Decoded(kind, parts, [str(n) for n in entry["class_names"]],
                           json.loads(str(entry["notes"])))
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as err:
        log.warning("ignoring unreadable cache entry %s (%s); decoding again", path, err)
        return None


def save(path: Path, decoded: Decoded) -> None:
    arrays = {"kind": np.array(decoded.kind), "class_names": np.array(decoded.class_names,
                                                                      dtype=str),
              "notes": np.array(json.dumps(decoded.notes))}
    for part, (x, y) in decoded.parts.items():
        if decoded.kind == "text":
            arrays[f"x_{part}"], arrays[f"offsets_{part}"] = _pack_texts(x)
        else:
            arrays[f"x_{part}"] = x
        arrays[f"y_{part}"] = y
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a crash or a concurrent run never leaves half an entry.
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError as err:
        log.warning("could not write the data cache %s (%s); the next load decodes again. "
                    "Set SECUREML_CACHE_DIR to a writable folder", path, err)


def _pack_texts(texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    encoded = [t.encode("utf-8") for t in texts]
    offsets = np.cumsum([0] + [len(b) for b in encoded], dtype=np.int64)
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def _unpack_texts(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    blob = data.tobytes()
    return as_text_array([blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])])
