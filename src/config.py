"""Load and validate params.yaml once, into typed objects.

Every entry point calls `load_config` before it does anything else, so a bad
params.yaml stops the pipeline with one line that names the key path, the bad
value and what is allowed, before any MLflow run opens or any output is written.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_validator

from src.ml.catalog import AUTO, ESTIMATORS, MAIN_METRICS, MAX_PRODUCTS, METRICS, SOURCES, SYNTHETIC, TASKS, Section

SOURCE_SUFFIXES = (".csv", ".parquet")


class ConfigError(ValueError):
    """params.yaml is unreadable or invalid; the message is the one line to show."""


class BaseParams(Section):
    """The `base` section: settings shared by every stage."""

    random_state: int = Field(ge=0, le=2**32 - 1, description="Seed for every random step (scikit-learn's range).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(description="Log level of every entry point.")
    task: Literal[(AUTO, *TASKS)] = Field(  # type: ignore[valid-type]
        description=(
            "What the pipeline learns: `classification` (classes), `regression` (a number), or `auto`: from the "
            "label column, by the rule of the docs' *Your own table* (text, booleans and two values are classes; "
            "numbers with fractions are a regression; whole numbers are classes when few and a regression when "
            "many, and in between data_load asks you to set it). The choice and its reason are printed and tag "
            "the parent run."
        )
    )


class MlflowParams(Section):
    """The `mlflow` section: where runs are recorded."""

    experiment_name: str = Field(min_length=1, description="MLflow experiment of the pipeline runs.")


class DataLoadParams(Section):
    """The `data_load` section: the data the pipeline starts from, and at which version."""

    source: str = Field(
        min_length=1,
        description=(
            "A dataset made in code (see the sources in `src/ml/catalog.py`: `iris`, `wine`, `breast_cancer`, "
            "`digits` (8x8 images), `diabetes` (regression), `synthetic`), a CSV or Parquet file under "
            "`data/external/`, or a folder of PNG images under `data/external/` with one folder per class "
            "(`<folder>/<class>/<file>.png`); files and folders tracked with DVC."
        ),
    )
    rev: str = Field(
        description=(
            "A git tag or commit: read the data as it was at that data version (the source file, "
            "or for a dataset made in code or an image folder the raw table the pipeline wrote). "
            '`""`: the working tree.'
        ),
    )
    target: str = Field(min_length=1, description="Name of the label column.")
    id_columns: list[str] = Field(
        description=(
            "Columns that identify a row (a passenger id, a name): never features, kept beside the "
            "predictions of `make predict` and `make serve`."
        )
    )
    synthetic_rows: int = Field(ge=10, le=100_000_000, description="`synthetic` source: rows to generate.")
    synthetic_features: int = Field(ge=2, le=1000, description="`synthetic` source: numeric features to generate.")

    @field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        if source in SOURCES:
            return source
        path = PurePosixPath(source)
        known_kind = path.suffix.lower() in SOURCE_SUFFIXES or not path.suffix
        if not known_kind or path.parts[:2] != ("data", "external") or len(path.parts) < 3 or ".." in path.parts:
            raise ValueError(
                f"must be one of {', '.join(SOURCES)}, "
                "or a .csv or .parquet file or a folder of PNG images under data/external/"
            )
        return source.rstrip("/")

    @field_validator("id_columns")
    @classmethod
    def _no_repeats(cls, names: list[str]) -> list[str]:
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"names {repeated[0]!r} twice; list each column once")
        return names

    @property
    def generated(self) -> bool:
        """Whether the source is made in code (a bundled or synthetic dataset), not read from a file."""
        return self.source in SOURCES

    @property
    def image_folder(self) -> bool:
        """Whether the source is a user's folder of images, one folder per class."""
        return not self.generated and not PurePosixPath(self.source).suffix

    @property
    def pixel_max(self) -> int:
        """The largest value a pixel of this source takes: 16 for digits, 255 for 8-bit images."""
        return SOURCES[self.source].pixel_max if self.generated else 255


class FeaturizeParams(Section):
    """The `featurize` section: row-wise features added to the raw table, which learn nothing from the data.

    Dates become their parts, booleans 1 and 0, id columns are left out; what is
    learned from the data (category codes, imputation, scaling) is fitted by
    train, inside each cross-validation fold.
    """

    pairwise_products: bool = Field(
        description=(
            "Add `<a>_x_<b>` for every pair of numeric features (not pixels, not date parts). Off by default: "
            "on a user's table they cost more than they give (see the docs' *Your own table*)."
        )
    )
    drop_columns: list[str] = Field(description="Raw feature columns to leave out.")
    scale_pixels: bool = Field(
        description=(
            "Images: divide the pixels by their largest possible value (16 for `digits`, 255 for "
            "8-bit PNG images), so every pixel feature lies between 0 and 1."
        ),
    )
    pixel_pooling: int = Field(
        ge=1,
        le=64,
        description=(
            "Images: average each k x k block of pixels into one feature, which divides the "
            "feature count by k squared; 1 keeps every pixel. k must divide the image's height and width."
        ),
    )


