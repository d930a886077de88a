"""The report's figures, drawn with matplotlib and returned as PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vistrain.core.console import printable  # noqa: E402

LABEL_CHARACTERS = 40  # longer class names are cut short on the figures


def _label(name: str) -> str:
    """A class name as drawn: control characters escaped (matplotlib would warn with them raw on stderr), `$` taken
    literally (not as mathtext), and cut to LABEL_CHARACTERS."""
    text = printable(name).replace("$", r"\$")
    return text if len(text) <= LABEL_CHARACTERS else text[: LABEL_CHARACTERS - 1] + "…"


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def confusion_heatmap(matrix: list[list[int]], classes: list[str]) -> bytes:
    """Counts as a heat map; rows are true classes, columns predicted ones."""
    counts = np.array(matrix)
    size = max(3.5, 0.6 * len(classes) + 2)
    figure, axes = plt.subplots(figsize=(size, size * 0.85))
    image = axes.imshow(counts, cmap="Blues")
    labels = [_label(name) for name in classes]
    axes.set_xticks(range(len(classes)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), labels)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    for (row, column), value in np.ndenumerate(counts):
        dark = value > counts.max() / 2
        axes.text(column, row, str(value), ha="center", va="center", color="white" if dark else "black")
    figure.colorbar(image, ax=axes, shrink=0.8)
    return _png(figure)


def training_curves(history: list[dict]) -> bytes:
    """Loss and the task's score (accuracy, label accuracy or MAE) per epoch, training and validation."""
    epochs = [int(row["epoch"]) for row in history]
    score = next(key[len("train_"):] for key in history[0] if key.startswith("train_") and key != "train_loss")
    figure, (loss_axes, score_axes) = plt.subplots(1, 2, figsize=(9, 3.2))
    for axes, metric in ((loss_axes, "loss"), (score_axes, score)):
        axes.plot(epochs, [float(r[f"train_{metric}"]) for r in history], "o-", label="train")
        axes.plot(epochs, [float(r[f"val_{metric}"]) for r in history], "o-", label="validation")
        axes.set_xlabel("epoch")
        axes.set_title(metric)
        axes.grid(alpha=0.3)
        axes.legend()
    return _png(figure)


def predicted_vs_true(targets: np.ndarray, values: np.ndarray, names: list[str]) -> bytes:
    """Regression: predicted against true value, one panel per target; the diagonal is a perfect prediction."""
    figure, panels = plt.subplots(1, len(names), figsize=(4 * len(names), 4), squeeze=False)
    for j, (axes, name) in enumerate(zip(panels[0], names)):
        low = min(targets[:, j].min(), values[:, j].min())
        high = max(targets[:, j].max(), values[:, j].max())
        axes.scatter(targets[:, j], values[:, j], s=12, alpha=0.5)
        axes.plot([low, high], [low, high], "k--", label="predicted = true")
        axes.set_xlabel(f"true {_label(name)}")
        axes.set_ylabel(f"predicted {_label(name)}")
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left")
    return _png(figure)


def reliability_diagram(reliability: dict) -> bytes:
    """Mean confidence vs accuracy per confidence bin; the diagonal is perfect calibration."""
    figure, axes = plt.subplots(figsize=(4, 4))
    bins = reliability["bins"]
    axes.bar([(b["low"] + b["high"]) / 2 for b in bins], [b["accuracy"] for b in bins],
             width=[b["high"] - b["low"] for b in bins], edgecolor="black", alpha=0.7, label="accuracy")
    axes.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    axes.set_xlabel("confidence (top probability)")
    axes.set_ylabel("accuracy")
    axes.set_title(f"ECE = {reliability['ece']:.3f}")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.legend(loc="upper left")
    return _png(figure)


def coverage_curve(coverage: dict) -> bytes:
    """Accuracy on the images kept, and the share kept, against the abstain threshold."""
    rows = [r for r in coverage["rows"] if r["accuracy"] is not None]
    thresholds = [r["threshold"] for r in rows]
    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.plot(thresholds, [r["accuracy"] for r in rows], label="accuracy on kept images")
    axes.plot(thresholds, [r["kept"] for r in rows], label="share of images kept")
    axes.axhline(coverage["target_accuracy"], color="gray", linestyle=":", label=f"{coverage['target_accuracy']:.0%}")
    best = coverage["lowest_threshold_reaching_target"]
    if best:
        axes.axvline(best["threshold"], color="green", linestyle="--", label=f"threshold {best['threshold']:.2f}")
    axes.set_xlabel("abstain threshold (top probability)")
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize="small")
    return _png(figure)


def image_grid(rows: list[list], titles: list[str]) -> bytes:
    """A grid of images (PIL or HxWx3 arrays), one list per row, with column titles."""
    n_rows, n_columns = len(rows), max(len(r) for r in rows)
    figure, axes = plt.subplots(n_rows, n_columns, figsize=(2 * n_columns, 2 * n_rows), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_columns):
            axes[r][c].axis("off")
            if c < len(row):
                axes[r][c].imshow(row[c])
            if r == 0 and c < len(titles):
                axes[r][c].set_title(titles[c], fontsize=9)
    return _png(figure)
