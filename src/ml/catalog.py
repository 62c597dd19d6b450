"""The science contract: the tasks, estimators, metrics and data sources of this project, each declared once.

The machinery reads these declarations and names none of its own: params.yaml
is validated against each estimator's knobs, training builds the estimator and
warm-starts it as declared here, evaluation computes the metrics of the run's
task, the sweep, promote, retrain and `make report` rank by the main metric in
its declared direction, and the docs' reference lists what is here.

Adding an estimator is one `Estimator` in ESTIMATORS plus its knobs under
`train.<name>` in params.yaml; a metric is one `Metric` in METRICS; a dataset
generated in code is one `Source` in SOURCES. This module imports no
scientific library at the top (it is read by every command); each builder
imports what it builds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)
"""What a pipeline learns: classes (text labels, or a few whole numbers) or a number."""

AUTO = "auto"
"""`base.task` and `evaluate.main_metric`: chosen from the data (the task) or by the task (the main metric)."""


class Section(BaseModel):
    """Base of every params.yaml section: unknown keys, missing keys and loose types are errors.

    params.yaml holds every key (the template's file holds the defaults), so what
    a run used is always written down.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --- Estimators -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    """What an estimator needs of its input columns; the encoder in front of it provides it.

    Attributes:
        categories: How text categories reach it: `native` (a pandas category column, which
            it splits on as categories), `ordinal` (one number per category) or `one_hot` (a
            0/1 column per frequent category).
        missing_values: Whether it takes missing numbers as they are (else they are imputed
            with the median and flagged in a column of their own).
        scaled: Whether numbers must be standardised (mean 0, standard deviation 1).
    """

    categories: Literal["native", "ordinal", "one_hot"]
    missing_values: bool
    scaled: bool


@dataclass(frozen=True)
class Estimator:
    """An estimator the pipeline can train: what it is, what it serves, its knobs and how it continues.

    Attributes:
        name: Its name in `train.estimator`, and the key of its knobs (`train.<name>`).
        summary: One line for the docs and params.yaml.
        knobs: The Section of its knobs under `train.<name>`.
        tasks: The tasks it serves.
        build: `(task, knobs, random_state)` -> an unfitted scikit-learn estimator.
        inputs: What it needs of its input columns.
        warm_start: `(source, knobs)` -> the source estimator (a fitted copy) set to continue
            training on new data; None if it cannot.
        warm_start_tasks: The tasks for which `warm_start` works.
        epochs: `knobs` -> the number of passes over the data, for an estimator trained in
            epochs with `partial_fit` (its loss and validation score logged per epoch); None
            for one fitted in one call.
    """

    name: str
    summary: str
    knobs: type[Section]
    tasks: tuple[str, ...]
    build: Callable[[str, Any, int], Any]
    inputs: Inputs
    warm_start: Callable[[Any, Any], Any] | None = None
    warm_start_tasks: tuple[str, ...] = ()
    epochs: Callable[[Any], int] | None = None


class HistGradientBoostingKnobs(Section):
    """`train.hist_gradient_boosting`: gradient-boosted trees over binned features."""

    learning_rate: float = Field(gt=0, le=1, description="Shrinkage of each tree's contribution.")
    max_iter: int = Field(
        ge=1, le=10_000, description="Boosting iterations (with `init_from`, iterations added to the source's)."
    )
    max_leaf_nodes: int = Field(ge=2, le=4096, description="Leaves of each tree.")
    min_samples_leaf: int = Field(ge=1, description="Rows a leaf must hold at least.")


def _hist_gradient_boosting(task: str, knobs: HistGradientBoostingKnobs, random_state: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    kind = HistGradientBoostingClassifier if task == CLASSIFICATION else HistGradientBoostingRegressor
    return kind(
        learning_rate=knobs.learning_rate,
        max_iter=knobs.max_iter,
        max_leaf_nodes=knobs.max_leaf_nodes,
        min_samples_leaf=knobs.min_samples_leaf,
        categorical_features="from_dtype",
        random_state=random_state,
    )


def _continue_boosting(source: Any, knobs: HistGradientBoostingKnobs) -> Any:
    import copy

    model = copy.deepcopy(source)
    model.set_params(warm_start=True, max_iter=source.n_iter_ + knobs.max_iter, early_stopping=False)
    return model


class LinearKnobs(Section):
    """`train.linear`: logistic regression (classification) or ridge regression (regression)."""

    C: float = Field(
        gt=0, description="Inverse regularisation strength: LogisticRegression's C; Ridge's alpha is 1 / C."
    )
    max_iter: int = Field(ge=1, description="Solver iterations (classification).")


def _linear(task: str, knobs: LinearKnobs, random_state: int) -> Any:
    if task == CLASSIFICATION:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=knobs.C, max_iter=knobs.max_iter, random_state=random_state)
    from sklearn.linear_model import Ridge

    return Ridge(alpha=1 / knobs.C)


def _continue_from_coefficients(source: Any, knobs: LinearKnobs) -> Any:
    import copy

    model = copy.deepcopy(source)
    model.set_params(warm_start=True)  # the next fit starts from the source's coefficients
    return model


class RandomForestKnobs(Section):
    """`train.random_forest`: a forest of decision trees."""

    n_estimators: int = Field(ge=1, description="Trees (with `init_from`, trees added to the source's).")
    max_depth: int | None = Field(ge=1, description="Tree depth (null: unlimited).")
    min_samples_leaf: int = Field(ge=1, description="Rows a leaf must hold at least.")


def _random_forest(task: str, knobs: RandomForestKnobs, random_state: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    kind = RandomForestClassifier if task == CLASSIFICATION else RandomForestRegressor
    return kind(
        n_estimators=knobs.n_estimators,
        max_depth=knobs.max_depth,
        min_samples_leaf=knobs.min_samples_leaf,
        random_state=random_state,
        n_jobs=None,  # one job, or the trees spread over a Dask cluster (`src.cluster.parallel_work`)
    )


def _grow_more_trees(source: Any, knobs: RandomForestKnobs) -> Any:
    import copy

    model = copy.deepcopy(source)
    model.set_params(warm_start=True, n_estimators=len(source.estimators_) + knobs.n_estimators)
    return model


class MlpKnobs(Section):
    """`train.mlp`: a neural network with one hidden layer, trained in epochs."""

    hidden_units: int = Field(ge=1, le=10_000, description="Units of its hidden layer.")
    learning_rate: float = Field(gt=0, le=1, description="Initial learning rate (adam).")
    epochs: int = Field(
        ge=1,
        le=10_000,
        description="Passes over the training data; the loss and validation score are logged per epoch.",
    )


def _mlp(task: str, knobs: MlpKnobs, random_state: int) -> Any:
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    settings = {
        "hidden_layer_sizes": (knobs.hidden_units,),
        "learning_rate_init": knobs.learning_rate,
        "max_iter": knobs.epochs,
        "random_state": random_state,
    }
    if task == CLASSIFICATION:
        return MLPClassifier(**settings)
    from src.ml.targets import ScaledTarget

    return ScaledTarget(MLPRegressor(**settings))  # a network learns a standardised target


def _continue_epochs(source: Any, knobs: MlpKnobs) -> Any:
    import copy

    return copy.deepcopy(source)  # partial_fit goes on from its weights


ESTIMATORS: dict[str, Estimator] = {
    estimator.name: estimator
    for estimator in (
        Estimator(
            name="hist_gradient_boosting",
            summary="gradient-boosted trees; takes missing values and categories as they are (the default)",
            knobs=HistGradientBoostingKnobs,
            tasks=TASKS,
            build=_hist_gradient_boosting,
            inputs=Inputs(categories="native", missing_values=True, scaled=False),
            warm_start=_continue_boosting,
            warm_start_tasks=TASKS,
        ),
        Estimator(
            name="linear",
            summary="logistic regression (classification) or ridge regression (regression), on scaled inputs",
            knobs=LinearKnobs,
            tasks=TASKS,
            build=_linear,
            inputs=Inputs(categories="one_hot", missing_values=False, scaled=True),
            warm_start=_continue_from_coefficients,
            warm_start_tasks=(CLASSIFICATION,),
        ),
        Estimator(
            name="random_forest",
            summary="a random forest of decision trees",
            knobs=RandomForestKnobs,
            tasks=TASKS,
            build=_random_forest,
            inputs=Inputs(categories="ordinal", missing_values=True, scaled=False),
            warm_start=_grow_more_trees,
            warm_start_tasks=TASKS,
        ),
        Estimator(
            name="mlp",
            summary="a neural network with one hidden layer, trained in epochs",
            knobs=MlpKnobs,
            tasks=TASKS,
            build=_mlp,
            inputs=Inputs(categories="one_hot", missing_values=False, scaled=True),
            warm_start=_continue_epochs,
            warm_start_tasks=TASKS,
            epochs=lambda knobs: knobs.epochs,
        ),
    )
}


# --- Metrics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A held-out metric: which task it scores, which way is better, and how it is computed.

    Attributes:
        name: Its name in reports/metrics.json, MLflow and `evaluate.main_metric`.
        task: The task it scores.
        higher_is_better: True when a higher value is better (accuracy), False when lower is (RMSE).
        compute: `(true values, predictions)` -> the value; classes come as small integer codes.
        applies: `true values` -> whether the metric is defined for them (MAPE: no zero).
        summary: One line for the docs.
    """

    name: str
    task: str
    higher_is_better: bool
    compute: Callable[[Any, Any], float]
    summary: str
    applies: Callable[[Any], bool] = field(default=lambda values: True)

    @property
    def direction(self) -> str:
        """`higher` or `lower`: which way is better, as the messages and tags say it."""
        return "higher" if self.higher_is_better else "lower"


def _accuracy(labels: Any, predictions: Any) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(labels, predictions))


def _macro(score: str) -> Callable[[Any, Any], float]:
    def compute(labels: Any, predictions: Any) -> float:
        import sklearn.metrics

        function = getattr(sklearn.metrics, f"{score}_score")
        return float(function(labels, predictions, average="macro", zero_division=0))

    return compute


def _rmse(values: Any, predictions: Any) -> float:
    from sklearn.metrics import root_mean_squared_error

    return float(root_mean_squared_error(values, predictions))


def _mae(values: Any, predictions: Any) -> float:
    from sklearn.metrics import mean_absolute_error

    return float(mean_absolute_error(values, predictions))


def _r2(values: Any, predictions: Any) -> float:
    from sklearn.metrics import r2_score

    return float(r2_score(values, predictions))


def _mape(values: Any, predictions: Any) -> float:
    from sklearn.metrics import mean_absolute_percentage_error

    return float(mean_absolute_percentage_error(values, predictions))


def _no_zero(values: Any) -> bool:
    return bool((values != 0).all())


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric(
            name="accuracy",
            task=CLASSIFICATION,
            higher_is_better=True,
            compute=_accuracy,
            summary="share of rows whose class is right",
        ),
        Metric(
            name="f1_macro",
            task=CLASSIFICATION,
            higher_is_better=True,
            compute=_macro("f1"),
            summary="F1 of each class, averaged (every class counts alike)",
        ),
        Metric(
            name="precision_macro",
            task=CLASSIFICATION,
            higher_is_better=True,
            compute=_macro("precision"),
            summary="precision of each class, averaged",
        ),
        Metric(
            name="recall_macro",
            task=CLASSIFICATION,
            higher_is_better=True,
            compute=_macro("recall"),
            summary="recall of each class, averaged",
        ),
        Metric(
            name="rmse",
            task=REGRESSION,
            higher_is_better=False,
            compute=_rmse,
            summary="root mean squared error, in the target's unit",
        ),
        Metric(
            name="mae",
            task=REGRESSION,
            higher_is_better=False,
            compute=_mae,
            summary="mean absolute error, in the target's unit",
        ),
        Metric(
            name="r2",
            task=REGRESSION,
            higher_is_better=True,
            compute=_r2,
            summary="share of the target's variance explained (1: perfect, 0: no better than the mean)",
        ),
        Metric(
            name="mape",
            task=REGRESSION,
            higher_is_better=False,
            compute=_mape,
            summary="mean absolute percentage error, where the target has no zero",
            applies=_no_zero,
        ),
    )
}

MAIN_METRICS = {CLASSIFICATION: "accuracy", REGRESSION: "rmse"}
"""The main metric of each task when `evaluate.main_metric` is `auto`."""


MAX_PRODUCTS = 500
"""The most `<a>_x_<b>` columns featurize's pairwise products may add (a wide table would explode)."""


# --- Data sources made in code ------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A dataset made in code: bundled with scikit-learn, or generated.

    A user's CSV, Parquet file or image folder under data/external/ needs no
    declaration: `data_load.source` names it.

    Attributes:
        name: Its name in `data_load.source`.
        summary: One line for the docs.
        load: `(data_load params, random_state)` -> one labelled table, the label column
            named `data_load.target`.
        image_side: For images made in code: the side of the square image, in pixels.
        pixel_max: For images: the largest value a pixel takes.
    """

    name: str
    summary: str
    load: Callable[[Any, int], Any]
    image_side: int | None = None
    pixel_max: int = 255


def _bundled(name: str) -> Callable[[Any, int], Any]:
    def load(params: Any, random_state: int) -> Any:
        from src.ml.sources import load_bundled

        return load_bundled(name, params.target)

    return load


def _synthetic(params: Any, random_state: int) -> Any:
    from src.ml.sources import make_synthetic

    return make_synthetic(params.synthetic_rows, params.synthetic_features, params.target, random_state)


SYNTHETIC = "synthetic"

SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        Source(name="iris", summary="150 iris flowers, 4 measurements, 3 species", load=_bundled("iris")),
        Source(name="wine", summary="178 wines, 13 measurements, 3 cultivars", load=_bundled("wine")),
        Source(
            name="breast_cancer", summary="569 tumours, 30 measurements, 2 diagnoses", load=_bundled("breast_cancer")
        ),
        Source(
            name="digits",
            summary="1,797 handwritten digits as 8x8 images",
            load=_bundled("digits"),
            image_side=8,
            pixel_max=16,
        ),
        Source(
            name="diabetes",
            summary="442 patients, 10 measurements, disease progression a year on (a regression)",
            load=_bundled("diabetes"),
        ),
        Source(
            name=SYNTHETIC,
            summary="generated: `synthetic_rows` x `synthetic_features` numbers, 3 classes",
            load=_synthetic,
        ),
    )
}


# --- Looking them up ----------------------------------------------------------------------------


def estimator_for(name: str, task: str) -> Estimator:
    """The declared estimator `train.estimator` names, checked to serve `task`.

    Raises:
        ValueError: One line, if it does not serve the task.
    """
    estimator = ESTIMATORS[name]
    if task not in estimator.tasks:
        serving = [known.name for known in ESTIMATORS.values() if task in known.tasks]
        raise ValueError(f"train.estimator {name} does not do {task}; choose one of {', '.join(serving)}")
    return estimator


def main_metric(requested: str, task: str) -> Metric:
    """The metric that ranks a run: `evaluate.main_metric`, or its task's default when it is `auto`.

    Raises:
        ValueError: One line, if the metric scores another task.
    """
    metric = METRICS[MAIN_METRICS[task] if requested == AUTO else requested]
    if metric.task != task:
        fitting = [name for name, known in METRICS.items() if known.task == task]
        raise ValueError(
            f"evaluate.main_metric {metric.name} scores {metric.task}, but the task is {task}; "
            f"set it to auto or one of {', '.join(fitting)}"
        )
    return metric
