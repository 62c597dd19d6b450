"""The model factory: an unfitted estimator from the `train` section of params.yaml."""

from __future__ import annotations

from typing import Any

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
        n_jobs=1,
    )
