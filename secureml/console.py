"""Progress messages of the command-line tools: one line each, on stderr."""
import sys


def log(enabled: bool, message: str) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)
