"""Stage evaluate: score the model on the test table, write metrics and plots."""

from __future__ import annotations

from typing import Any

import pandas as pd

from src.config import PATHS, Config
from src.ml.features import features_of
from src.ml.metrics import confusion_matrix, score
from src.utils.cli import run_stage
from src.utils.images import as_images, image_shape
from src.utils.io import read_table, require
from src.utils.mlflow_run import StageResult, mlflow_stage

SAMPLE_COUNT = 24


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
    """Score models/model.joblib on the test rows, draw the confusion matrix and, for images, sample images.

    The model takes the raw test rows as a caller would send them (its featurize
    step included). The metrics it returns are written to reports/metrics.json by
    the decorator. The sample images show what the model saw (scaled and pooled
    pixels); for data that is not images, reports/samples.png says so instead.
    """
    import joblib

    from src.report.plots import save_confusion_matrix, save_sample_images

    model = joblib.load(require(PATHS.model, made_by="train"))
    test = read_table(PATHS.test, made_by="data_split")
    target = config.data_load.target
    metrics, matrix, predictions = evaluate(model, test, target)
    save_confusion_matrix(matrix, PATHS.confusion_matrix_png, config.evaluate.normalize_confusion_matrix)
    rows = choose_samples(test[target], predictions)
    seen = features_of(model, test.iloc[rows].drop(columns=[target]))
    shape = image_shape(seen.columns)
    if shape is None:
        save_sample_images(None, [], [], PATHS.samples_png)
        artifacts = [PATHS.metrics, PATHS.confusion_matrix_png]
    else:
        images = as_images(seen, shape)
        save_sample_images(images, test[target].iloc[rows].tolist(), predictions.iloc[rows].tolist(), PATHS.samples_png)
        artifacts = [PATHS.metrics, PATHS.confusion_matrix_png, PATHS.samples_png]
    return StageResult(
        metrics=metrics,
        artifacts=artifacts,
    )


if __name__ == "__main__":
    run_stage(main)
