"""Benchmark tables from run folders alone: results.csv, results.json, results.md.

One row per cell with what it bought (test accuracy, epsilon, robust accuracy, membership-attack
AUC, encrypted accuracy) and what it cost (seconds, memory, inference time), each cost also as a
ratio to the baseline cell of the same data set, model and seed. `ratio_basis` says whether that
baseline was measured in the same invocation. The summary averages the seeds of each data set x
model x setting and marks the settings on the accuracy/training-time Pareto front.
"""
from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np

from ..audit.scorecard import lookup
from ..report.rundir import ratio, read_json, to_json, write_json
from .execute import STATE_FILE, cell_directory, finished_cell, read_invocations
from .grid import Cell, Grid

# column -> dotted path ("section.key...") in a cell's metrics.json.
METRIC_COLUMNS = {
    "test_accuracy": "test.accuracy",
    "test_macro_f1": "test.macro_f1",
    "train_accuracy": "train.accuracy",
    "epochs": "cost.epochs",
    "steps": "cost.steps",
    "train_time_s": "cost.train_time_s",
    "step_time_median_s": "cost.step_time_median_s",
    "step_vs_plain": "cost.vs_plain_step.ratio",
    "examples_per_s": "cost.examples_per_s",
    "peak_rss_mb": "cost.peak_rss_mb",
    "peak_rss_increase_mb": "cost.peak_rss_increase_mb",
    "gpu_peak_mb": "cost.gpu_peak_mb",
    "engine": "training.engine.name",
    "epsilon": "privacy.epsilon",
    "delta": "privacy.delta",
    "noise_multiplier": "privacy.noise_multiplier",
    "clipping": "privacy.clipping",
    "privacy_guarantee_holds": "privacy.guarantee_holds",
    "adversarial_method": "adversarial_training.method",
    "adversarial_epsilon": "adversarial_training.epsilon_label",
    "robust_sanity_passed": "robustness.sanity_passed",
    "robustness_s": "robustness.seconds",
    "membership_auc": "membership.best.auc",
    "membership_advantage": "membership.best.advantage",
    "membership_tpr_at_0.1%_fpr": "membership.best.tpr_at_0.1%_fpr",
    "empirical_epsilon_lower_bound": "membership.empirical_privacy.epsilon_lower_bound",
    "membership_s": "membership.cost.total_s",
    "he_mode": "he.mode",
    "he_accuracy": "he.encrypted_accuracy",
    "he_agreement": "he.agreement",
    "he_latency_s": "he.latency_s_per_sample",
    "he_amortized_s": "he.amortized_s_per_sample",
    "he_amortized_slot_s": "he.packings.batched.amortized_s_per_slot",
    "he_query_bytes_per_sample": "he.packings.single.query_bytes_per_sample",
    "he_batched_query_bytes_per_sample": "he.packings.batched.query_bytes_per_sample",
    "he_public_context_bytes": "he.sizes.public_context_bytes",
}
# column -> path in the cell's bench.json
STATE_COLUMNS = {
    "cell_time_s": "wall_time_s",
    "cell_cpu_s": "cpu_time_s",
    "inference_latency_ms": "inference.latency_ms",
    "inference_throughput_per_s": "inference.throughput_per_s",
}
# Columns that describe or check rather than measure: not averaged over seeds.
TEXT_COLUMNS = ("engine", "clipping", "privacy_guarantee_holds", "adversarial_method",
                "adversarial_epsilon", "robust_epsilon", "robust_sanity_passed", "he_mode")
# ratio column -> (a cost of the cell, the baseline's cost it is divided by)
RATIOS = {
    "train_time_ratio": ("train_time_s", "train_time_s"),
    "peak_rss_increase_ratio": ("peak_rss_increase_mb", "peak_rss_increase_mb"),
    "gpu_peak_ratio": ("gpu_peak_mb", "gpu_peak_mb"),
    "cell_time_ratio": ("cell_time_s", "cell_time_s"),
    "cell_cpu_ratio": ("cell_cpu_s", "cell_cpu_s"),
    "inference_latency_ratio": ("inference_latency_ms", "inference_latency_ms"),
    # One encrypted example against one plaintext example of the baseline's model.
    "he_latency_ratio": ("he_latency_ms", "inference_latency_ms"),
    # The membership audit (shadow models included) against training the baseline once.
    "membership_time_ratio": ("membership_s", "train_time_s"),
}
# The summary's Pareto front: highest accuracy for the lowest cost.
FRONT = ("test_accuracy", "train_time_ratio")

