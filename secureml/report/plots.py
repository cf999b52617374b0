"""The report's plots, drawn with matplotlib's Agg backend into PNG bytes.

Each function takes values as they are stored in the run folder and returns PNG bytes, or
None when there is nothing to draw.
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_DPI = 90


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=_DPI)
    plt.close(fig)
    return buffer.getvalue()


def roc_curves(curves: dict[str, dict], title: str) -> bytes | None:
    """ROC curves on log-log axes (low FPR is where membership inference matters)."""
    curves = {k: v for k, v in curves.items() if v and v.get("fpr")}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5, 4.2))
    floor = min(min(f for f in c["fpr"] if f > 0) for c in curves.values())
    for name, curve in curves.items():
        fpr, tpr = np.asarray(curve["fpr"]), np.asarray(curve["tpr"])
        keep = fpr > 0
        ax.plot(fpr[keep], np.maximum(tpr[keep], floor), label=name, lw=1.5)
    ax.plot([floor, 1], [floor, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1.05),
           xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def training_curves(history: list[dict], title: str) -> bytes | None:
    """Loss and accuracy per epoch, training and validation."""
    if not history:
        return None
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    panels = [("loss", "val_loss"), ("accuracy", "val_accuracy")]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, keys in zip(axes, panels):
        for key in keys:
            values = [row.get(key) for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v for v in values], marker=".",
                        label=key)
        ax.set(xlabel="epoch", ylabel=keys[0])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def epsilon_over_epochs(histories: dict[str, list[dict]]) -> bytes | None:
    """Privacy budget spent after each epoch, per DP variant."""
    series = {name: [(row.get("epoch", i + 1), row["epsilon"]) for i, row in enumerate(h)
                     if row.get("epsilon") is not None] for name, h in histories.items()}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, points in series.items():
        ax.plot(*zip(*points), marker="o", label=name)
    ax.set(xlabel="epoch", ylabel="epsilon spent", title="Privacy budget over training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def robust_accuracy(attacks: list[dict], clean_accuracy: float | None,
                    title: str) -> bytes | None:
    """Robust accuracy against the attack budget, one line per attack, one panel per norm."""
    curves: dict[str, dict[str, list]] = {}
    for attack in attacks or []:
        points = sorted((r["epsilon"], r["robust_accuracy"]) for r in attack.get("results", [])
                        if r.get("robust_accuracy") is not None)
        if points:
            norm = attack.get("norm") or "tokens"
            curves.setdefault(norm, {})[attack.get("label") or attack.get("name")] = points
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.4), squeeze=False)
    for ax, (norm, lines) in zip(axes[0], curves.items()):
        for name, points in lines.items():
            ax.plot(*zip(*points), marker="o", label=name)
        if clean_accuracy is not None:
            ax.axhline(clean_accuracy, ls="--", color="grey", lw=1, label="clean")
        ax.set(xlabel={"linf": "L-inf epsilon", "l2": "L2 epsilon",
                       "tokens": "tokens swapped"}.get(norm, norm),
               ylabel="robust accuracy", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def confusion_matrix(matrix: list[list[int]], class_names: list[str],
                     title: str) -> bytes | None:
    """Rows are true classes, normalized per row; counts written in the cells when few."""
    if not matrix:
        return None
    counts = np.asarray(matrix, dtype=np.float64)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = min(9.0, 2.5 + 0.45 * len(counts))
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(counts))
    names = class_names if class_names and len(class_names) == len(counts) else ticks
    ax.set_xticks(ticks, names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(ticks, names, fontsize=7)
    if len(counts) <= 15:
        for i in ticks:
            for j in ticks:
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _png(fig)


def class_balance(counts: dict[str, dict[str, int]], title: str) -> bytes | None:
    """Examples per class in each split (grouped bars)."""
    if not counts:
        return None
    splits = list(counts)
    classes = list(next(iter(counts.values())))
    x = np.arange(len(classes))
    width = 0.8 / len(splits)
    fig, ax = plt.subplots(figsize=(min(10, 3 + 0.5 * len(classes)), 3.2))
    for k, split in enumerate(splits):
        ax.bar(x + k * width, [counts[split].get(c, 0) for c in classes], width, label=split)
    ax.set_xticks(x + width * (len(splits) - 1) / 2, classes, rotation=45, ha="right",
                  fontsize=7)
    ax.set(ylabel="examples", title=title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)
