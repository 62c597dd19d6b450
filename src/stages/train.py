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


def continue_from(source: Any, train: pd.DataFrame, params: TrainParams, target: str) -> Any:
    """Fit a copy of `source` on `train`, starting from its weights (`init_mode: warm_start`).

    logistic_regression starts from the source's coefficients; random_forest
    keeps the source's trees and grows `n_estimators` more.

    Raises:
        ValueError: If the source's classes or input columns differ from the train table's.
    """
    from sklearn.base import clone

    features, labels = train.drop(columns=[target]), train[target]
    classes = sorted(map(str, getattr(source, "classes_", [])))
    if classes != sorted(map(str, labels.unique())):
        raise ValueError(
            f"train.init_from's model knows classes {classes}, the data has {sorted(map(str, labels.unique()))}"
        )
    columns = list(getattr(source, "feature_names_in_", []))
    if columns != list(features.columns):
        raise ValueError(f"train.init_from's model takes columns {columns}, the data has {list(features.columns)}")
    model = clone(source)
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    source_final = source.steps[-1][1] if hasattr(source, "steps") else source
    if hasattr(final, "coef_") or hasattr(source_final, "coef_"):
        final.set_params(warm_start=True)
        final.coef_, final.intercept_ = source_final.coef_.copy(), source_final.intercept_.copy()
    elif hasattr(source_final, "estimators_"):
        final.set_params(warm_start=True, n_estimators=len(source_final.estimators_) + params.n_estimators)
        final.estimators_ = list(source_final.estimators_)
        for attribute in ("classes_", "n_classes_", "n_outputs_", "n_features_in_", "feature_names_in_"):
            if hasattr(source_final, attribute):
                setattr(final, attribute, getattr(source_final, attribute))
    return model.fit(features, labels)


def load_source_model(uri: str) -> Any:
    """The scikit-learn model at `uri` (train.init_from), through MLflow."""
    import mlflow.sklearn

    from src.utils.mlflow_run import import_mlflow

    import_mlflow()
    try:
        return mlflow.sklearn.load_model(uri)
    except Exception as error:
        raise ValueError(
            f"cannot load train.init_from={uri}: {type(error).__name__}: {str(error).splitlines()[0]}"
        ) from None


@mlflow_stage("train")
def main(config: Config) -> StageResult:
    """Fit the model on the train table and write models/model.joblib; the CV scores are its metrics.

    With `train.init_from` and `init_mode: warm_start` the model continues from that model's weights.
    """
    import joblib

    target = config.data_load.target
    train = read_table(PATHS.train, made_by="data_split")
    model, scores = fit(train, config.train, target, config.base.random_state)
    tags = {}
    if config.train.init_from:
        source = load_source_model(config.train.init_from)
        tags = {"init_from": config.train.init_from, "init_mode": config.train.init_mode}
        if config.train.init_mode == "warm_start":
            model = continue_from(source, train, config.train, target)
    with atomic_path(PATHS.model) as temporary:
        joblib.dump(model, temporary)
    return StageResult(
        metrics=scores,
        model=model,
        model_input_example=train.drop(columns=[target]).head(INPUT_EXAMPLE_ROWS),
        tags=tags,
    )


if __name__ == "__main__":
    run_stage(main)