class DataSplitParams(Section):
    """The `data_split` section: how the feature table is split into train and test."""

    test_size: float = Field(gt=0, lt=1, description="Fraction of rows held out for test.")
    stratify: bool = Field(description="Classification: keep class proportions equal in both parts.")
    batch_holdout: float = Field(
        gt=0,
        lt=1,
        description="Fraction of each labelled batch in `data/batches/` (see `make retrain`) held out for test.",
    )


class TrainSettings(Section):
    """The keys of the `train` section every estimator shares."""

    estimator: Literal[tuple(ESTIMATORS)] = Field(  # type: ignore[valid-type]
        description="The model to fit; its knobs are under `train.<estimator>` (see `src/ml/catalog.py`)."
    )
    cv_folds: int = Field(ge=2, le=20, description="Folds of the k-fold cross-validation.")
    init_from: str = Field(
        description=(
            "The model to start from: a model URI (`models:/<name>/<version>`, `models:/<name>@champion`, "
            "`models:/m-...`), an MLflow run id (the model that run trained), or an alias of "
            '`registry.model_name` (`champion`); `""`: from scratch. `make retrain` sets it to the champion.'
        )
    )
    init_mode: Literal["warm_start", "refit"] = Field(
        description=(
            "With init_from: `warm_start` continues from the model's weights as its estimator declares "
            "(boosting adds `max_iter` iterations, a forest `n_estimators` trees, an mlp more epochs, logistic "
            "regression starts from its coefficients), with the source's encoding of the columns; `refit` trains "
            "afresh."
        )
    )

    @field_validator("init_from")
    @classmethod
    def _model_reference(cls, reference: str) -> str:
        if reference and not reference.startswith(("models:/", "runs:/")) and not re.fullmatch(r"[\w-]+", reference):
            raise ValueError(
                'must be "", a model URI (models:/iris-classifier@champion), a run id or an alias (champion)'
            )
        return reference

    @property
    def knobs(self) -> Section:
        """The knobs of the chosen estimator (its `train.<estimator>` section)."""
        return getattr(self, self.estimator)


TrainParams = create_model(
    "TrainParams",
    __base__=TrainSettings,
    __doc__=(
        "The `train` section: the estimator, its knobs and cross-validation. Each estimator of "
        "`src/ml/catalog.py` has its knobs in a section of its own, `train.<name>`."
    ),
    **{name: (estimator.knobs, Field(description=estimator.summary)) for name, estimator in ESTIMATORS.items()},
)


class EvaluateParams(Section):
    """The `evaluate` section: how the test-set results are judged and reported."""

    main_metric: str = Field(
        description=(
            "The metric that ranks runs: the terminal's results line, `make sweep`, `make promote`, `make retrain`'s "
            "gate and `make report`'s headline. `auto`: "
            + ", ".join(f"{metric} for {task}" for task, metric in MAIN_METRICS.items())
            + "; or a metric of `src/ml/catalog.py` that fits the task. Each metric knows whether higher or lower "
            "is better."
        )
    )
    normalize_confusion_matrix: bool = Field(
        description="Show row fractions instead of counts in the confusion matrix."
    )

    @field_validator("main_metric")
    @classmethod
    def _known_metric(cls, name: str) -> str:
        if name != AUTO and name not in METRICS:
            raise ValueError(f"must be auto or one of {', '.join(METRICS)}")
        return name


class RegistryParams(Section):
    """The `registry` section: the registered model that promote, serve, predict and drift use."""

    model_name: str = Field(min_length=1, description="Name of the model in MLflow's model registry.")
    min_improvement: float = Field(
        ge=0,
        description=(
            "How much a candidate must beat the champion on `evaluate.main_metric` by (in its direction), both "
            "scored on the candidate's test rows."
        ),
    )


