"""The held-out metrics: one computation for evaluate, cross-validation, `make promote`, `make retrain` and the sweep.

Which metrics exist, which task each scores and which way is better is declared
in `src.ml.catalog.METRICS`; a run's main metric is `evaluate.main_metric`, or
its task's default (`src.ml.catalog.main_metric`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from src.ml.catalog import CLASSIFICATION, METRICS, Metric


def better(metric: Metric, candidate: float, incumbent: float, margin: float = 0.0) -> bool:
    """Whether `candidate` beats `incumbent` on `metric` by more than `margin`, in the metric's direction."""
    return candidate > incumbent + margin if metric.higher_is_better else candidate < incumbent - margin


def _as_codes(labels: Any, predictions: Any) -> tuple[np.ndarray, np.ndarray]:
    """Classes as small integer codes over the classes of both.

    The scores are the same; on many rows of text labels scikit-learn's own
    checks would hold several object copies of them.
    """
    classes = list(dict.fromkeys([*pd.unique(pd.Series(labels)), *pd.unique(pd.Series(predictions))]))
    return (
        np.asarray(pd.Categorical(labels, categories=classes).codes),
        np.asarray(pd.Categorical(predictions, categories=classes).codes),
    )


def score(labels: Any, predictions: Any, task: str) -> dict[str, float]:
    """Compute every metric of `task` that applies to these labels.

    Args:
        labels: The true labels (classes, or the true values of a regression).
        predictions: The predictions, in the same order.
        task: `classification` or `regression`.

    Returns:
        One value per metric of `src.ml.catalog.METRICS` for the task (MAPE only
        where the true values hold no zero).
    """
    if task == CLASSIFICATION:
        labels, predictions = _as_codes(labels, predictions)
    else:
        labels, predictions = np.asarray(labels, dtype="float64"), np.asarray(predictions, dtype="float64")
    return {
        name: metric.compute(labels, predictions)
        for name, metric in METRICS.items()
        if metric.task == task and metric.applies(labels)
    }


def score_one(name: str, labels: Any, predictions: Any) -> float:
    """Compute the metric `name` (see `score`).

    Raises:
        ValueError: If the metric is not defined for these labels (MAPE with a zero).
    """
    metric = METRICS[name]
    if metric.task == CLASSIFICATION:
        labels, predictions = _as_codes(labels, predictions)
    else:
        labels, predictions = np.asarray(labels, dtype="float64"), np.asarray(predictions, dtype="float64")
    if not metric.applies(labels):
        raise ValueError(f"metric {name} is not defined for these values ({metric.summary}); choose another")
    return metric.compute(labels, predictions)


def score_model(model: Any, table: pd.DataFrame, target: str, task: str) -> dict[str, float]:
    """Score a model on a labelled table of the rows it takes (see `score`)."""
    return score(table[target], model.predict(table.drop(columns=[target])), task)


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


SAMPLE_COUNT = 24


PREDICT_ROWS = 20_000
"""Rows the model predicts at a time in `evaluate`."""


def evaluate(model: Any, test: pd.DataFrame, target: str, task: str) -> tuple[dict[str, float], pd.Series]:
    """Predict the test table and score the predictions.

    Args:
        model: A fitted model that takes the test table's rows.
        test: The test table, with the label column `target`.
        target: The label column.
        task: `classification` or `regression`.

    Returns:
        The metrics of the task (see `score`) and the predictions.
    """
    labels = test[target]
    # A batch of rows at a time: neither the test table without its labels nor the model's features
    # of a large test table are ever all in memory.
    batches = [
        model.predict(test.iloc[start : start + PREDICT_ROWS].drop(columns=[target]))
        for start in range(0, max(len(test), 1), PREDICT_ROWS)
    ]
    predictions = pd.Series(np.concatenate(batches), index=test.index)
    return score(labels, predictions, task), predictions


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
    same = labels.to_numpy() == predictions.to_numpy()
    chosen = np.flatnonzero(~same)[: count // 2].tolist()
    return chosen + np.flatnonzero(same)[: count - len(chosen)].tolist()
