"""Plots of the pipeline's results, drawn with matplotlib's Agg backend."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from src.io import atomic_path

if TYPE_CHECKING:
    import numpy as np


def save_confusion_matrix(matrix: pd.DataFrame, path: Path, normalize: bool = False) -> None:
    """Draw a confusion matrix as a heat map and save it as a PNG, atomically.

    Args:
        matrix: Counts with true labels as rows and predicted labels as columns.
        path: The PNG file to write.
        normalize: Show each row as fractions of its true class instead of counts.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)


def save_learning_curve(curve: pd.DataFrame, path: Path) -> None:
    """Draw the training loss and the validation accuracy per epoch and save them as a PNG, atomically.

    Args:
        curve: One row per epoch with `epoch`, `loss` and `val_accuracy` (reports/learning_curve.csv).
        path: The PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, loss_axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    loss_axes.plot(curve["epoch"], curve["loss"], color="tab:red", label="training loss")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("training loss", color="tab:red")
    accuracy_axes = loss_axes.twinx()
    accuracy_axes.plot(curve["epoch"], curve["val_accuracy"], color="tab:blue", label="validation accuracy")
    accuracy_axes.set_ylabel("validation accuracy", color="tab:blue")
    loss_axes.set_title("Learning curve")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)


def save_sample_images(images: np.ndarray | None, labels: list[str], predictions: list[str], path: Path) -> None:
    """Draw a grid of images with their true and predicted labels and save it as a PNG, atomically.

    A misclassified image gets a red frame and a red caption marked "wrong".

    Args:
        images: (n, height, width) grayscale or (n, height, width, 3) RGB arrays, scaled
            to any range; None when the data is not images, which the PNG then says.
        labels: The true label of each image.
        predictions: The predicted label of each image.
        path: The PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if images is None or len(images) == 0:
        figure = plt.figure(figsize=(4, 0.6), dpi=100)
        figure.text(0.5, 0.5, "No sample images: the features are not image pixels", ha="center", va="center")
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format="png")
        plt.close(figure)
        return
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
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)
