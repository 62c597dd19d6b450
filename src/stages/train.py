"""Stage train: cross-validate and fit the estimator, save it to models/."""

from __future__ import annotations

from typing import Any

import pandas as pd

from src.config import PATHS, Config, TrainParams
from src.train.models import build_estimator
from src.utils.cli import run_stage
from src.utils.io import atomic_path, read_table
from src.utils.mlflow_run import StageResult, mlflow_stage

INPUT_EXAMPLE_ROWS = 5


def cross_validate(
    estimator: Any, features: pd.DataFrame, labels: pd.Series, params: TrainParams, random_state: int
) -> dict[str, float]:
    """Score `estimator` with stratified k-fold cross-validation on the training data.

    Args:
        estimator: An unfitted estimator.
        features: The training features.
        labels: The training labels.
        params: The `train` section of params.yaml (`cv_folds`).
        random_state: The seed of the fold shuffle.

    Returns:
        `cv_accuracy_mean` and `cv_accuracy_std` over the folds.

    Raises:
        ValueError: If a class has fewer training rows than `train.cv_folds`.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    smallest = labels.value_counts().min()
    if smallest < params.cv_folds:
        raise ValueError(
            f"train.cv_folds is {params.cv_folds} but a class has only {smallest} training rows; lower train.cv_folds"
        )
    folds = StratifiedKFold(n_splits=params.cv_folds, shuffle=True, random_state=random_state)
    scores = cross_val_score(estimator, features, labels, cv=folds, scoring="accuracy")
    return {"cv_accuracy_mean": float(scores.mean()), "cv_accuracy_std": float(scores.std())}


def fit(train: pd.DataFrame, params: TrainParams, target: str, random_state: int) -> tuple[Any, dict[str, float]]:
    """Cross-validate the configured estimator, then fit it on all training rows.

    Args:
        train: The training table, with the label column `target`.
        params: The `train` section of params.yaml.
        target: The label column.
        random_state: The seed for the estimator and the folds.

    Returns:
        The fitted estimator and its cross-validation scores.
    """
    features, labels = train.drop(columns=[target]), train[target]
    estimator = build_estimator(params, random_state)
    scores = cross_validate(estimator, features, labels, params, random_state)
    return estimator.fit(features, labels), scores


@mlflow_stage("train")
def main(config: Config) -> StageResult:
    """Fit the model on the train table and write models/model.joblib; the CV scores are its metrics."""
    import joblib

    target = config.data_load.target
    train = read_table(PATHS.train, made_by="data_split")
    model, scores = fit(train, config.train, target, config.base.random_state)
    with atomic_path(PATHS.model) as temporary:
        joblib.dump(model, temporary)
    return StageResult(
        metrics=scores,
        model=model,
        model_input_example=train.drop(columns=[target]).head(INPUT_EXAMPLE_ROWS),
    )


if __name__ == "__main__":
    run_stage(main)
