"""Reading a file another party may have made: a size limit bounds what is read, not just what
the file says it holds."""
from __future__ import annotations

import os


def read_bounded(path, limit: int) -> bytes | None:
    """The bytes of the file at `path`, or None when it holds more than `limit` bytes.

    A file whose size is over the limit is refused before its body is read; and no more than
    `limit + 1` bytes are ever read, so a file that grows meanwhile, or a device or /proc file
    whose size says 0 (/dev/zero), is refused too. OSError (missing, unreadable) is the
    caller's to report.
    """
    with open(path, "rb") as stream:
        if os.fstat(stream.fileno()).st_size > limit:
            return None
        data = stream.read(limit + 1)
    return data if len(data) <= limit else None
