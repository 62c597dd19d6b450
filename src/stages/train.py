"""Stage train: cross-validate and fit the estimator, save it to models/."""

from __future__ import annotations

from typing import Any

import pandas as pd

from src.config import PATHS, Config, TrainParams
from src.ml.features import Featurizer, estimator_of, with_features
from src.train.models import build_estimator
from src.utils.cli import run_stage
from src.utils.io import atomic_path, read_table, require
from src.utils.mlflow_run import StageResult, mlflow_stage

INPUT_EXAMPLE_ROWS = 5
VALIDATION_FRACTION = 0.1
CURVE_COLUMNS = ["epoch", "loss", "val_accuracy"]


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


def start_from(source: Any, features: pd.DataFrame, labels: pd.Series, params: TrainParams) -> Any:
    """An estimator that starts from `source`'s weights (`init_mode: warm_start`), ready to fit on new data.

    logistic_regression starts from the source's coefficients; random_forest
    keeps the source's trees and grows `n_estimators` more; mlp continues from
    its weights, epoch by epoch.

    Raises:
        ValueError: If the source's classes or input columns differ from the data's.
    """
    import copy

    from sklearn.base import clone

    classes = sorted(map(str, getattr(source, "classes_", [])))
    if classes != sorted(map(str, labels.unique())):
        raise ValueError(
            f"train.init_from's model knows classes {classes}, the data has {sorted(map(str, labels.unique()))}"
        )
    columns = list(getattr(source, "feature_names_in_", []))
    if columns != list(features.columns):
        raise ValueError(f"train.init_from's model takes columns {columns}, the data has {list(features.columns)}")
    source_final = source.steps[-1][1] if hasattr(source, "steps") else source
    if hasattr(source_final, "coefs_"):
        return copy.deepcopy(source)
    model = clone(source)
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    if hasattr(source_final, "coef_"):
        final.set_params(warm_start=True)
        final.coef_, final.intercept_ = source_final.coef_.copy(), source_final.intercept_.copy()
    elif hasattr(source_final, "estimators_"):
        final.set_params(warm_start=True, n_estimators=len(source_final.estimators_) + params.n_estimators)
        final.estimators_ = list(source_final.estimators_)
        for attribute in ("classes_", "n_classes_", "n_outputs_", "n_features_in_", "feature_names_in_"):
            if hasattr(source_final, attribute):
                setattr(final, attribute, getattr(source_final, attribute))
    return model


def train_in_epochs(
    model: Any, features: pd.DataFrame, labels: pd.Series, epochs: int, random_state: int
) -> tuple[Any, pd.DataFrame]:
    """Train `model` with `partial_fit`, one pass over the data per epoch.

    A tenth of the rows is held out to measure the validation accuracy after
    each epoch; the model learns from the rest.

    Returns:
        The model and its learning curve: one row per epoch with `epoch`, `loss`
        (the training loss) and `val_accuracy`.
    """
    import warnings

    import numpy as np
    from sklearn.model_selection import train_test_split

    try:
        fit_x, val_x, fit_y, val_y = train_test_split(
            features, labels, test_size=VALIDATION_FRACTION, stratify=labels, random_state=random_state
        )
    except ValueError:  # a class too small to stratify
        fit_x, val_x, fit_y, val_y = train_test_split(
            features, labels, test_size=VALIDATION_FRACTION, random_state=random_state
        )
    classes = np.unique(labels)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # partial_fit on a model that was fitted with fit
        for epoch in range(1, epochs + 1):
            model.partial_fit(fit_x, fit_y, classes=classes)
            rows.append({"epoch": epoch, "loss": float(model.loss_), "val_accuracy": float(model.score(val_x, val_y))})
    return model, pd.DataFrame(rows, columns=CURVE_COLUMNS)


def resolve_init_from(reference: str, model_name: str) -> str:
    """The model URI `train.init_from` names: a URI as it is, a run id's trained model, or an alias of `model_name`."""
    import re

    if reference.startswith(("models:/", "runs:/")):
        return reference
    if not re.fullmatch(r"[0-9a-f]{32}", reference):
        return f"models:/{model_name}@{reference}"
    from src.service.registry import PromoteError, logged_model_uri
    from src.utils.mlflow_run import ROLE_TAG, import_mlflow

    client = import_mlflow().MlflowClient()
    run = client.get_run(reference)
    if run.data.tags.get(ROLE_TAG) == "stage":
        run = client.get_run(run.data.tags["mlflow.parentRunId"])
    try:
        return logged_model_uri(client, run)
    except PromoteError as error:
        raise ValueError(f"train.init_from={reference}: {error}") from None


