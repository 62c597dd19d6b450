"""`make promote`: register a pipeline run's model and move the `champion` alias only to a better one.

The candidate is a FINISHED parent run (`RUN_ID`, or the best on the metric).
Its model is the one its train stage logged (or, when DVC skipped train, the
one an earlier run logged for the same `models/model.joblib` hash). The model
is registered under `registry.model_name` (once: a model already registered
keeps its version), with tags that lead back to its run, git commit and data
version. The alias moves when the candidate's held-out metric beats the
champion's by more than `registry.min_improvement`, or with `--force`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from src.utils.cli import EXIT_BAD_CONFIG, fail, parse_config
from src.utils.mlflow_run import ROLE_TAG, STAGE_TAG, describe_tracking_error, import_mlflow

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

CHAMPION = "champion"
MODEL_HASH_TAG = "dvc.out.models/model.joblib"
TRAIN_DATA_HASH_TAG = "dvc.out.data/processed/train.parquet"
# Tags copied from the parent run onto the registered version: the way back to code and data.
LINEAGE_TAGS = ("git.commit", "git.dirty", "data.version", "data.md5", MODEL_HASH_TAG, TRAIN_DATA_HASH_TAG)


class PromoteError(Exception):
    """Promotion cannot go on; the message is the one line to show."""


@dataclass
class Candidate:
    """A parent run, its model and its value of the metric."""

    run: Any
    model_uri: str
    metric: float


def best_parent_run(client: MlflowClient, experiment_id: str, metric: str) -> Any:
    """Return the FINISHED parent run with the highest `metric`."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{ROLE_TAG}` = 'parent' and attributes.status = 'FINISHED' and metrics.`{metric}` > -1000000000"
        ),
        order_by=[f"metrics.`{metric}` DESC", "attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise PromoteError(f"no FINISHED pipeline run has a metric {metric!r}; run `make pipeline` first")
    return runs[0]


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
        trains = client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}' and tags.`{STAGE_TAG}` = 'train'",
        )
        for train in trains:
            models = mlflow.search_logged_models(
                experiment_ids=[run.info.experiment_id],
                filter_string=f"source_run_id = '{train.info.run_id}'",
                output_format="list",
            )
            if models:
                return f"models:/{models[0].model_id}"
    raise PromoteError(f"run {parent.info.run_id} has no logged model; run `make pipeline FORCE=1` to train one")


def candidate_of(client: MlflowClient, run_id: str, experiment_id: str, metric: str) -> Candidate:
    """The candidate: run `run_id`, or the best parent run on `metric` when empty."""
    if run_id:
        run = client.get_run(run_id)
        if run.data.tags.get(ROLE_TAG) != "parent" or run.info.status != "FINISHED":
            raise PromoteError(f"run {run_id} is not a FINISHED pipeline run (make pipeline's parent run)")
    else:
        run = best_parent_run(client, experiment_id, metric)
    if metric not in run.data.metrics:
        raise PromoteError(f"run {run.info.run_id} has no metric {metric!r}; metrics: {', '.join(run.data.metrics)}")
    return Candidate(run, logged_model_uri(client, run), run.data.metrics[metric])


def champion_version(client: MlflowClient, name: str) -> Any:
    """The version the `champion` alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def register(client: MlflowClient, name: str, candidate: Candidate, metric: str) -> Any:
    """Register the candidate's model under `name` (or find its version) with lineage tags."""
    import mlflow

    for version in client.search_model_versions(f"name = '{name}'"):
        if version.source == candidate.model_uri:
            return version
    tags = {key: candidate.run.data.tags[key] for key in LINEAGE_TAGS if key in candidate.run.data.tags}
    tags |= {"pipeline.run_id": candidate.run.info.run_id, f"metric.{metric}": str(candidate.metric)}
    return mlflow.register_model(candidate.model_uri, name, tags=tags)


def promote(
    client: MlflowClient,
    name: str,
    candidate: Candidate,
    metric: str,
    min_improvement: float,
    force: bool,
    champion_metric: float | None = None,
) -> str:
    """Register the candidate and move the alias if it is better (or forced); return what happened, in one line.

    The champion's metric is the one recorded when it was registered, unless
    `champion_metric` gives it on the candidate's own held-out set (`make retrain`).
    """
    version = register(client, name, candidate, metric)
    current = champion_version(client, name)
    described = f"version {version.version} (run {candidate.run.info.run_id}, {metric} {candidate.metric:.4f})"
    if current is not None and current.version == version.version:
        return f"{name} {described} is the champion already"
    current_metric = float(current.tags.get(f"metric.{metric}", "nan")) if current is not None else None
    if champion_metric is not None:
        current_metric = champion_metric
    if current is None:
        reason = "there was no champion"
    elif force:
        reason = f"forced; the champion was version {current.version} ({metric} {current_metric:.4f})"
    elif candidate.metric > current_metric + min_improvement:
        reason = f"it beats version {current.version} ({metric} {current_metric:.4f})"
    else:
        return (
            f"kept version {current.version} of {name} as champion ({metric} {current_metric:.4f}): {described} "
            f"does not beat it by more than {min_improvement} (FORCE=1 moves the alias anyway)"
        )
    client.set_registered_model_alias(name, CHAMPION, version.version)
    return f"moved {CHAMPION} of {name} to {described}: {reason}"


def main(argv: list[str] | None = None) -> None:
    """`make promote [RUN_ID=...] [METRIC=...] [FORCE=1]`."""
    parser = argparse.ArgumentParser(prog="python -m src.service.registry", description=__doc__)
    parser.add_argument("--run-id", default="", help="the parent run to promote (default: the best on the metric)")
    parser.add_argument("--metric", default="", help="the metric that decides (default: registry.metric)")
    parser.add_argument("--force", action="store_true", help="move the alias even if the candidate is not better")
    arguments, config = parse_config(parser, argv)
    metric = arguments.metric or config.registry.metric
    if not metric.replace("_", "").replace(".", "").isalnum():
        fail(f"METRIC must be a metric name such as accuracy, got {metric!r}", EXIT_BAD_CONFIG)
    mlflow = import_mlflow()
    client = mlflow.MlflowClient()
    try:
        experiment = client.get_experiment_by_name(config.mlflow.experiment_name)
        if experiment is None:
            raise PromoteError(f"no experiment {config.mlflow.experiment_name!r} yet; run `make pipeline` first")
        candidate = candidate_of(client, arguments.run_id, experiment.experiment_id, metric)
        message = promote(
            client, config.registry.model_name, candidate, metric, config.registry.min_improvement, arguments.force
        )
    except PromoteError as error:
        fail(str(error))
    except Exception as error:
        fail(f"cannot promote: {describe_tracking_error(error)}")
    sys.stdout.write(message + "\n")


if __name__ == "__main__":
    main()
