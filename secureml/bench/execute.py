"""Run a grid: every cell is an ordinary run folder; finished cells are skipped on re-run.

```
<output.dir>/<grid name>/
  grid.yaml             the grid as validated
  cells/<cell>.yaml     each cell's run config (`secureml run` reruns one cell by hand)
  invocations.json      one record per `secureml bench` invocation: hardware, load, command,
                        status (written as running at the start, so a killed one is listed)
  runs/<cell folder>/   a normal run folder (config.yaml, <setting>/metrics.json, ...) plus
                        bench.json: cell, config hash, invocation, status, wall time, inference
  .staging/             where a cell runs; it replaces runs/<cell folder> once it is done
  results.csv results.json results.md plots/*.png
```
Each cell runs as `secureml run` in its own Python process, into `.staging/`; only then does it
replace the cell's earlier folder (a failed attempt replaces only one that had not finished),
so a rerun that dies keeps the earlier result. A cell is finished when its
bench.json says complete for the cell's current config hash and its metrics.json holds every
section the cell's evaluations write. Costs are divided by the baseline cell of the same data
set, model and seed; whenever a cell of a group runs, the group's baseline runs again in the
same invocation, so new ratios never mix two invocations.
"""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
import yaml

from .. import registry
from ..console import log as _log
from ..errors import SecureMLError
from ..report.rundir import read_json, write_json
from ..security.loading import load_model
from ..status import (COMPLETE, INTERRUPTED, RUNNING, error_record, outcome, process_alive,
                      sigterm_interrupts, this_process)
from .grid import Cell, Grid
from .hardware import hardware_record, load_average

STATE_FILE = "bench.json"
INVOCATIONS_FILE = "invocations.json"
STAGING = ".staging"


@dataclass
class BenchResult:
    directory: Path
    ran: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)


def bench_directory(grid: Grid, out_dir: str | Path | None = None) -> Path:
    return Path(out_dir or grid.output.dir) / grid.name


def cell_directory(bench_dir: Path, cell: Cell) -> Path:
    return bench_dir / "runs" / cell.folder_name


def read_state(bench_dir: Path, cell: Cell) -> dict | None:
    """The cell's bench.json if the cell finished with its current config, else None."""
    return finished_cell(bench_dir, cell)[0]


def finished_cell(bench_dir: Path, cell: Cell) -> tuple[dict | None, dict | None]:
    """(bench.json, metrics.json) of a cell that finished with its current config, else
    (None, None)."""
    folder = cell_directory(bench_dir, cell)
    state = read_json(folder / STATE_FILE, [])
    metrics = read_json(folder / cell.setting / "metrics.json", [])
    if not isinstance(state, dict) or not isinstance(metrics, dict) \
            or state.get("status") != "complete" or state.get("config_hash") != cell.config_hash:
        return None, None
    expected = {"test", "cost"} | {registry.evaluation_module(name).SECTION
                                   for name in cell.config["evaluation"]}
    return (state, metrics) if expected <= set(metrics) else (None, None)