def load_source_model(reference: str, model_name: str) -> tuple[Any, str]:
    """The scikit-learn estimator of the model `train.init_from` names (its featurize step left out), and its URI."""
    import mlflow.sklearn

    from src.utils.mlflow_run import import_mlflow

    import_mlflow()
    try:
        uri = resolve_init_from(reference, model_name)
        return estimator_of(mlflow.sklearn.load_model(uri)), uri
    except ValueError:
        raise
    except Exception as error:
        message = str(error).splitlines()[0] if str(error) else ""
        raise ValueError(f"cannot load train.init_from={reference}: {type(error).__name__}: {message}") from None


def fit(
    train: pd.DataFrame, params: TrainParams, target: str, random_state: int, source: Any = None
) -> tuple[Any, dict[str, float], pd.DataFrame]:
    """Cross-validate the configured estimator, then fit it on all training rows.

    Args:
        train: The training table, with the label column `target`.
        params: The `train` section of params.yaml.
        target: The label column.
        random_state: The seed for the estimator and the folds.
        source: The model `train.init_from` names, or None. With `init_mode:
            warm_start` the fit starts from its weights (see `start_from`).

    Returns:
        The fitted estimator, its cross-validation scores and its learning curve
        (one row per epoch for an mlp, trained with `train_in_epochs`; no rows otherwise).

    Raises:
        ValueError: If `source`'s classes or input columns differ from the data's,
            or a class has fewer rows than `train.cv_folds`.
    """
    features, labels = train.drop(columns=[target]), train[target]
    estimator = build_estimator(params, random_state)
    warm = source is not None and params.init_mode == "warm_start"
    start = start_from(source, features, labels, params) if warm else estimator
    scores = cross_validate(estimator, features, labels, params, random_state)
    if params.estimator == "mlp":
        model, curve = train_in_epochs(start, features, labels, params.epochs, random_state)
    else:
        model, curve = start.fit(features, labels), pd.DataFrame(columns=CURVE_COLUMNS)
    return model, scores, curve


def raw_example(rows: int = INPUT_EXAMPLE_ROWS) -> pd.DataFrame:
    """The first rows of the raw table, read without reading the rest: the model's input example."""
    import pyarrow.parquet as pq

    batch = next(pq.ParquetFile(require(PATHS.raw, made_by="data_load")).iter_batches(batch_size=rows))
    return batch.to_pandas()


@mlflow_stage("train")
def main(config: Config) -> StageResult:
    """Fit the estimator on the train table and write models/model.joblib; the CV scores are its metrics.

    The model written and logged is featurize's transformer followed by the
    estimator, so it takes the raw columns data_load writes (its signature and
    input example are raw rows). With `train.init_from` and `init_mode:
    warm_start` the estimator continues from that model's weights. An mlp is
    trained epoch by epoch: its loss and validation accuracy per epoch become the
    run's metric history and reports/learning_curve.csv (a DVC plot; only the
    header for other estimators).
    """
    import joblib

    target = config.data_load.target
    train = read_table(PATHS.train, made_by="data_split")
    example = raw_example().drop(columns=[target])
    featurizer = Featurizer.from_params(config.featurize, config.data_load.pixel_max).fit(example)
    source, tags = None, {}
    if config.train.init_from:
        source, source_uri = load_source_model(config.train.init_from, config.registry.model_name)
        tags = {"init_from": config.train.init_from, "init_from.model_uri": source_uri}
        tags["init_mode"] = config.train.init_mode
    estimator, scores, curve = fit(train, config.train, target, config.base.random_state, source)
    model = with_features(featurizer, estimator)
    with atomic_path(PATHS.model) as temporary:
        joblib.dump(model, temporary)
    with atomic_path(PATHS.learning_curve) as temporary:
        curve.to_csv(temporary, index=False)
    return StageResult(
        metrics=scores,
        model=model,
        # Numbers as floats in the signature, so a caller's integers are taken too.
        model_input_example=example.astype({name: "float64" for name in example.select_dtypes("number").columns}),
        tags=tags,
        history={name: curve[name].tolist() for name in ("loss", "val_accuracy")} if len(curve) else {},
    )


if __name__ == "__main__":
    run_stage(main)
