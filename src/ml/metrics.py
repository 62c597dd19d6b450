"""The held-out metrics: one computation for evaluate, `make promote`, `make retrain` and the sweep ranking."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from src.config import METRICS


def score(labels: pd.Series, predictions: Any) -> dict[str, float]:
    """Compute accuracy and the macro-averaged F1, precision and recall.

    Args:
        labels: The true labels.
        predictions: The predicted labels, in the same order.

    Returns:
        One value per name of `src.config.METRICS`.
    """
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    scores = {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1_macro": float(f1_score(labels, predictions, average="macro", zero_division=0)),
        "precision_macro": float(precision_score(labels, predictions, average="macro", zero_division=0)),
        "recall_macro": float(recall_score(labels, predictions, average="macro", zero_division=0)),
    }
    return {name: scores[name] for name in METRICS}


def score_model(model: Any, table: pd.DataFrame, target: str) -> dict[str, float]:
    """Score a model on a labelled table of the rows it takes (see `score`)."""
    return score(table[target], model.predict(table.drop(columns=[target])))


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


PREDICT_ROWS = 100_000
"""Rows the model predicts at a time in `evaluate`."""


def evaluate(model: Any, test: pd.DataFrame, target: str) -> tuple[dict[str, float], pd.DataFrame, pd.Series]:
    """Predict the test table and score the predictions.

    Args:
        model: A fitted estimator.
        test: The test table, with the label column `target`.
        target: The label column.

    Returns:
        The metrics (see `score`), the confusion matrix and the predictions.
    """
    labels, features = test[target], test.drop(columns=[target])
    # A batch of rows at a time: the model's features of a large test table are never all in memory.
    batches = [
        model.predict(features.iloc[start : start + PREDICT_ROWS])
        for start in range(0, max(len(test), 1), PREDICT_ROWS)
    ]
    predictions = pd.Series(np.concatenate(batches), index=test.index)
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