# Markdown tables: title -> (column, header, format). Columns without any value are left out.
# Formats: "ratio" prints x1.23 and marks other invocations, "ms" seconds as milliseconds,
# "kb" bytes as KiB, "check" passed/FAILED, "flag" yes or blank, else a format string.
TABLES = {
    "Accuracy and training cost": [
        ("test_accuracy", "test acc", "{:.4f}"),
        ("train_time_s", "train s", "{:.1f}"),
        ("train_time_ratio", "x base", "ratio"),
        ("step_time_median_s", "step ms", "ms"),
        ("step_vs_plain", "step / plain, paired", "{:.2f}"),
        ("peak_rss_increase_mb", "mem +MB", "{:.0f}"),
        ("peak_rss_increase_ratio", "x base", "ratio"),
        ("gpu_peak_mb", "GPU MB", "{:.0f}"),
        ("cell_time_s", "cell s", "{:.1f}"),
        ("cell_cpu_s", "cell CPU s", "{:.1f}"),
        ("cell_cpu_ratio", "x base", "ratio"),
        ("pareto", "front", "flag"),
    ],
    "What it buys": [
        ("test_accuracy", "test acc", "{:.4f}"),
        ("epsilon", "epsilon", "{:.3g}"),
        ("robust_accuracy", "robust acc", "{:.3f}"),
        ("robust_epsilon", "attack eps", "{}"),
        ("robust_sanity_passed", "attack checks", "check"),
        ("membership_auc", "MIA AUC", "{:.3f}"),
        ("membership_tpr_at_0.1%_fpr", "MIA TPR@0.1%", "{:.3f}"),
        ("he_accuracy", "HE acc", "{:.4f}"),
        ("he_agreement", "HE agree", "{:.3f}"),
    ],
    "Inference and evaluation cost": [
        ("inference_latency_ms", "infer ms", "{:.3f}"),
        ("inference_throughput_per_s", "infer/s (batch)", "{:.0f}"),
        ("he_latency_ms", "HE ms/example", "{:.1f}"),
        ("he_latency_ratio", "x plain infer", "ratio"),
        ("he_amortized_slot_s", "HE full batch ms/example", "ms"),
        ("he_query_bytes_per_sample", "HE query KB", "kb"),
        ("robustness_s", "attacks s", "{:.1f}"),
        ("membership_s", "MIA s", "{:.1f}"),
        ("membership_time_ratio", "x base train", "ratio"),
    ],
}


def collect_rows(grid: Grid, bench_dir: Path) -> list[dict]:
    """One row per cell of the grid, read from its run folder (status 'missing' if none)."""
    cells = grid.cells()
    rows = {c.id: _row(c, bench_dir) for c in cells}
    baselines = {c.group: rows[c.id] for c in cells if c.baseline}
    recipes = {c.group: _training_recipe(c) for c in cells if c.baseline}
    for cell in cells:
        _add_ratios(rows[cell.id], baselines.get(cell.group))
        # A setting that only adds evaluations (membership shadows, encrypted inference)
        # trains exactly as its baseline: its training cost ratio is a re-measurement of 1.
        rows[cell.id]["trains_as_baseline"] = (not cell.baseline and
                                               _training_recipe(cell) == recipes.get(cell.group))
    return [rows[c.id] for c in cells]


def _training_recipe(cell: Cell) -> dict:
    return {key: cell.config[key] for key in ("data", "model", "training", "runtime", "defences")}


def _row(cell: Cell, bench_dir: Path) -> dict:
    folder = cell_directory(bench_dir, cell)
    row = {"cell": cell.id, "dataset": cell.dataset, "model": cell.model,
           "architecture": cell.config["model"]["name"], "setting": cell.setting,
           "seed": cell.seed, "baseline": cell.baseline,
           "defences": sorted(cell.config["defences"]),
           "evaluations": sorted(cell.config["evaluation"]),
           "mixed_precision": bool(cell.config["runtime"].get("mixed_precision", False)),
           "xla": bool(cell.config["runtime"].get("xla", False)),
           "folder": str(folder)}
    state, metrics = finished_cell(bench_dir, cell)
    if state is None:
        failed = read_json(folder / STATE_FILE, [])
        if isinstance(failed, dict) and failed.get("config_hash") == cell.config_hash:
            row.update(status=failed.get("status"), error=failed.get("error"))
        else:
            row["status"] = "missing"
        return row
    row.update(status="complete", invocation=state["invocation"], finished=state["finished"],
               device=_device(metrics))
    row.update({col: _get(metrics, path) for col, path in METRIC_COLUMNS.items()})
    row.update({col: _get(state, path) for col, path in STATE_COLUMNS.items()})
    row.update(robustness_columns(metrics.get("robustness")))
    row["he_latency_ms"] = None if row["he_latency_s"] is None else row["he_latency_s"] * 1000
    return row


