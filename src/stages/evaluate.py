"""Stage evaluate: score the model on the test table, write metrics and plots."""

from __future__ import annotations

from typing import Any

import pandas as pd

from src.config import PATHS, Config
from src.utils.cli import run_stage
from src.utils.images import as_images, image_shape
from src.utils.io import read_table, require
from src.utils.mlflow_run import StageResult, mlflow_stage

SAMPLE_COUNT = 24


def score(labels: pd.Series, predictions: pd.Series) -> dict[str, float]:
    """Compute accuracy and the macro-averaged F1, precision and recall.

    Args:
        labels: The true labels.
        predictions: The predicted labels, in the same order.

    Returns:
        `accuracy`, `f1_macro`, `precision_macro` and `recall_macro`.
    """
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1_macro": float(f1_score(labels, predictions, average="macro", zero_division=0)),
        "precision_macro": float(precision_score(labels, predictions, average="macro", zero_division=0)),
        "recall_macro": float(recall_score(labels, predictions, average="macro", zero_division=0)),
    }


def confusion_matrix(labels: pd.Series, predictions: pd.Series) -> pd.DataFrame:
    """Count predictions per true class.

    Args:
        labels: The true labels.
        predictions: The predicted labels, in the same order.

    Returns:
        A square table of counts: one row per true label, one column per
        predicted label, both over every label seen in either.
    """
    classes = sorted(set(labels) | set(predictions))
    counts = pd.crosstab(
        pd.Categorical(labels, categories=classes),
        pd.Categorical(predictions, categories=classes),
        dropna=False,
    )
    counts.index.name, counts.columns.name = "true", "predicted"
    return counts.reindex(index=classes, columns=classes, fill_value=0)


def evaluate(model: Any, test: pd.DataFrame, target: str) -> tuple[dict[str, float], pd.DataFrame, pd.Series]:
    """Predict the test table and score the predictions.

    Args:
        model: A fitted estimator.
        test: The test table, with the label column `target`.
        target: The label column.

    Returns:
        The metrics (see `score`), the confusion matrix and the predictions.
    """
    labels = test[target]
    predictions = pd.Series(model.predict(test.drop(columns=[target])), index=test.index)
    return score(labels, predictions), confusion_matrix(labels, predictions), predictions


def choose_samples(labels: pd.Series, predictions: pd.Series, count: int = SAMPLE_COUNT) -> list[int]:
    """Choose which test rows the sample grid shows: misclassified rows first, up to half the grid.

    Args:
        labels: The true labels.
        predictions: The predicted labels, in the same order.
        count: How many rows to choose, at most.

    Returns:
        Row positions: up to `count // 2` misclassified rows, then correctly
        classified rows, each in test-table order.
    """
    wrong = [position for position, same in enumerate(labels.to_numpy() == predictions.to_numpy()) if not same]
    right = [position for position, same in enumerate(labels.to_numpy() == predictions.to_numpy()) if same]
    chosen = wrong[: count // 2]
    return chosen + right[: count - len(chosen)]


@mlflow_stage("evaluate")
def main(config: Config) -> StageResult:
    """Score models/model.joblib on the test table, draw the confusion matrix and, for images, sample images.

    The metrics it returns are written to reports/metrics.json by the decorator.
    For data that is not images, reports/samples.png says so instead.
    """
    import joblib

    from src.report.plots import save_confusion_matrix, save_sample_images

    model = joblib.load(require(PATHS.model, made_by="train"))
    test = read_table(PATHS.test, made_by="data_split")
    target = config.data_load.target
    metrics, matrix, predictions = evaluate(model, test, target)
    save_confusion_matrix(matrix, PATHS.confusion_matrix_png, config.evaluate.normalize_confusion_matrix)
    shape = image_shape(test.columns)
    if shape is None:
        save_sample_images(None, [], [], PATHS.samples_png)
        artifacts = [PATHS.metrics, PATHS.confusion_matrix_png]
    else:
        rows = choose_samples(test[target], predictions)
        images = as_images(test.iloc[rows], shape)
        save_sample_images(images, test[target].iloc[rows].tolist(), predictions.iloc[rows].tolist(), PATHS.samples_png)
        artifacts = [PATHS.metrics, PATHS.confusion_matrix_png, PATHS.samples_png]
    return StageResult(
        metrics=metrics,
        artifacts=artifacts,
    )


if __name__ == "__main__":
    run_stage(main)
