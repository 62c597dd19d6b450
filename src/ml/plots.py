"""Plots of the pipeline's results, drawn with matplotlib's Agg backend."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from src.io import atomic_path

if TYPE_CHECKING:
    import numpy as np


def _pyplot():
    """matplotlib.pyplot on the Agg backend: files only, no display; imported on first use (a second)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    """Write the figure to path as a PNG, atomically, and free it."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    _pyplot().close(figure)


def save_confusion_matrix(matrix: pd.DataFrame, path: Path, normalize: bool = False) -> None:
    """Draw a confusion matrix as a heat map and save it as a PNG, atomically.

    Args:
        matrix: Counts with true labels as rows and predicted labels as columns.
        path: The PNG file to write.
        normalize: Show each row as fractions of its true class instead of counts.
    """
    plt = _pyplot()

    shown = matrix.div(matrix.sum(axis=1), axis=0).fillna(0) if normalize else matrix
    figure, axes = plt.subplots(figsize=(5, 4.5), dpi=100)
    image = axes.imshow(shown.to_numpy(), cmap="Blues")
    figure.colorbar(image, ax=axes)
    axes.set_xticks(range(len(shown.columns)), labels=shown.columns, rotation=45, ha="right")
    axes.set_yticks(range(len(shown.index)), labels=shown.index)
    axes.set_xlabel("Predicted label")
    axes.set_ylabel("True label")
    axes.set_title("Confusion matrix" + (" (row fractions)" if normalize else ""))
    threshold = shown.to_numpy().max() / 2
    for row, true_label in enumerate(shown.index):
        for column, predicted_label in enumerate(shown.columns):
            value = shown.loc[true_label, predicted_label]
            axes.text(
                column,
                row,
                f"{value:.2f}" if normalize else f"{int(value)}",
                ha="center",
                va="center",
                color="white" if value > threshold else "black",
            )
    figure.tight_layout()
    _save(figure, path)


SCATTER_POINTS = 20_000
"""The most test rows a scatter plot draws (a seeded sample of a larger test table)."""


def _scatter_sample(values: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """At most SCATTER_POINTS rows of both, the same rows each time, and how many of how many are shown."""
    import numpy as np

    if len(values) <= SCATTER_POINTS:
        return values, predictions, f"{len(values)} test rows"
    rows = np.random.default_rng(0).choice(len(values), SCATTER_POINTS, replace=False)
    return values[rows], predictions[rows], f"{SCATTER_POINTS:,} of {len(values):,} test rows"


def save_predicted_against_actual(values: np.ndarray, predictions: np.ndarray, path: Path) -> None:
    """Regression: draw each test row's prediction against its true value, with the line of a perfect model.

    Args:
        values: The true values.
        predictions: The predictions, in the same order.
        path: The PNG file to write, atomically.
    """
    plt = _pyplot()

    shown, predicted, what = _scatter_sample(values, predictions)
    low, high = float(min(shown.min(), predicted.min())), float(max(shown.max(), predicted.max()))
    figure, axes = plt.subplots(figsize=(5, 4.5), dpi=100)
    axes.scatter(shown, predicted, s=8, alpha=0.5, color="tab:blue")
    axes.plot([low, high], [low, high], color="tab:red", linewidth=1, label="predicted = actual")
    axes.set_xlabel("actual")
    axes.set_ylabel("predicted")
    axes.set_title(f"Predicted against actual ({what})")
    axes.legend(loc="upper left")
    figure.tight_layout()
    _save(figure, path)


def save_residuals(values: np.ndarray, predictions: np.ndarray, path: Path) -> None:
    """Regression: draw each test row's error (actual minus predicted) against its prediction, around zero.

    A good model's errors scatter evenly around zero whatever it predicts; a
    funnel or a curve says where it is wrong.

    Args:
        values: The true values.
        predictions: The predictions, in the same order.
        path: The PNG file to write, atomically.
    """
    plt = _pyplot()

    shown, predicted, what = _scatter_sample(values, predictions)
    figure, axes = plt.subplots(figsize=(5, 4.5), dpi=100)
    axes.scatter(predicted, shown - predicted, s=8, alpha=0.5, color="tab:blue")
    axes.axhline(0, color="tab:red", linewidth=1)
    axes.set_xlabel("predicted")
    axes.set_ylabel("residual (actual - predicted)")
    axes.set_title(f"Residuals ({what})")
    figure.tight_layout()
    _save(figure, path)


def save_learning_curve(curve: pd.DataFrame, path: Path) -> None:
    """Draw the training loss and the validation score per epoch and save them as a PNG, atomically.

    Args:
        curve: One row per epoch with `epoch`, `loss` and `val_score` (reports/learning_curve.csv):
            the estimator's own score, accuracy for a classifier and R² for a regressor.
        path: The PNG file to write.
    """
    plt = _pyplot()

    figure, loss_axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    loss_axes.plot(curve["epoch"], curve["loss"], color="tab:red", label="training loss")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("training loss", color="tab:red")
    score_axes = loss_axes.twinx()
    score_axes.plot(curve["epoch"], curve["val_score"], color="tab:blue", label="validation score")
    score_axes.set_ylabel("validation score (accuracy or R²)", color="tab:blue")
    loss_axes.set_title("Learning curve")
    figure.tight_layout()
    _save(figure, path)


def save_sample_images(images: np.ndarray, labels: list[str], predictions: list[str], path: Path) -> None:
    """Draw a grid of images with their true and predicted labels and save it as a PNG, atomically.

    A misclassified image gets a red frame and a red caption marked "wrong".

    Args:
        images: (n, height, width) grayscale or (n, height, width, 3) RGB arrays, scaled to any range.
        labels: The true label of each image.
        predictions: The predicted label of each image.
        path: The PNG file to write.
    """
    plt = _pyplot()

    columns = min(8, len(images))
    rows = -(-len(images) // columns)
    figure, axes_grid = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.55 * rows + 0.4), dpi=100, squeeze=False)
    low, high = float(images.min()), float(images.max())
    for index, axes in enumerate(axes_grid.flat):
        axes.set_xticks([])
        axes.set_yticks([])
        if index >= len(images):
            axes.axis("off")
            continue
        image = images[index]
        if image.ndim == 3:
            axes.imshow((image - low) / ((high - low) or 1))
        else:
            axes.imshow(image, cmap="gray_r", vmin=low, vmax=high)
        wrong = str(labels[index]) != str(predictions[index])
        color = "tab:red" if wrong else "black"
        caption = f"true {labels[index]}\npredicted {predictions[index]}" + (" (wrong)" if wrong else "")
        axes.set_title(caption, fontsize=7, color=color)
        for spine in axes.spines.values():
            spine.set_color("tab:red" if wrong else "lightgray")
            spine.set_linewidth(3 if wrong else 1)
    wrong_count = sum(str(label) != str(prediction) for label, prediction in zip(labels, predictions, strict=True))
    figure.suptitle(f"Test images: {wrong_count} of {len(images)} shown misclassified (red frame)", fontsize=9)
    figure.tight_layout()
    _save(figure, path)