def run_grid(grid: Grid, *, out_dir: str | Path | None = None, rerun: bool = False,
             progress: bool = True, command: str | None = None) -> BenchResult:
    """Run every unfinished cell of `grid`, then write the tables and plots.

    `rerun` measures every cell again. Returns the benchmark folder, which cells ran, were
    resumed or failed, and the files written.
    """
    from .results import write_results

    for gpu in tf.config.list_physical_devices("GPU"):
        # This process only times inference; the cells' own processes need the GPU memory.
        tf.config.experimental.set_memory_growth(gpu, True)
    bench_dir = bench_directory(grid, out_dir)
    (bench_dir / "runs").mkdir(parents=True, exist_ok=True)
    (bench_dir / "grid.yaml").write_text(yaml.safe_dump(grid.to_dict(), sort_keys=False))
    invocation = {"id": time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6],
                  "command": command, "status": RUNNING, **this_process(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "hardware": hardware_record(), "cells_run": [], "cells_failed": {}}
    result = BenchResult(bench_dir)
    cells = grid.cells()
    _recover_replaced(bench_dir, cells)
    todo = _cells_to_run(bench_dir, cells, rerun)
    result.resumed = [c.id for c in cells if c.id not in {t.id for t in todo}]
    _log(progress, f"bench {grid.name}: {len(cells)} cells, {len(todo)} to run, "
                   f"{len(result.resumed)} finished earlier; folder {bench_dir}")
    _save_invocation(bench_dir, invocation)
    try:
        with sigterm_interrupts():
            for index, cell in enumerate(todo, 1):
                _log(progress, f"bench: cell {index}/{len(todo)} {cell.id}"
                               + (" (baseline)" if cell.baseline else ""))
                invocation["current_cell"] = cell.id
                _save_invocation(bench_dir, invocation)
                state = _run_cell(bench_dir, cell, grid, invocation["id"], progress)
                invocation["cells_run"].append(cell.id)
                if state["status"] == "complete":
                    result.ran.append(cell.id)
                    _log(progress, f"bench: {cell.id} done in {state['wall_time_s']:.1f}s")
                else:
                    result.failed.append(cell.id)
                    invocation["cells_failed"][cell.id] = state["error"]
                    _log(progress, f"bench: {cell.id} FAILED: {state['error']}")
        invocation.pop("current_cell", None)
        invocation["status"] = COMPLETE
    except BaseException as err:
        invocation["status"] = outcome(err)
        if invocation["status"] != INTERRUPTED:
            invocation["error"] = error_record(err)
        raise
    finally:
        invocation["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        invocation["load_average_end"] = load_average()
        _save_invocation(bench_dir, invocation)
    result.files = write_results(grid, bench_dir)
    _log(progress, f"bench: results in {result.files['results.md']}")
    return result


def _cells_to_run(bench_dir: Path, cells: list[Cell], rerun: bool) -> list[Cell]:
    """Unfinished cells, plus the baseline of every group that has one; baselines first."""
    todo = {c.id for c in cells if rerun or read_state(bench_dir, c) is None}
    groups = {c.group for c in cells if c.id in todo}
    todo |= {c.id for c in cells if c.baseline and c.group in groups}
    order = {group: i for i, group in enumerate(dict.fromkeys(c.group for c in cells))}
    selected = [c for c in cells if c.id in todo]
    return sorted(selected, key=lambda c: (order[c.group], not c.baseline))


def _run_cell(bench_dir: Path, cell: Cell, grid: Grid, invocation: str, progress: bool) -> dict:
    """Run one cell as `secureml run` in a fresh Python process and record how it went.

    A fresh process per cell keeps the measurements independent: in one long process the first
    cell pays TensorFlow's one-time start-up memory and later cells reuse memory freed by
    earlier ones, which biases memory ratios in both directions.
    """
    folder = cell_directory(bench_dir, cell)
    staging = bench_dir / STAGING / cell.folder_name
    if staging.exists():  # left by an invocation that died
        shutil.rmtree(staging)
    config_file = bench_dir / "cells" / f"{cell.folder_name}.yaml"
    config_file.parent.mkdir(exist_ok=True)
    config_file.write_text(yaml.safe_dump(cell.config, sort_keys=False))
    state = {"cell": cell.id, "dataset": cell.dataset, "model": cell.model,
             "setting": cell.setting, "seed": cell.seed, "baseline": cell.baseline,
             "config_hash": cell.config_hash, "config_file": str(config_file),
             "invocation": invocation, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "load_average": load_average()}
    start, cpu_start = time.perf_counter(), _children_cpu_seconds()
    command = [sys.executable, "-m", "secureml.cli", "run", str(config_file),
               "--out", str(staging.parent)] + ([] if progress else ["--quiet"])
    returncode, log_tail = _run_relaying_stderr(command, progress)
    state["wall_time_s"] = round(time.perf_counter() - start, 3)
    # CPU time is less sensitive than wall time to other work on a shared machine.
    state["cpu_time_s"] = round(_children_cpu_seconds() - cpu_start, 3)
    if returncode == 0 and (staging / cell.setting / "metrics.json").is_file():
        state["status"] = "complete"
        if grid.output.inference_timing:
            state["inference"] = inference_timing(staging / cell.setting / "model" /
                                                  "model.keras")
    else:
        errors = [line for line in log_tail.splitlines() if line.startswith("secureml: error:")]
        state.update(status="failed", returncode=returncode, log_tail=log_tail,
                     error=errors[-1].removeprefix("secureml: error: ") if errors
                     else (log_tail.strip().splitlines() or ["no output"])[-1])
        staging.mkdir(parents=True, exist_ok=True)
    state["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(staging / STATE_FILE, state)
    if state["status"] == "complete" or read_state(bench_dir, cell) is None:
        _replace(folder, staging)
    else:  # a failed attempt at a finished cell: the earlier result stays
        shutil.rmtree(staging)
    return state


def _replace(folder: Path, new: Path) -> None:
    """Put `new` in place of `folder` by renaming (one file system: no copy). A crash between
    the two renames leaves the old folder as `.<name>.replaced`, which the next invocation
    puts back."""
    old = folder.with_name(f".{folder.name}.replaced")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        os.rename(folder, old)
    os.rename(new, folder)
    shutil.rmtree(old, ignore_errors=True)


def _recover_replaced(bench_dir: Path, cells: list[Cell]) -> None:
    for cell in cells:
        folder = cell_directory(bench_dir, cell)
        old = folder.with_name(f".{folder.name}.replaced")
        if old.exists():
            if folder.exists():
                shutil.rmtree(old)
            else:
                os.rename(old, folder)


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_relaying_stderr(command: list[str], progress: bool, keep: int = 8000) -> tuple[int, str]:
    """Run `command`, passing its stderr through when `progress`; returns (code, stderr tail)."""
    tail = b""
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        try:
            for chunk in iter(lambda: proc.stderr.read1(4096), b""):
                if progress:
                    sys.stderr.write(chunk.decode(errors="replace"))
                    sys.stderr.flush()
                tail = (tail + chunk)[-keep:]
            proc.wait()
        except BaseException:
            # Ask the cell to stop first, so that its status.json records the interruption.
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    return proc.returncode, tail.decode(errors="replace")


def inference_timing(model_path: Path, batch_size: int = 256, repeats: int = 30) -> dict:
    """Plaintext inference time of a saved model: one example (latency) and a batch (throughput).

    Inputs are constant images or token ids of the model's input shape: the time of these
    models does not depend on the values. The call is a `tf.function`, as a serving system
    would run it, so Python overhead does not dominate the one-example figure.
    """
    try:
        model = load_model(model_path)
    except SecureMLError as err:
        return {"error": str(err)}
    shape, dtype = model.input_shape[1:], model.inputs[0].dtype
    fn = tf.function(lambda x: model(x, training=False))

    def median_time(n: int, times: int) -> float:
        x = tf.ones((n, *shape), dtype=dtype) * (1 if dtype.is_integer else 0.5)
        fn(x).numpy()  # trace and warm up
        seconds = []
        for _ in range(times):
            start = time.perf_counter()
            fn(x).numpy()
            seconds.append(time.perf_counter() - start)
        return float(np.median(seconds))

    single = median_time(1, repeats)
    batched = median_time(batch_size, max(3, repeats // 5))
    tf.keras.backend.clear_session()
    return {"latency_ms": round(single * 1000, 4), "batch_size": batch_size,
            "throughput_per_s": round(batch_size / batched, 1)}


def read_invocations(bench_dir: Path) -> list[dict]:
    """Every invocation recorded in the benchmark folder; one still `running` whose process is
    gone (killed) reads as `interrupted`."""
    records = read_json(bench_dir / INVOCATIONS_FILE, []) or []
    return [{**r, "status": INTERRUPTED}
            if r.get("status") == RUNNING and not process_alive(r) else r
            for r in records if isinstance(r, dict)]


def _save_invocation(bench_dir: Path, invocation: dict) -> None:
    records = read_invocations(bench_dir)
    ids = [r.get("id") for r in records]
    if invocation["id"] in ids:
        records[ids.index(invocation["id"])] = invocation
    else:
        records.append(invocation)
    write_json(bench_dir / INVOCATIONS_FILE, records)