def robustness_columns(section: dict | None) -> dict:
    """The worst case over every attack run, per epsilon, in the first norm measured (L-inf
    for images, L2 in embedding space for text); `robust_accuracy` is at its largest epsilon."""
    if not section or not section.get("worst_case"):
        return {"robust_accuracy": None, "robust_epsilon": None, "robustness_curve": None}
    norm = "linf" if "linf" in section["worst_case"] else next(iter(section["worst_case"]))
    by_label = section["worst_case"][norm]
    epsilons = {r["epsilon_label"]: r["epsilon"] for attack in section.get("attacks", [])
                for r in attack["results"]}
    points = sorted((epsilons[label], label, acc) for label, acc in by_label.items()
                    if label in epsilons)
    if not points:
        return {"robust_accuracy": None, "robust_epsilon": None, "robustness_curve": None}
    return {"robust_accuracy": points[-1][2], "robust_epsilon": f"{norm} {points[-1][1]}",
            "robustness_curve": {"norm": norm, "epsilons": [p[0] for p in points],
                                 "labels": [p[1] for p in points],
                                 "accuracy": [p[2] for p in points]}}


def _add_ratios(row: dict, base: dict | None) -> None:
    if row["status"] != "complete":
        return
    if base is None or base["status"] != "complete":
        row["ratio_basis"] = "no baseline"
        return
    row["baseline_cell"] = base["cell"]
    row["ratio_basis"] = ("same invocation" if row["invocation"] == base["invocation"]
                          else "other invocation")
    for column, (cost, base_cost) in RATIOS.items():
        row[column] = ratio(row.get(cost), base.get(base_cost))


def summarize(rows: list[dict]) -> list[dict]:
    """Mean (and standard deviation over seeds) per data set x model x setting, Pareto-marked."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["model"], row["setting"]), []).append(row)
    summary = []
    numeric = [c for c in [*METRIC_COLUMNS, *STATE_COLUMNS, *RATIOS, "robust_accuracy",
                           "he_latency_ms"] if c not in TEXT_COLUMNS]
    for (dataset, model, setting), members in groups.items():
        done = [r for r in members if r["status"] == "complete"]
        entry = {"dataset": dataset, "model": model, "setting": setting,
                 "architecture": members[0]["architecture"], "defences": members[0]["defences"],
                 "baseline": members[0]["baseline"],
                 "trains_as_baseline": members[0]["trains_as_baseline"],
                 "seeds": [r["seed"] for r in done],
                 "cells": len(members), "complete": len(done),
                 "ratio_basis": sorted({r.get("ratio_basis") for r in done if
                                        r.get("ratio_basis")})}
        for col in numeric:
            values = [r[col] for r in done if isinstance(r.get(col), (int, float))
                      and not isinstance(r.get(col), bool)]
            entry[col] = float(np.mean(values)) if values else None
            entry[col + "_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        for col in TEXT_COLUMNS:
            values = [r[col] for r in done if r.get(col) is not None]
            # A check must pass for every seed; a description is the same for all.
            entry[col] = (all(values) if all(isinstance(v, bool) for v in values) else
                          values[0]) if values else None
        entry["robustness_curve"] = _mean_curve([r.get("robustness_curve") for r in done])
        summary.append(entry)
    for panel in {(s["dataset"], s["model"]) for s in summary}:
        members = [s for s in summary if (s["dataset"], s["model"]) == panel
                   and not s["trains_as_baseline"]]
        front = pareto_front([(s[FRONT[0]], s[FRONT[1]]) for s in members])
        for s, on_front in zip(members, front):
            s["pareto"] = on_front
    return summary


def _mean_curve(curves: list[dict | None]) -> dict | None:
    """The seeds' robustness curves averaged point by point (when measured at equal epsilons)."""
    curves = [c for c in curves if c]
    if not curves or any(c["epsilons"] != curves[0]["epsilons"] for c in curves):
        return curves[0] if curves else None
    return {**curves[0], "accuracy": np.mean([c["accuracy"] for c in curves], axis=0).tolist()}


def pareto_front(points: list[tuple]) -> list[bool]:
    """For (benefit, cost) points: True where no other point has at least the benefit for at
    most the cost and is better in one of them. Points with a missing value are never on it."""
    def valid(p):
        return p[0] is not None and p[1] is not None

    flags = []
    for i, p in enumerate(points):
        dominated = any(valid(q) and q[0] >= p[0] and q[1] <= p[1] and q != p
                        for j, q in enumerate(points) if j != i) if valid(p) else True
        flags.append(not dominated)
    return flags


