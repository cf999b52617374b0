"""Reading run folders, whatever is there, never failing on what is missing or unreadable; and
writing their JSON files.

A report must be rebuildable years later from a run folder alone, including a partial one (a
run that was interrupted, a variant whose evaluation crashed): every file is optional, and
what could not be read is listed under `problems` instead of raising.
"""
from __future__ import annotations

import json
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
    return _read(path, problems, json.loads)


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


def write_json(path: Path, value) -> None:
    """Write atomically (a reader never sees half a file); numpy values become plain JSON."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=_json_default))
    tmp.replace(path)


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

    `path` may also be one variant's folder (it holds metrics.json): then only that variant.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{path} is not a folder; pass a run folder written by "
                          f"`secureml run` (it holds config.yaml and one folder per variant)")
    if (path / "metrics.json").is_file() and not (path / "config.yaml").is_file():
        return path.parent, [path.name]
    return path, None


def read_run(path: str | Path) -> dict:
    """Everything a report needs from one run folder (see docs/report.md)."""
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
        if not isinstance(metrics, dict):
            if (folder / "history.json").is_file() or (folder / "model").is_dir():
                problems.append(f"variant '{folder.name}' has no readable metrics.json "
                                f"(interrupted run?); left out")
            continue
        history = read_json(folder / "history.json", problems)
        variants.append({"name": folder.name, "directory": str(folder.resolve()),
                         "metrics": metrics,
                         "history": history if isinstance(history, list) else []})
    missing = [v for v in order if v not in {x["name"] for x in variants}
               and (only is None or v in only)]
    problems.extend(f"variant '{v}' is in config.yaml but has no results" for v in missing)
    named = ((config or {}).get("audit") or {}).get("baseline") \
        if isinstance((config or {}).get("audit"), dict) else None
    return {
        "name": (config or {}).get("name") or root.name,
        "directory": str(root.resolve()),
        "description": (config or {}).get("description") or "",
        "config": config,
        "data": data if isinstance(data, dict) else None,
        "variants": variants,
        "baseline": baseline_variant([(v["name"], v["metrics"].get("defences"))
                                      for v in variants], named),
        "problems": problems,
    }
