"""Plots of the pipeline's results, drawn with matplotlib's Agg backend."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from src.utils.io import atomic_path


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
