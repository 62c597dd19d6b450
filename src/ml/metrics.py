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

    # The same scores on small integer codes of the classes: on many rows of text labels
    # scikit-learn's own checks would hold several object copies of them.
    classes = list(dict.fromkeys([*pd.unique(pd.Series(labels)), *pd.unique(pd.Series(predictions))]))
    labels = pd.Categorical(labels, categories=classes).codes
    predictions = pd.Categorical(predictions, categories=classes).codes
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


PREDICT_ROWS = 20_000
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
    labels = test[target]
    # A batch of rows at a time: neither the test table without its labels nor the model's features
    # of a large test table are ever all in memory.
    batches = [
        model.predict(test.iloc[start : start + PREDICT_ROWS].drop(columns=[target]))
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
    same = labels.to_numpy() == predictions.to_numpy()
    chosen = np.flatnonzero(~same)[: count // 2].tolist()
    return chosen + np.flatnonzero(same)[: count - len(chosen)].tolist()
