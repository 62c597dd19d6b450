"""The model train fits: the encoder and the estimator params.yaml names, cross-validated and fitted, afresh or on.

Which estimators exist, what tasks they serve, what their input needs and how
they continue from a model are declared in `src.ml.catalog`; this module only
reads those declarations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd

from src.ml.catalog import CLASSIFICATION, estimator_for
from src.ml.encoding import TableEncoder
from src.ml.metrics import score_one

if TYPE_CHECKING:
    from src.config import TrainParams

INPUT_EXAMPLE_ROWS = 5

VALIDATION_FRACTION = 0.1

CURVE_COLUMNS = ["epoch", "loss", "val_score"]
"""The learning curve of an estimator trained in epochs: its training loss and its own score on held-out rows."""


def build_model(params: TrainParams, task: str, random_state: int) -> Any:
    """Return the unfitted model: the encoder the estimator declares it needs, then the estimator.

    Args:
        params: The `train` section of params.yaml (`estimator` and its knobs).
        task: `classification` or `regression`.
        random_state: The seed for everything that draws random numbers.
    """
    from sklearn.pipeline import Pipeline

    estimator = estimator_for(params.estimator, task)
    return Pipeline(
        [
            ("encode", TableEncoder.for_estimator(estimator.inputs, task, random_state)),
            ("estimate", estimator.build(task, params.knobs, random_state)),
        ]
    )


def cross_validate(
    model: Any, features: pd.DataFrame, labels: pd.Series, task: str, metric: str, folds: int, random_state: int
) -> dict[str, float]:
    """Score `model` by k-fold cross-validation on the training rows, on the run's main metric.

    The encoder is fitted inside each fold, on that fold's training rows only.
    Classification folds keep the class proportions (stratified).

    Args:
        model: An unfitted model (see `build_model`).
        features: The training features.
        labels: The training labels.
        task: `classification` or `regression`.
        metric: The main metric's name.
        folds: `train.cv_folds`.
        random_state: The seed of the fold shuffle.

    Returns:
        `cv_<metric>_mean` and `cv_<metric>_std` over the folds.

    Raises:
        ValueError: If a class (or a regression's table) has fewer training rows than `train.cv_folds`.
    """
    import numpy as np
    from joblib import Parallel, delayed
    from sklearn.base import clone
    from sklearn.model_selection import KFold, StratifiedKFold

    if task == CLASSIFICATION:
        smallest = labels.value_counts().min()
        if smallest < folds:
            raise ValueError(
                f"train.cv_folds is {folds} but a class has only {smallest} training rows; lower train.cv_folds"
            )
        splitter: Any = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
    else:
        if len(labels) < folds:
            raise ValueError(
                f"train.cv_folds is {folds} but the training table has only {len(labels)} rows; lower train.cv_folds"
            )
        splitter = KFold(n_splits=folds, shuffle=True, random_state=random_state)
    # The folds go through joblib: one after another by default, on a Dask cluster inside
    # `src.cluster.parallel_work`; the scores are the same either way.
    scores = np.array(
        Parallel()(
            delayed(fold_score)(clone(model), features, labels, train_rows, test_rows, metric)
            for train_rows, test_rows in splitter.split(features, labels)
        )
    )
    return {f"cv_{metric}_mean": float(scores.mean()), f"cv_{metric}_std": float(scores.std())}


def fold_score(
    model: Any, features: pd.DataFrame, labels: pd.Series, train_rows: Any, test_rows: Any, metric: str
) -> float:
    """Fit `model` on the train rows of one fold and return `metric` on the fold's test rows."""
    model.fit(features.iloc[train_rows], labels.iloc[train_rows])
    return score_one(metric, labels.iloc[test_rows], model.predict(features.iloc[test_rows]))


def start_from(source: Any, features: pd.DataFrame, labels: pd.Series, params: TrainParams, task: str) -> Any:
    """A model that continues from `source` (`init_mode: warm_start`), ready to fit on new rows.

    The source's encoder is kept as it was fitted, so the estimator sees the
    columns it learnt (a category it never saw is scored as missing); the
    estimator continues as its declaration says.

    Args:
        source: What follows the featurizer in the model `train.init_from` names: its encoder and estimator.
        features: The new training features.
        labels: The new training labels.
        params: The `train` section of params.yaml.
        task: The run's task.

    Raises:
        ValueError: One line: the estimator cannot continue for this task, or the
            source's estimator, classes or input columns differ from the data's.
    """
    from sklearn.pipeline import Pipeline

    estimator = estimator_for(params.estimator, task)
    if estimator.warm_start is None or task not in estimator.warm_start_tasks:
        raise ValueError(
            f"train.estimator {estimator.name} cannot continue from a model for {task}; set train.init_mode: refit"
        )
    steps = getattr(source, "steps", [])
    if len(steps) != 2 or not isinstance(steps[0][1], TableEncoder):
        raise ValueError(
            "train.init_from's model has no encoder step (it was trained by an older version of the pipeline); "
            "set train.init_mode: refit"
        )
    encoder, source_estimator = steps[0][1], steps[1][1]
    if task == CLASSIFICATION:
        known = sorted(map(str, getattr(source_estimator, "classes_", [])))
        if known != sorted(map(str, labels.unique())):
            raise ValueError(
                f"train.init_from's model knows classes {known}, the data has {sorted(map(str, labels.unique()))}"
            )
    columns = [str(name) for name in encoder.feature_names_in_]
    if columns != [str(name) for name in features.columns]:
        raise ValueError(f"train.init_from's model takes columns {columns}, the data has {list(features.columns)}")
    fresh = estimator.build(task, params.knobs, 0)
    if type(source_estimator) is not type(fresh):
        raise ValueError(
            f"train.init_from's model is a {type(source_estimator).__name__}, train.estimator {estimator.name} "
            f"builds a {type(fresh).__name__}; set train.init_mode: refit or the estimator of that model"
        )
    return Pipeline([("encode", encoder), ("estimate", estimator.warm_start(source_estimator, params.knobs))])


def train_in_epochs(
    model: Any,
    features: pd.DataFrame,
    labels: pd.Series,
    epochs: int,
    task: str,
    random_state: int,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[Any, pd.DataFrame]:
    """Train `model` (encoder, then an estimator with `partial_fit`), one pass over the data per epoch.

    A tenth of the rows is held out to measure the estimator's own score (accuracy,
    or R² for a regression) after each epoch; the model learns from the rest. The
    encoder is fitted on those rows first, unless it was fitted already (a warm
    start keeps its source's). `on_epoch(epoch, metrics)` is called after each
    epoch with its `loss` and `val_score`.

    Returns:
        The model and its learning curve: one row per epoch with `epoch`, `loss`
        (the training loss) and `val_score`.
    """
    import warnings

    import numpy as np
    from sklearn.model_selection import train_test_split
    from sklearn.utils.validation import check_is_fitted

    stratify = labels if task == CLASSIFICATION else None
    try:
        fit_x, val_x, fit_y, val_y = train_test_split(
            features, labels, test_size=VALIDATION_FRACTION, stratify=stratify, random_state=random_state
        )
    except ValueError:  # a class too small to stratify
        fit_x, val_x, fit_y, val_y = train_test_split(
            features, labels, test_size=VALIDATION_FRACTION, random_state=random_state
        )
    encoder, estimator = model.steps[0][1], model.steps[-1][1]
    try:
        check_is_fitted(encoder, "transformer_")
        encoded = encoder.transform(fit_x)
    except Exception:  # a fresh encoder: fitted on the rows the estimator learns from
        encoded = encoder.fit_transform(fit_x, fit_y)
    validation = encoder.transform(val_x)
    extra = {"classes": np.unique(labels)} if task == CLASSIFICATION else {}
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # partial_fit on a model that was fitted with fit
        for epoch in range(1, epochs + 1):
            estimator.partial_fit(encoded, fit_y, **extra)
            metrics = {"loss": float(estimator.loss_), "val_score": float(estimator.score(validation, val_y))}
            rows.append({"epoch": epoch, **metrics})
            if on_epoch is not None:
                on_epoch(epoch, metrics)
    return model, pd.DataFrame(rows, columns=CURVE_COLUMNS)


def fit(
    features: pd.DataFrame,
    labels: pd.Series,
    params: TrainParams,
    task: str,
    metric: str,
    random_state: int,
    source: Any = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[Any, dict[str, float], pd.DataFrame]:
    """Cross-validate the configured model, then fit it on all training rows.

    Args:
        features: The training features (featurize's output: numbers and text).
        labels: The training labels.
        params: The `train` section of params.yaml.
        task: `classification` or `regression`.
        metric: The main metric, which the cross-validation scores.
        random_state: The seed for the encoder, the estimator and the folds.
        source: What follows the featurizer in the model `train.init_from` names, or None.
            With `init_mode: warm_start` the fit continues from it (see `start_from`).
        on_epoch: Called after each epoch of an estimator trained in epochs.

    Returns:
        The fitted model (encoder and estimator), its cross-validation scores and
        its learning curve (one row per epoch for an estimator trained in epochs; no rows otherwise).

    Raises:
        ValueError: One line: the estimator does not serve the task or cannot
            continue from the source, the source's classes or input columns differ
            from the data's, or a class has fewer rows than `train.cv_folds`.
    """
    estimator = estimator_for(params.estimator, task)
    model = build_model(params, task, random_state)
    warm = source is not None and params.init_mode == "warm_start"
    start = start_from(source, features, labels, params, task) if warm else model
    scores = cross_validate(model, features, labels, task, metric, params.cv_folds, random_state)
    if estimator.epochs is not None:
        epochs = estimator.epochs(params.knobs)
        fitted, curve = train_in_epochs(start, features, labels, epochs, task, random_state, on_epoch)
        return fitted, scores, curve
    if warm:
        encoder, continued = start.steps[0][1], start.steps[-1][1]
        continued.fit(encoder.transform(features), labels)
        return start, scores, pd.DataFrame(columns=CURVE_COLUMNS)
    return start.fit(features, labels), scores, pd.DataFrame(columns=CURVE_COLUMNS)
