"""The models: an estimator built from params.yaml, cross-validated and fitted, afresh or from a model's weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from src.config import TrainParams


def build_estimator(params: TrainParams, random_state: int) -> Any:
    """Return the unfitted scikit-learn estimator named by `params.estimator`.

    Args:
        params: The `train` section of params.yaml.
        random_state: The seed for estimators that draw random numbers.

    Returns:
        `logistic_regression`: standard scaling then LogisticRegression;
        `random_forest`: a RandomForestClassifier; `mlp`: an MLPClassifier with one
        hidden layer (trained in epochs by the train stage).
    """
    if params.estimator == "logistic_regression":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(
            StandardScaler(),
            LogisticRegression(C=params.C, max_iter=params.max_iter, random_state=random_state),
        )
    if params.estimator == "mlp":
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(
            hidden_layer_sizes=(params.hidden_units,),
            learning_rate_init=params.learning_rate,
            max_iter=params.epochs,
            random_state=random_state,
        )
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=params.n_estimators,
        max_depth=params.max_depth,
        random_state=random_state,
        n_jobs=None,  # one job, or the trees spread over a Dask cluster (`src.cluster.parallel_work`)
    )


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
    import numpy as np
    from joblib import Parallel, delayed
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    smallest = labels.value_counts().min()
    if smallest < params.cv_folds:
        raise ValueError(
            f"train.cv_folds is {params.cv_folds} but a class has only {smallest} training rows; lower train.cv_folds"
        )
    folds = StratifiedKFold(n_splits=params.cv_folds, shuffle=True, random_state=random_state)
    # scikit-learn's cross_val_score holds a fold's train and test rows at once; here the test rows
    # are taken only once the fit is done, so a large table costs one fold less.
    # The folds go through joblib: one after another by default, on a Dask cluster inside
    # `src.cluster.parallel_work`; the scores are the same either way.
    matrix, classes = features.to_numpy(), labels.to_numpy()
    scores = np.array(
        Parallel()(
            delayed(fold_accuracy)(clone(estimator), matrix, classes, train_rows, test_rows)
            for train_rows, test_rows in folds.split(matrix, classes)
        )
    )
    return {"cv_accuracy_mean": float(scores.mean()), "cv_accuracy_std": float(scores.std())}


def fold_accuracy(model: Any, matrix: Any, classes: Any, train_rows: Any, test_rows: Any) -> float:
    """Fit `model` on the train rows of one fold and return its accuracy on the fold's test rows."""
    from sklearn.metrics import accuracy_score

    model.fit(matrix[train_rows], classes[train_rows])
    return float(accuracy_score(classes[test_rows], model.predict(matrix[test_rows])))


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
    model: Any,
    features: pd.DataFrame,
    labels: pd.Series,
    epochs: int,
    random_state: int,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[Any, pd.DataFrame]:
    """Train `model` with `partial_fit`, one pass over the data per epoch.

    A tenth of the rows is held out to measure the validation accuracy after
    each epoch; the model learns from the rest. `on_epoch(epoch, metrics)` is
    called after each epoch with its `loss` and `val_accuracy`.

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
            metrics = {"loss": float(model.loss_), "val_accuracy": float(model.score(val_x, val_y))}
            rows.append({"epoch": epoch, **metrics})
            if on_epoch is not None:
                on_epoch(epoch, metrics)
    return model, pd.DataFrame(rows, columns=CURVE_COLUMNS)


def fit(
    features: pd.DataFrame,
    labels: pd.Series,
    params: TrainParams,
    random_state: int,
    source: Any = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[Any, dict[str, float], pd.DataFrame]:
    """Cross-validate the configured estimator, then fit it on all training rows.

    Args:
        features: The training features, best over one C-ordered float array (see
            `src.io.read_features`): nothing is copied beyond what each fold and the
            estimator itself take.
        labels: The training labels.
        params: The `train` section of params.yaml.
        random_state: The seed for the estimator and the folds.
        source: The model `train.init_from` names, or None. With `init_mode:
            warm_start` the fit starts from its weights (see `start_from`).
        on_epoch: Called after each epoch of an mlp with the epoch and its metrics.

    Returns:
        The fitted estimator, its cross-validation scores and its learning curve
        (one row per epoch for an mlp, trained with `train_in_epochs`; no rows otherwise).

    Raises:
        ValueError: If `source`'s classes or input columns differ from the data's,
            or a class has fewer rows than `train.cv_folds`.
    """
    estimator = build_estimator(params, random_state)
    warm = source is not None and params.init_mode == "warm_start"
    start = start_from(source, features, labels, params) if warm else estimator
    scores = cross_validate(estimator, features, labels, params, random_state)
    if params.estimator == "mlp":
        model, curve = train_in_epochs(start, features, labels, params.epochs, random_state, on_epoch)
    else:
        model, curve = start.fit(features, labels), pd.DataFrame(columns=CURVE_COLUMNS)
    return model, scores, curve
