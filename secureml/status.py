"""Whether a run, a variant and each of their stages finished: the `status.json` files.

```
runs/<name>-<time>/status.json          stages: data, report; the variants planned
runs/<name>-<time>/<variant>/status.json stages: training, test, then one per evaluation,
                                          named by its metrics.json section (robustness, ...)
```
A stage is `pending`, `running`, `complete`, `interrupted` (the process ended while it ran:
Ctrl-C, SIGTERM, or killed) or `failed` (it raised; `error` holds the type and one line). The
file is rewritten atomically at every change and names the process writing it (pid, host), so a
reader that finds `running` after that process is gone reads it as `interrupted`, and a stage
still `pending` in a finished file as `not_run`. docs/metrics.md lists the fields.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .report.rundir import read_json, write_json

STATUS_FILE = "status.json"
SCHEMA_VERSION = 1
PENDING, RUNNING, COMPLETE = "pending", "running", "complete"
INTERRUPTED, FAILED, NOT_RUN = "interrupted", "failed", "not_run"
# The stages every other result of a variant depends on: metrics.json is written after both.
BASE_STAGES = ("training", "test")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so the running stage is recorded as interrupted."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot) on Linux, else None; tells a live
    process from a later one that reuses its pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def this_process() -> dict:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "process_start": _start_ticks(pid)}


def process_alive(record: dict) -> bool:
    """Whether the process a record names still runs (only checkable on this host)."""
    pid = record.get("pid")
    if not isinstance(pid, int) or record.get("host") != socket.gethostname():
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if Path("/proc").is_dir():
        started = _start_ticks(pid)  # None: a zombie, dead but not yet reaped
        return started is not None and record.get("process_start") in (None, started)
    return True


def error_record(err: BaseException) -> dict:
    lines = str(err).strip().splitlines()
    return {"type": type(err).__name__, "message": (lines[0] if lines else "")[:500]}


# Set by the first SIGTERM. An exception raised in a signal handler can surface as another
# one when it passes through a C extension (TensorFlow), so this, not the type, says why.
_terminated: list[int] = []


def outcome(err: BaseException) -> str:
    """How an exception ends a stage: Ctrl-C, SIGTERM and exit interrupt it, errors fail it."""
    interrupted = isinstance(err, (KeyboardInterrupt, SystemExit)) or _terminated
    return INTERRUPTED if interrupted else FAILED


def _raise_terminated(signum, frame):
    if not _terminated:  # once: a second SIGTERM must not break the recording of the first
        _terminated.append(signum)
        raise Terminated(f"terminated by signal {signum}")


@contextmanager
def sigterm_interrupts():
    """Within it, SIGTERM raises `Terminated` in the main thread (elsewhere it is untouched),
    so the code that is running records that it was interrupted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _worst(statuses) -> str:
    statuses = set(statuses)
    for status in (FAILED, INTERRUPTED, NOT_RUN, PENDING, RUNNING):
        if status in statuses:
            return INTERRUPTED if status in (NOT_RUN, PENDING, RUNNING) else status
    return COMPLETE


class Status:
    """The status.json of one folder, kept current by the process doing the work.

        with Status(folder, ["training", "test"]) as status:
            with status.stage("training"):
                ...

    Entering it handles SIGTERM (raised as `Terminated`) so that the stage that was running is
    recorded as interrupted; leaving it records the outcome.
    """

    def __init__(self, folder: Path, stages=(), *, resume: bool = False, **fields):
        self.path = Path(folder) / STATUS_FILE
        old = read_status(folder) if resume else None
        self.record = {"schema_version": SCHEMA_VERSION, **(old or {}), **fields,
                       "status": RUNNING, **this_process(), "started": _now(), "finished": None}
        self.record.pop("error", None)
        self.stages = self.record.setdefault("stages", {})
        for name in stages:
            self.stages.setdefault(name, {"status": PENDING})
        self._sigterm = sigterm_interrupts()
        self._write()

    def _write(self) -> None:
        write_json(self.path, self.record)

    def __enter__(self) -> "Status":
        self._sigterm.__enter__()
        return self

    def __exit__(self, kind, err, traceback) -> None:
        self._sigterm.__exit__(None, None, None)
        if err is not None:
            self.record["status"] = outcome(err)
            if self.record["status"] == FAILED:
                self.record["error"] = error_record(err)
        else:
            self.record["status"] = _worst(s["status"] for s in self.stages.values())
        self.record["finished"] = _now()
        self._write()

    @contextmanager
    def stage(self, name: str):
        entry = {"status": RUNNING, "started": _now()}
        self.stages[name] = entry
        self._write()
        start = time.perf_counter()
        try:
            yield
        except BaseException as err:
            entry["status"] = outcome(err)
            if entry["status"] == FAILED:
                entry["error"] = error_record(err)
            elif _terminated and not isinstance(err, (KeyboardInterrupt, SystemExit)):
                raise Terminated(f"terminated by signal {_terminated[0]}") from err
            raise
        else:
            entry["status"] = COMPLETE
        finally:
            entry.update(finished=_now(), seconds=round(time.perf_counter() - start, 3))
            self._write()


