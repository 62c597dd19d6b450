"""The model registry and logged models: which model a run trained, the champion, a model's interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from src.config import Config
from src.ml.catalog import Metric
from src.ml.schema import ScoringInputError
from src.tracking.client import describe_tracking_error, import_mlflow
from src.tracking.tags import CHAMPION, MODEL_HASH_TAG, ROLE_TAG

if TYPE_CHECKING:
    from mlflow import MlflowClient


class RegistryError(Exception):
    """A run's model, or a registered model, cannot be found or loaded; the message is the one line to show."""


@dataclass
class Interface:
    """What a model takes and what it answers: its input columns, its task and its classes."""

    columns: list[str]
    classes: list[str]
    task: str = ""

    def changes_to(self, other: Interface) -> str:
        """Say what differs from `other` in one clause ("" when nothing does)."""
        parts = []
        if self.task and other.task and self.task != other.task:
            parts.append(f"task: {self.task} instead of {other.task}")
        for what, mine, theirs in (
            ("input columns", self.columns, other.columns),
            ("classes", self.classes, other.classes),
        ):
            added = [name for name in mine if name not in theirs]
            lacking = [name for name in theirs if name not in mine]
            if added or lacking:
                words = ([f"adds {', '.join(added)}"] if added else []) + (
                    [f"lacks {', '.join(lacking)}"] if lacking else []
                )
                parts.append(f"{what}: {'; '.join(words)}")
        return "; ".join(parts)


def best_parent_run(client: MlflowClient, experiment_id: str, metric: Metric) -> Any:
    """Return the FINISHED parent run with the best `metric` (the highest or the lowest, as the metric declares)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{ROLE_TAG}` = 'parent' and attributes.status = 'FINISHED' "
            f"and metrics.`{metric.name}` > -1000000000000"
        ),
        order_by=[
            f"metrics.`{metric.name}` {'DESC' if metric.higher_is_better else 'ASC'}",
            "attributes.start_time DESC",
        ],
        max_results=1,
    )
    if not runs:
        raise RegistryError(f"no FINISHED pipeline run has a metric {metric.name!r}; run `make pipeline` first")
    return runs[0]


def latest_parent_run(client: MlflowClient, experiment_id: str) -> Any:
    """Return the newest FINISHED parent run, or None."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{ROLE_TAG}` = 'parent' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def logged_model_uri(client: MlflowClient, parent: Any) -> str:
    """Return `models:/<id>` of the model the parent run trained.

    When DVC skipped train in that run, the model is the one an earlier run
    logged for the same model file hash.
    """
    import mlflow

    model_hash = parent.data.tags.get(MODEL_HASH_TAG, "")
    parents = [parent]
    if model_hash:
        parents += client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`{ROLE_TAG}` = 'parent' and tags.`{MODEL_HASH_TAG}` = '{model_hash}'",
            order_by=["attributes.start_time DESC"],
        )
    for run in parents:
        stages = client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}' and tags.`{ROLE_TAG}` = 'stage'",
        )
        for stage in stages:  # the stage that logged a model (train, in the template's dvc.yaml)
            models = mlflow.search_logged_models(
                experiment_ids=[run.info.experiment_id],
                filter_string=f"source_run_id = '{stage.info.run_id}'",
                output_format="list",
            )
            if models:
                return f"models:/{models[0].model_id}"
    raise RegistryError(f"run {parent.info.run_id} has no logged model; run `make pipeline FORCE=1` to train one")


def champion_version(client: MlflowClient, name: str) -> Any:
    """The version the `champion` alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def interface_of(uri: str) -> Interface:
    """The input columns (signature), task and classes (metadata) of a logged model, read from its MLmodel file."""
    import mlflow

    info = mlflow.models.get_model_info(uri)
    columns = info.signature.inputs.input_names() if info.signature is not None else []
    metadata = info.metadata or {}
    classes = metadata.get("classes")
    if classes is None:  # a model logged before its classes were recorded
        classes = [str(label) for label in getattr(mlflow.sklearn.load_model(uri), "classes_", [])]
    return Interface([str(name) for name in columns], [str(label) for label in classes], metadata.get("task", ""))


def model_uri_for(uri: str, config: Config) -> str:
    """`uri`, or the champion of `registry.model_name` when empty."""
    return uri or f"models:/{config.registry.model_name}@{CHAMPION}"


def describe_version(uri: str) -> str:
    """Name the exact model behind `uri`: an alias becomes `models:/<name>/<version>`."""
    if not uri.startswith("models:/") or "@" not in uri:
        return uri
    name, alias = uri.removeprefix("models:/").split("@", 1)
    version = import_mlflow().MlflowClient().get_model_version_by_alias(name, alias)
    return f"models:/{name}/{version.version}"


def load_model(uri: str) -> tuple[Any, str]:
    """Load a pyfunc model and name its exact version (`models:/<name>/<version>` for an alias).

    Raises:
        RegistryError: Saying which model could not be loaded, and why.
    """
    mlflow = import_mlflow()
    try:
        version = describe_version(uri)
        return mlflow.pyfunc.load_model(version), version
    except Exception as error:
        hint = " (no champion yet? run `make promote`)" if f"@{CHAMPION}" in uri else ""
        raise RegistryError(f"cannot load model {uri}{hint}: {describe_tracking_error(error)}") from None


def input_columns(model: Any) -> dict[str, str]:
    """The model's input columns and their MLflow types (`double`, `long`, `string`...), from its signature."""
    schema = model.metadata.get_input_schema()
    if schema is None:
        raise ScoringInputError("the model has no signature; log it with one (the train stage does)")
    return {column.name: column.type.name for column in schema.inputs}


def resolve_init_from(reference: str, model_name: str) -> str:
    """The model URI `train.init_from` names: a URI as it is, a run id's trained model, or an alias of `model_name`."""
    import re

    if reference.startswith(("models:/", "runs:/")):
        return reference
    if not re.fullmatch(r"[0-9a-f]{32}", reference):
        return f"models:/{model_name}@{reference}"
    client = import_mlflow().MlflowClient()
    run = client.get_run(reference)
    if run.data.tags.get(ROLE_TAG) == "stage":
        run = client.get_run(run.data.tags["mlflow.parentRunId"])
    try:
        return logged_model_uri(client, run)
    except RegistryError as error:
        raise ValueError(f"train.init_from={reference}: {error}") from None


def load_source_model(reference: str, model_name: str) -> tuple[Any, str]:
    """The scikit-learn estimator of the model `train.init_from` names (its featurize step left out), and its URI."""
    import mlflow.sklearn

    from src.ml.features import estimator_of

    import_mlflow()
    try:
        uri = resolve_init_from(reference, model_name)
        return estimator_of(mlflow.sklearn.load_model(uri)), uri
    except ValueError:
        raise
    except Exception as error:
        message = str(error).splitlines()[0] if str(error) else ""
        raise ValueError(f"cannot load train.init_from={reference}: {type(error).__name__}: {message}") from None
