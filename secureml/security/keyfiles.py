"""Secret key files: readable by their owner only from the moment they exist, never overwritten.

A secret file is created by exclusive create (`O_CREAT | O_EXCL`): an existing file, or a
symbolic link planted at the path, is refused instead of followed or replaced. Its mode is set
to 0600 on the open descriptor before anything is written, because the mode given to `open`
only loses bits to the umask and never gains them. Replacing keys is the caller's explicit
decision: it removes the old file first.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import KeyFileError

SECRET_MODE = 0o600


def write_secret(path, data: bytes) -> None:
    """Create `path` with mode 0600 and write `data`; refuses an existing path."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, SECRET_MODE)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; secret key files are never overwritten: "
                           f"move it away, or remove it if nothing encrypted under it is "
                           f"still needed") from None
    except OSError as err:
        raise KeyFileError(f"cannot create the secret key file {path}: {err.strerror}; give "
                           f"a key folder you can write to") from None
    try:
        with os.fdopen(fd, "wb") as stream:
            os.fchmod(stream.fileno(), SECRET_MODE)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException as err:
        # A partial key would later pass for a key: remove it, whatever stopped the write.
        path.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise KeyFileError(f"cannot write the secret key file {path}: {err.strerror} "
                               f"(it was removed); free space there and run keygen again") \
                from None
        raise
