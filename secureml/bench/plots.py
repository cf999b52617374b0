"""Benchmark plots (PNG, matplotlib Agg). A plot without data is skipped with the reason."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

from .results import pareto_front  # noqa: E402

COSTS = {
    "train_time_ratio": "training time / baseline",
    "step_vs_plain": "defended step / plain step (paired)",
    "peak_rss_increase_ratio": "training memory increase / baseline",
}


def write_plots(summary: list[dict], plot_dir: Path) -> dict[str, Path | str]:
    """Write every plot that has data; returns file name -> path, or -> 'skipped: why'."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots = {"accuracy_vs_cost.png": accuracy_vs_cost,
             "accuracy_vs_epsilon.png": accuracy_vs_epsilon,
             "robust_accuracy_vs_epsilon.png": robust_accuracy_vs_epsilon}
    written = {}
    for name, draw in plots.items():
        path = plot_dir / name
        path.unlink(missing_ok=True)  # a plot from an earlier invocation must not linger
        reason = draw(summary, path)
        written[name] = path if reason is None else f"skipped: {reason}"
    return written


def _panels(summary: list[dict], has_data) -> list[tuple[str, str, list[dict]]]:
    panels = {}
    for s in summary:
        panels.setdefault((s["dataset"], s["model"]), []).append(s)
    return [(d, m, members) for (d, m), members in panels.items() if any(map(has_data, members))]


def _figure(rows: int, cols: int):
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    return fig, axes


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _label(ax, xlabel: str, ylabel: str, dataset: str, model: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{dataset} / {model}", fontsize=9)
    ax.grid(alpha=0.3)


def _log_scale_if_wide(ax, values: list[float]) -> None:
    positive = [v for v in values if v and v > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_xscale("log")


def accuracy_vs_cost(summary: list[dict], path: Path) -> str | None:
    """Test accuracy against each cost ratio, one panel per data set/model, front marked."""
    # Settings that train exactly as the baseline (extra evaluations only) cost nothing here.
    summary = [s for s in summary if not s.get("trains_as_baseline")]
    costs = [c for c in COSTS if any(s.get(c) is not None for s in summary)]
    panels = _panels(summary, lambda s: s.get("test_accuracy") is not None
                     and any(s.get(c) is not None for c in costs)
                     and not s["baseline"])
    if not costs or not panels:
        return "no finished cell has both a test accuracy and a cost ratio"
    fig, axes = _figure(len(panels), len(costs))
    for row, (dataset, model, members) in enumerate(panels):
        for col, cost in enumerate(costs):
            ax = axes[row][col]
            points = [(s, s["test_accuracy"], s[cost]) for s in members
                      if s.get("test_accuracy") is not None and s.get(cost) is not None]
            front = pareto_front([(acc, c) for _, acc, c in points])
            for (s, acc, c), on_front in zip(points, front):
                ax.scatter(c, acc, s=36, color="tab:red" if on_front else "tab:blue", zorder=3)
                ax.annotate(s["setting"], (c, acc), textcoords="offset points", xytext=(4, 3),
                            fontsize=7)
            line = sorted((c, acc) for (_, acc, c), f in zip(points, front) if f)
            if line:
                ax.plot(*zip(*line), color="tab:red", linewidth=1, drawstyle="steps-post",
                        label="Pareto front")
                ax.legend(fontsize=7, loc="lower right")
            _log_scale_if_wide(ax, [c for _, _, c in points])
            _label(ax, COSTS[cost], "test accuracy", dataset, model)
    _save(fig, path)
    return None


def accuracy_vs_epsilon(summary: list[dict], path: Path) -> str | None:
    """Test accuracy against the privacy epsilon of DP cells, the baseline as a line."""
    panels = _panels(summary, lambda s: s.get("epsilon") is not None)
    if not panels:
        return "no finished cell has a privacy epsilon (no DP-SGD cell)"
    fig, axes = _figure(1, len(panels))
    for ax, (dataset, model, members) in zip(axes[0], panels):
        dp = sorted((s for s in members if s.get("epsilon") is not None),
                    key=lambda s: s["epsilon"])
        ax.plot([s["epsilon"] for s in dp], [s["test_accuracy"] for s in dp], "o-",
                label="test accuracy")
        for s in dp:
            ax.annotate(s["setting"], (s["epsilon"], s["test_accuracy"]),
                        textcoords="offset points", xytext=(4, 3), fontsize=7)
        robust = [s for s in dp if s.get("robust_accuracy") is not None]
        if robust:
            ax.plot([s["epsilon"] for s in robust], [s["robust_accuracy"] for s in robust],
                    "s--", label="robust accuracy")
        base = next((s for s in members if s["baseline"]), None)
        if base and base.get("test_accuracy") is not None:
            ax.axhline(base["test_accuracy"], color="gray", linestyle=":",
                       label=f"{base['setting']} (no DP)")
        _log_scale_if_wide(ax, [s["epsilon"] for s in dp])
        _label(ax, "privacy epsilon (lower is more private)", "accuracy", dataset, model)
        ax.legend(fontsize=7)
    _save(fig, path)
    return None


def robust_accuracy_vs_epsilon(summary: list[dict], path: Path) -> str | None:
    """Worst-case robust accuracy against the attack's epsilon, one curve per setting."""
    panels = _panels(summary, lambda s: bool(s.get("robustness_curve")))
    if not panels:
        return "no finished cell has a robustness evaluation"
    fig, axes = _figure(1, len(panels))
    for ax, (dataset, model, members) in zip(axes[0], panels):
        norms = set()
        for s in members:
            curve = s.get("robustness_curve")
            if curve:
                norms.add(curve["norm"])
                ax.plot(curve["epsilons"], curve["accuracy"], "o-", label=s["setting"])
        _label(ax, f"attack epsilon ({', '.join(sorted(norms))})",
               "robust accuracy (worst case over attacks)", dataset, model)
        ax.legend(fontsize=7)
    _save(fig, path)
    return None