class DriftParams(Section):
    """The `drift` section: when a feature of a new batch counts as drifted from the reference.

    Every feature is tested (Kolmogorov-Smirnov, chi-squared or a z-test), and
    so is its share of missing values; once the smaller of its two samples has
    `large_sample` rows it must also have moved by a distance, as in
    Evidently's data drift report.
    """

    p_value: float = Field(
        gt=0,
        lt=1,
        description=(
            "The false-alarm rate of the whole report: how often a batch drawn from the reference's "
            "distribution may be reported drifted. Each test's p-value is compared with this divided by "
            "the number of tests (Bonferroni)."
        ),
    )
    numeric_distance: float = Field(
        gt=0,
        description=(
            "Numeric feature, large samples: a significant change counts as drift only when the Wasserstein "
            "distance divided by the reference's standard deviation reaches this (0.1: the values moved by a "
            "tenth of a standard deviation on average)."
        ),
    )
    categorical_distance: float = Field(
        gt=0,
        le=1,
        description=(
            "Categorical feature, large samples: a significant change counts as drift only when the "
            "Jensen-Shannon distance (base 2, between 0 and 1) of the category shares reaches this."
        ),
    )
    large_sample: int = Field(
        ge=100,
        le=100_000_000,
        description=(
            "Rows in the smaller of the two samples (reference and new batch, missing values dropped) from "
            "which a feature must also move by its distance; below, where a distance is mostly sampling "
            "noise, the test alone decides."
        ),
    )
    max_categories: int = Field(
        ge=1,
        le=1000,
        description=(
            "An integer column with at most this many distinct values is categorical; text and booleans always are."
        ),
    )


class Config(Section):
    """The whole of params.yaml, validated, knob combinations included."""

    base: BaseParams
    mlflow: MlflowParams
    data_load: DataLoadParams
    featurize: FeaturizeParams
    data_split: DataSplitParams
    train: TrainParams  # type: ignore[valid-type]
    evaluate: EvaluateParams
    registry: RegistryParams
    drift: DriftParams

    def flat(self) -> dict[str, Any]:
        """Return every parameter as `section.key -> value`, as MLflow params are logged."""
        return flatten(self.model_dump())

    @model_validator(mode="after")
    def _knobs_that_work_together(self) -> Config:
        """Refuse the combinations of knobs that cannot work, where params alone tell."""
        source, featurize = self.data_load.source, self.featurize
        made = SOURCES.get(source)
        if featurize.pixel_pooling > 1 and made is not None and made.image_side is None:
            raise ValueError(
                f"featurize.pixel_pooling is {featurize.pixel_pooling}, but data_load.source {source} is not images; "
                "set it to 1"
            )
        if featurize.pixel_pooling > 1 and made is not None and made.image_side % featurize.pixel_pooling:
            side = made.image_side
            divisors = [str(k) for k in range(1, side + 1) if side % k == 0]
            raise ValueError(
                f"featurize.pixel_pooling is {featurize.pixel_pooling}, which does not divide the {side}x{side} "
                f"{source}; use one of {', '.join(divisors)}"
            )
        width = self.data_load.synthetic_features - len(featurize.drop_columns)
        if source == SYNTHETIC and featurize.pairwise_products and width * (width - 1) // 2 > MAX_PRODUCTS:
            raise ValueError(
                f"featurize.pairwise_products would add {width * (width - 1) // 2} columns for the "
                f"{width} synthetic features (at most {MAX_PRODUCTS}); set it to false or lower "
                "data_load.synthetic_features"
            )
        if self.data_load.target in self.data_load.id_columns:
            raise ValueError(f"data_load.id_columns names the label column {self.data_load.target!r}; remove it")
        task = self.base.task
        estimator = ESTIMATORS[self.train.estimator]
        if task != AUTO and task not in estimator.tasks:
            raise ValueError(
                f"train.estimator {estimator.name} does not do {task} (it does {', '.join(estimator.tasks)}); "
                f"choose one of {', '.join(name for name, known in ESTIMATORS.items() if task in known.tasks)}"
            )
        metric = METRICS.get(self.evaluate.main_metric)
        if metric is not None and task != AUTO and metric.task != task:
            fitting = [name for name, known in METRICS.items() if known.task == task]
            raise ValueError(
                f"evaluate.main_metric {metric.name} scores {metric.task}, but base.task is {task}; "
                f"use auto or one of {', '.join(fitting)}"
            )
        if self.train.init_from and self.train.init_mode == "warm_start":
            tasks = TASKS if task == AUTO else (task,)
            if estimator.warm_start is None or not set(tasks) & set(estimator.warm_start_tasks):
                raise ValueError(
                    f"train.estimator {estimator.name} cannot continue from train.init_from's model"
                    + (f" for {task}" if task != AUTO and estimator.warm_start is not None else "")
                    + "; set train.init_mode: refit, or choose an estimator that can"
                )
        return self


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys: `{"a": {"b": 1}}` -> `{"a.b": 1}`."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def load_config(path: str | Path = "params.yaml") -> Config:
    """Read params.yaml and validate every section.

    Args:
        path: The params file.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: With a one-line message naming the file, the key path, the
            bad value and what is allowed.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; copy params.yaml from the template") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it ({error.strerror})") from None
    try:
        _refuse_duplicate_keys(yaml.compose(text))
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML{_yaml_position(error)}") from None
    except _DuplicateKeyError as error:
        raise ConfigError(f"{path}: {error}") from None
    return validate(document, str(path))


class _DuplicateKeyError(ValueError):
    """A key appears twice in one mapping; YAML would silently keep the last."""


def _refuse_duplicate_keys(node: yaml.Node | None, path: tuple[str, ...] = ()) -> None:
    """Walk a composed YAML document and raise on the first key that appears twice in one mapping."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                what = "section" if not path else "key"
                raise _DuplicateKeyError(
                    f"{what} {'.'.join((*path, _printable(key)))} appears twice (lines {seen[key]} and {line}); "
                    "keep one"
                )
            seen[key] = line
            _refuse_duplicate_keys(value_node, (*path, _printable(key)))
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(item, path)