def read_status(folder: Path, problems: list[str] | None = None) -> dict | None:
    """The folder's status.json as it stands now (see `resolve`), or None if there is none."""
    record = read_json(Path(folder) / STATUS_FILE, problems if problems is not None else [])
    return resolve(record) if isinstance(record, dict) else None


def resolve(record: dict) -> dict:
    """`running` of a process that is gone becomes `interrupted`; a stage still `pending` once
    the file's process is gone or done becomes `not_run`."""
    record = {**record, "stages": {k: dict(v) for k, v in (record.get("stages") or {}).items()
                                   if isinstance(v, dict)}}
    live = record.get("status") == RUNNING and process_alive(record)
    if record.get("status") == RUNNING and not live:
        record["status"] = INTERRUPTED
    for entry in record["stages"].values():
        if entry.get("status") == RUNNING and not live:
            entry["status"] = INTERRUPTED
        elif entry.get("status") == PENDING and not live:
            entry["status"] = NOT_RUN
    return record


def unfinished(record: dict | None) -> dict[str, dict]:
    """The stages of a resolved record that did not complete, by name."""
    stages = (record or {}).get("stages") or {}
    return {name: entry for name, entry in stages.items() if entry.get("status") != COMPLETE}


def section_status(record: dict | None, section: str) -> str | None:
    """Why a variant's metrics.json lacks `section` although a stage was meant to write it:
    `running`, `interrupted` or `failed` (a stage never started takes the variant's outcome);
    None when no unfinished stage accounts for it."""
    stages = unfinished(record)
    entry = next((stages[name] for name in BASE_STAGES if name in stages), stages.get(section))
    if entry is None:
        return None
    status = entry.get("status")
    if status == NOT_RUN:
        return record.get("status") if record.get("status") in (INTERRUPTED, FAILED) \
            else INTERRUPTED
    return RUNNING if status == PENDING else status


def describe(entry: dict, record: dict | None = None) -> str:
    """One stage's outcome in words, for reports."""
    status = entry.get("status")
    if status == INTERRUPTED:
        return (f"interrupted: the process ended while this stage ran (started "
                f"{entry.get('started', '?')}), before it wrote its results")
    if status == FAILED:
        error = entry.get("error") or {}
        return f"failed: {error.get('type', 'error')}: {error.get('message', '')}"
    if status == NOT_RUN:
        return "not run: the run stopped before this stage"
    if status == RUNNING:
        return (f"still running (pid {(record or {}).get('pid')} on "
                f"{(record or {}).get('host')}, started {entry.get('started', '?')})")
    return str(status)


def incomplete(run_record: dict | None, variants: dict[str, dict | None]) -> list[str]:
    """What did not finish in a run, one phrase each: its own stages (the report stage aside,
    which is what is being written) and every variant's; empty when all finished."""
    lines = [f"{name} {describe(entry, run_record)}"
             for name, entry in unfinished(run_record).items() if name != "report"]
    for name, record in variants.items():
        lines += [f"variant '{name}': {stage} {describe(entry, record)}"
                  for stage, entry in unfinished(record).items()]
        if record and record.get("status") == FAILED and not unfinished(record):
            lines.append(f"variant '{name}': {describe(record)}")  # failed between stages
    planned = (run_record or {}).get("variants") or []
    lines += [f"variant '{name}' not run: the run stopped before it" for name in planned
              if name not in variants and (run_record or {}).get("status") != RUNNING]
    return lines
