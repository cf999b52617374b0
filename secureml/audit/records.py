"""How audits name a training record in data.json, metrics.json and the report without
revealing it.

A listed record is its index in its split plus a keyed hash: HMAC-SHA-256 of the raw record
(a text as UTF-8, an image as its 8-bit pixels) under the run's secret `record_key` file (in
the run folder, readable by its owner only, never overwritten). The data owner, who has the
key, finds a listed record in their copy of the data with `record_hash`; a reader of the
report cannot confirm a guessed record, which a plain hash of a short text would allow.

Raw excerpts (`EXCERPT` fields: the first characters of a text, personal data masked) are
added only with `audit.include_examples: true`, and the report then says in its header that
it must not be shared.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

import numpy as np

from ..errors import DataError, KeyFileError
from ..security.keyfiles import write_secret

KEY_FILE = "record_key"
EXCERPT = "excerpt"
EXCERPT_CHARS = 120


def run_key(run_dir: str | Path) -> bytes:
    """The run's record key: read from `run_dir/record_key`, created (mode 0600) if absent."""
    path = Path(run_dir) / KEY_FILE
    if not path.exists():
        key = secrets.token_bytes(32)
        try:
            write_secret(path, key.hex().encode())
            return key
        except KeyFileError:
            if not path.exists():
                raise
            # Another process created it first: read that one.
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        key = b""
    if len(key) != 32:
        raise DataError(f"{path} is not a record key written by secureml; restore it, or "
                        f"delete it to start a new one (hashes in earlier reports of this "
                        f"run then no longer match)")
    return key


def record_bytes(record) -> bytes:
    """What is hashed: a text's UTF-8, an image's 8-bit pixels (as `duplicates.exact_keys`)."""
    if isinstance(record, (str, bytes)) or not hasattr(record, "shape"):
        return str(record).encode("utf-8")
    return np.round(np.asarray(record) * 255).astype(np.uint8).tobytes()


def record_hash(record, key: bytes) -> str:
    """64-bit keyed hash (16 hex digits) of one record."""
    return hmac.new(key, record_bytes(record), hashlib.sha256).hexdigest()[:16]


def describe(records, index: int, key: bytes | None, include_examples: bool) -> dict:
    """The fields naming record `index` of the split `records`: its hash (when the run has a
    key) and, only when asked, an excerpt of a text with personal data masked."""
    out = {}
    if key is not None:
        out["hash"] = record_hash(records[index], key)
    if include_examples and isinstance(records[index], str):
        from ..data.pii import anonymize_texts

        text = anonymize_texts([records[index]])[0][0]
        out[EXCERPT] = text[:EXCERPT_CHARS] + ("..." if len(text) > EXCERPT_CHARS else "")
    return out


def contains_excerpts(value) -> bool:
    """Whether a data.json or metrics.json value holds a raw excerpt anywhere."""
    if isinstance(value, dict):
        return EXCERPT in value or any(contains_excerpts(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_excerpts(v) for v in value)
    return False