def write_results(grid: Grid, bench_dir: Path) -> dict[str, Path]:
    """Write results.csv, results.json, results.md and the plots; returns name -> path."""
    from .plots import write_plots

    rows = collect_rows(grid, bench_dir)
    summary = summarize(rows)
    plots = write_plots(summary, bench_dir / "plots")
    invocations = read_invocations(bench_dir)
    used = {r.get("invocation") for r in rows}
    record = {
        "grid": grid.name, "description": grid.description, "source": grid.source,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "baseline": grid.baseline,
        "seeds": grid.seeds, "front": list(FRONT),
        "invocations": [i for i in invocations if i["id"] in used],
        "unavailable": grid.unavailable,
        "plots": {name: str(p) if isinstance(p, Path) else p for name, p in plots.items()},
        "summary": summary, "cells": rows,
    }
    files = {"results.json": bench_dir / "results.json", "results.csv": bench_dir / "results.csv",
             "results.md": bench_dir / "results.md"}
    write_json(files["results.json"], record)
    _write_csv(files["results.csv"], rows)
    files["results.md"].write_text(markdown(record, bench_dir))
    files.update({name: p for name, p in plots.items() if isinstance(p, Path)})
    return files


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: to_json(v, indent=None) if isinstance(v, (list, dict)) else v
                             for k, v in row.items()})


def markdown(record: dict, bench_dir: Path) -> str:
    """The summary table with the machine, date, command and notes needed to read it."""
    summary = record["summary"]
    lines = [f"# Benchmark `{record['grid']}`", ""]
    if record["description"]:
        lines += [record["description"], ""]
    lines += [f"Generated {record['generated']} from {bench_dir}; grid {record['source']}; "
              f"seeds {record['seeds']}.", ""]
    for inv in record["invocations"]:
        hw = inv["hardware"]
        gpus = ", ".join(f"{g['name']} ({g['memory_mb']} MB)" for g in hw["gpus"]) or "none"
        status = "" if inv.get("status", "complete") == "complete" else f" ({inv['status']})"
        lines.append(f"- Invocation `{inv['id']}`{status}: "
                     f"`{inv.get('command') or 'Python API'}`; "
                     f"{hw['cpu']}, {hw['cpu_count']} cores, {hw['memory_gb']} GB; GPUs: {gpus}; "
                     f"TensorFlow {hw['libraries'].get('tensorflow')}; load average "
                     f"{hw['load_average']} at start, {inv.get('load_average_end')} at end.")
    lines += ["", f"Costs are also given as ratios (x base) to setting `{record['baseline']}` "
                  "of the same data set, model and seed, measured in the same invocation; "
                  "`*` marks a ratio whose baseline was measured in another invocation. "
                  "Values are means over seeds (± standard deviation with several seeds). "
                  f"Front: on the Pareto front of {FRONT[0]} against {FRONT[1]}.", ""]
    for title, table in TABLES.items():
        lines += [f"## {title}", "", *_table(summary, table), ""]
    lines += ["## Plots", ""]
    for name, path in record["plots"].items():
        if path.startswith("skipped"):
            lines += [f"`{name}`: {path}.", ""]
        else:
            lines += [f"![{name}]({Path(path).relative_to(bench_dir)})", ""]
    problems = [r for r in record["cells"] if r["status"] != "complete"]
    if problems:
        lines += ["## Cells without results", ""]
        lines += [f"- {r['cell']}: {r['status']}" + (f" ({r['error']})" if r.get("error") else "")
                  for r in problems]
        lines.append("")
    if record["unavailable"]:
        lines += ["## Not benchmarked (capability not installed)", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in record["unavailable"].items()]
        lines.append("")
    return "\n".join(lines)


def _table(summary: list[dict], table: list[tuple]) -> list[str]:
    columns = [(c, h, f) for c, h, f in table if any(s.get(c) is not None for s in summary)]
    header = ["data", "model", "setting", "seeds"] + [h for _, h, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in summary:
        cells = [s["dataset"], s["model"], s["setting"], f"{s['complete']}/{s['cells']}"]
        cells += [_format(s, c, f) for c, _, f in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _format(summary: dict, column: str, fmt: str) -> str:
    value = summary.get(column)
    if value is None:
        return "-"
    if fmt in ("check", "flag"):
        return {("check", True): "passed", ("check", False): "FAILED",
                ("flag", True): "yes", ("flag", False): ""}[fmt, bool(value)]
    if fmt == "ratio":
        mark = "*" if "other invocation" in summary["ratio_basis"] else ""
        return f"x{value:.2f}{mark}"
    scale = {"ms": 1000, "kb": 1 / 1024}.get(fmt)
    if scale:
        value, fmt = value * scale, "{:.3g}" if fmt == "ms" else "{:.0f}"
    text = fmt.format(value)
    std = summary.get(column + "_std")
    if std is not None:
        text += " ± " + fmt.format(std * (scale or 1))
    return text


def _device(metrics: dict) -> str:
    device = (metrics.get("cost") or {}).get("device") or {}
    return ", ".join(device.get("gpus") or []) or device.get("cpu") or ""


def _get(record: dict, path: str):
    value = lookup(record, path)
    return None if isinstance(value, float) and math.isnan(value) else value