def validate(document: Any, source: str) -> Config:
    """Validate a parsed params mapping.

    Args:
        document: params.yaml as parsed YAML.
        source: Where it came from; every error message starts with it.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: With a one-line message naming the key path, the bad value
            and what is allowed.
    """
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {_describe(document)}")
    try:
        return Config.model_validate(document)
    except ValidationError as error:
        raise ConfigError(f"{source}: {_first_problem(error)}") from None


def _yaml_position(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or "syntax error"
    if mark is None:
        return f": {problem}"
    return f" at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"


_TYPE_WORDS = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "model_type": "a mapping of keys",
    "dict_type": "a mapping of keys",
}


def _first_problem(error: ValidationError) -> str:
    """Turn pydantic's first error into one sentence about params.yaml."""
    problems = error.errors(include_url=False)
    # A misspelt key also shows up as a missing one; the misspelling is the cause.
    problem = min(problems, key=lambda item: item["type"] != "extra_forbidden")
    location = tuple(_printable(str(part)) for part in problem["loc"])
    key = ".".join(location)
    kind = problem["type"]
    value = problem.get("input")
    context = problem.get("ctx") or {}
    if kind == "extra_forbidden":
        return _unknown_key(location)
    if kind == "value_error" and not location:  # a combination of knobs (Config's own check)
        return problem["msg"].removeprefix("Value error, ")
    if kind == "missing":
        what = "section" if len(location) == 1 else "key"
        return f"missing {what} {key}; add it (see the template's params.yaml)"
    if kind == "literal_error":
        return f"{key} must be one of {context.get('expected', '')}, got {value!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{key} {_range_words(location)}, got {value!r}"
    if kind == "value_error":
        return f"{key} {problem['msg'].removeprefix('Value error, ')}, got {value!r}"
    if kind in ("too_short", "string_too_short"):
        return f"{key} must not be empty"
    if kind in _TYPE_WORDS or kind.endswith("_type"):
        wanted = _TYPE_WORDS.get(kind, kind.removesuffix("_type"))
        return f"{key} must be {wanted}, got {_describe(value)}"
    return f"{key}: {problem['msg']}, got {value!r}"


def _printable(name: str) -> str:
    """A key as it can be shown on one line: control characters escaped."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in name)


def _unknown_key(location: tuple[str, ...]) -> str:
    allowed = list(_section_model(location[:-1]).model_fields)
    close = difflib.get_close_matches(location[-1], allowed, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    where = "section" if len(location) == 1 else "key"
    return f"unknown {where} {'.'.join(location)}{hint}; allowed: {', '.join(allowed)}"


def _section_model(prefix: tuple[str, ...]) -> type[BaseModel]:
    """Return the model class that validates the mapping at `prefix`."""
    model: type[BaseModel] = Config
    for part in prefix:
        model = model.model_fields[part].annotation  # type: ignore[assignment]
    return model


def _range_words(location: tuple[str, ...]) -> str:
    """Describe the allowed range of a numeric key from its Field constraints."""
    low = high = None
    low_open = high_open = False
    for rule in _section_model(location[:-1]).model_fields[location[-1]].metadata:
        if getattr(rule, "gt", None) is not None:
            low, low_open = rule.gt, True
        if getattr(rule, "ge", None) is not None:
            low = rule.ge
        if getattr(rule, "lt", None) is not None:
            high, high_open = rule.lt, True
        if getattr(rule, "le", None) is not None:
            high = rule.le
    if low is not None and high is not None:
        ends = " (exclusive)" if low_open and high_open else ""
        return f"must be between {low} and {high}{ends}"
    if low is not None:
        return f"must be {'greater than' if low_open else 'at least'} {low}"
    return f"must be {'less than' if high_open else 'at most'} {high}"
