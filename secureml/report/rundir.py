"""Reading run folders, whatever is there, never failing on what is missing or unreadable; and
writing their JSON files.

A report must be rebuildable years later from a run folder alone, including a partial one (a
run that was interrupted, a variant whose evaluation crashed): every file is optional, and
what could not be read is listed under `problems` instead of raising.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import yaml

from ..errors import ConfigError


def _read(path: Path, problems: list[str], parse):
    if not path.is_file():
        return None
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as err:
        problems.append(f"{path.name} in {path.parent} could not be read: "
                        f"{type(err).__name__}: {str(err)[:200]}")
        return None


def read_json(path: Path, problems: list[str]):
    """The JSON at `path`; a NaN or Infinity token (written by an older secureml) is read as
    null and listed under `problems`, so it never passes as a number."""
    def constant(token):
        note = f"{path.name} in {path.parent} holds {token}, not a number; read as missing"
        if note not in problems:
            problems.append(note)

    return _read(path, problems, lambda text: json.loads(text, parse_constant=constant))


def ratio(value, baseline):
    """value / baseline as metrics.json and bench tables record it (4 decimals); None when
    either is missing or the baseline is zero."""
    return round(value / baseline, 4) if value is not None and baseline else None


def baseline_variant(variants: list[tuple[str, object]], named: str | None = None) -> str | None:
    """The run's baseline among (name, defences) pairs in run order: the variant `named` by
    `audit.baseline`, else the first variant without defences; None if it is not there."""
    if named is not None:
        return named if any(name == named for name, _ in variants) else None
    return next((name for name, defences in variants if not defences), None)


def to_json(value, indent: int | None = 2) -> str:
    """Strict JSON: numpy values become plain JSON, and a NaN or infinite number is refused.

    A number that is legitimately undefined is written as null with the reason in a field
    beside it; a NaN reaching this point is a bug, named by its path in the error.
    """
    try:
        return json.dumps(value, indent=indent, default=_json_default, allow_nan=False)
    except ValueError:
        where = _non_finite(value)
        if where is None:
            raise
        raise ValueError(f"{where[0] or 'the value'} is {where[1]}, which JSON cannot hold; "
                         f"an undefined number must be written as null with its reason") from None


def write_json(path: Path, value) -> None:
    """Write `to_json(value)` atomically: to a temporary file in the same folder, flushed to
    disk, then renamed over `path`, so a reader (or a crash) never sees half a file."""
    path = Path(path)
    text = to_json(value)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _non_finite(value, path: str = "") -> tuple[str, float] | None:
    """(dotted path, value) of the first NaN or infinite number in `value`."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (float, np.floating)):
        return None if math.isfinite(value) else (path, float(value))
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, child in items:
        found = _non_finite(child, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def run_folder(path: str | Path) -> tuple[Path, list[str] | None]:
    """The run folder for `path`, and the variants to keep (None: all).

    `path` may also be one variant's folder (it holds metrics.json or status.json): then only
    that variant.
    """
    from ..status import STATUS_FILE

    path = Path(path).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{path} is not a folder; pass a run folder written by "
                          f"`secureml run` (it holds config.yaml and one folder per variant)")
    if any((path / name).is_file() for name in ("metrics.json", STATUS_FILE)) \
            and not (path / "config.yaml").is_file():
        return path.parent, [path.name]
    return path, None


def read_run(path: str | Path) -> dict:
    """Everything a report needs from one run folder (see docs/report.md)."""
    from ..status import read_status  # secureml.status writes through this module

    root, only = run_folder(path)
    problems: list[str] = []
    config = _read(root / "config.yaml", problems, yaml.safe_load)
    data = read_json(root / "data.json", problems)
    if config is None and not (root / "config.yaml").is_file():
        problems.append(f"{root} has no config.yaml: is it a run folder?")
    order = list((config or {}).get("variants") or {})
    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: (order.index(p.name) if p.name in order else len(order),
                                    p.name))
    variants = []
    for folder in folders:
        if only is not None and folder.name not in only:
            continue
        metrics = read_json(folder / "metrics.json", problems)
        status = read_status(folder, problems)
        if not isinstance(metrics, dict):
            if status is None:
                if (folder / "history.json").is_file() or (folder / "model").is_dir():
                    problems.append(f"variant '{folder.name}' has no readable metrics.json "
                                    f"(interrupted run?); left out")
                continue
            metrics = {}  # it stopped before its metrics: shown with its status
        history = read_json(folder / "history.json", problems)
        variants.append({"name": folder.name, "directory": str(folder.resolve()),
                         "metrics": metrics,
                         "history": history if isinstance(history, list) else [],
                         "run_status": status})
    missing = [v for v in order if v not in {x["name"] for x in variants}
               and (only is None or v in only)]
    problems.extend(f"variant '{v}' is in config.yaml but has no results" for v in missing)
    named = ((config or {}).get("audit") or {}).get("baseline") \
        if isinstance((config or {}).get("audit"), dict) else None
    status = read_status(root, problems)
    if status is not None and only is not None:  # one variant's folder: the others are not asked
        status["variants"] = [v for v in status.get("variants") or [] if v in only]
    return {
        "name": (config or {}).get("name") or root.name,
        "directory": str(root.resolve()),
        "description": (config or {}).get("description") or "",
        "config": config,
        "data": data if isinstance(data, dict) else None,
        "variants": variants,
        "baseline": baseline_variant([(v["name"], v["metrics"].get("defences"))
                                      for v in variants], named),
        "run_status": status,
        "problems": problems,
    }
