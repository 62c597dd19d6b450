"""Which model is the one we ship: candidates, like-for-like comparison on held-out rows, and the alias."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from src.paths import PATHS
from src.tracking.registry import (
    RegistryError,
    best_parent_run,
    champion_version,
    interface_of,
    latest_parent_run,
    logged_model_uri,
)
from src.tracking.tags import CHAMPION, LINEAGE_TAGS, ROLE_TAG, TASK_TAG, TEST_DATA_HASH_TAG
from src.versions.workspace import VersionError, cached_output

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from src.ml.catalog import Metric


class PromoteError(RegistryError):
    """Promotion cannot go on; the message is the one line to show."""


@dataclass
class Candidate:
    """A parent run and the model it trained."""

    run: Any
    model_uri: str


@dataclass
class Promotion:
    """What `promote` did: the line to show, and the two scores on the held-out rows (None if not scored)."""

    message: str
    candidate_metric: float | None = None
    champion_metric: float | None = None
    held_out_rows: int = 0


def deciding_metric(client: MlflowClient, experiment_id: str, requested: str, run_id: str = "") -> Metric:
    """The metric that decides: `requested` (METRIC= or `evaluate.main_metric`), or the task's main metric for `auto`.

    With `auto` the task is run `run_id`'s, or the newest finished pipeline run's.

    Raises:
        PromoteError: The metric is unknown, or there is no run to tell the task from.
    """
    from src.ml.catalog import AUTO, METRICS, main_metric

    if requested != AUTO:
        if requested not in METRICS:
            raise PromoteError(f"METRIC must be one of {', '.join(METRICS)}, got {requested!r}")
        return METRICS[requested]
    run = client.get_run(run_id) if run_id else latest_parent_run(client, experiment_id)
    if run is None or TASK_TAG not in run.data.tags:
        raise PromoteError("no FINISHED pipeline run tells the task yet; run `make pipeline` first")
    return main_metric(AUTO, run.data.tags[TASK_TAG])


def candidate_of(client: MlflowClient, run_id: str, experiment_id: str, metric: Metric) -> Candidate:
    """The candidate: run `run_id`, or the best parent run on `metric` when empty."""
    if run_id:
        run = client.get_run(run_id)
        if run.data.tags.get(ROLE_TAG) != "parent" or run.info.status != "FINISHED":
            raise PromoteError(f"run {run_id} is not a FINISHED pipeline run (make pipeline's parent run)")
    else:
        run = best_parent_run(client, experiment_id, metric)
    return Candidate(run, logged_model_uri(client, run))


def held_out_table(run: Any) -> pd.DataFrame:
    """The test rows of a parent run (its data/processed/test.parquet), from the DVC cache.

    Raises:
        PromoteError: If the cache does not hold them.
    """
    import pandas as pd

    try:
        return pd.read_parquet(cached_output(run.data.tags.get(TEST_DATA_HASH_TAG, ""), PATHS.test))
    except VersionError as error:
        raise PromoteError(f"cannot score on run {run.info.run_id}'s held-out rows: {error}") from None


def register(client: MlflowClient, name: str, candidate: Candidate, metric: Metric) -> Any:
    """Register the candidate's model under `name` (or find its version) with lineage tags.

    The registered model is created only if it does not exist: on a tracking
    server with workspaces (the trial stack) creating one takes a right that only
    the admin has, while adding a version takes EDIT on the model.
    """
    from mlflow.exceptions import MlflowException

    for version in client.search_model_versions(f"name = '{name}'"):
        if version.source == candidate.model_uri:
            return version
    tags = {key: candidate.run.data.tags[key] for key in LINEAGE_TAGS if key in candidate.run.data.tags}
    tags["pipeline.run_id"] = candidate.run.info.run_id
    if metric.name in candidate.run.data.metrics:
        tags[f"metric.{metric.name}"] = str(candidate.run.data.metrics[metric.name])
    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(name)
    model_id = candidate.model_uri.removeprefix("models:/")  # logged_model_uri gives `models:/<id>`
    return client.create_model_version(name, candidate.model_uri, tags=tags, model_id=model_id)


def promote(
    client: MlflowClient,
    name: str,
    candidate: Candidate,
    metric: Metric,
    min_improvement: float,
    force: bool,
    target: str,
) -> Promotion:
    """Register the candidate and move the alias if it takes what the champion takes and is better (or forced).

    Args:
        client: The MLflow client.
        name: The registered model (`registry.model_name`).
        candidate: The parent run and its model.
        metric: The metric that decides (its direction says which way is better).
        min_improvement: How much the candidate must beat the champion by.
        force: Move the alias whatever the scores, and even if the task, input or classes change.
        target: The label column of the held-out rows.

    Raises:
        PromoteError: The candidate's task, input columns or classes differ from the champion's
            (without `force`), the metric does not score its task, or its held-out rows are not in the DVC cache.
    """
    import mlflow.sklearn

    from src.ml.metrics import better, score_model

    current = champion_version(client, name)
    run_id = candidate.run.info.run_id
    if current is not None and current.source == candidate.model_uri:
        return Promotion(f"{name} version {current.version} (run {run_id}) is the champion already")
    changes = interface_of(candidate.model_uri).changes_to(interface_of(current.source)) if current else ""
    if changes and not force:
        raise PromoteError(
            f"run {run_id}'s model does not take what {name} version {current.version} ({CHAMPION}) takes "
            f"({changes}), so callers of the champion would break; FORCE=1 replaces it anyway"
        )
    version = register(client, name, candidate, metric)
    described = f"version {version.version} (run {run_id})"
    if current is None:
        client.set_registered_model_alias(name, CHAMPION, version.version)
        return Promotion(f"moved {CHAMPION} of {name} to {described}: there was no champion")
    if changes:
        client.set_registered_model_alias(name, CHAMPION, version.version)
        return Promotion(
            f"moved {CHAMPION} of {name} to {described}: forced; what callers send and get changes "
            f"from version {current.version}: {changes}"
        )
    held_out = held_out_table(candidate.run)
    task = candidate.run.data.tags.get(TASK_TAG, metric.task)
    if metric.task != task:
        raise PromoteError(f"metric {metric.name} scores {metric.task}, but run {run_id} is a {task}")
    ours = score_model(mlflow.sklearn.load_model(candidate.model_uri), held_out, target, task)[metric.name]
    theirs = score_model(mlflow.sklearn.load_model(current.source), held_out, target, task)[metric.name]
    scores = (
        f"{metric.name} {ours:.4f} against {theirs:.4f} ({metric.direction} is better) on run {run_id}'s "
        f"{len(held_out)} held-out rows"
    )
    promotion = Promotion("", ours, theirs, len(held_out))
    if force:
        reason = f"forced; the champion was version {current.version} ({scores})"
    elif better(metric, ours, theirs, min_improvement):
        reason = f"it beats version {current.version} ({scores})"
    else:
        promotion.message = (
            f"kept version {current.version} of {name} as {CHAMPION}: {described} does not beat it by more than "
            f"{min_improvement} ({scores}; FORCE=1 moves the alias anyway)"
        )
        return promotion
    client.set_registered_model_alias(name, CHAMPION, version.version)
    promotion.message = f"moved {CHAMPION} of {name} to {described}: {reason}"
    return promotion
