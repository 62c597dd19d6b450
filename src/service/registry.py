"""`make promote`: register a pipeline run's model and move the `champion` alias only to a better one.

The candidate is a FINISHED parent run (`RUN_ID`, or the best on the metric).
Its model is the one its train stage logged (or, when DVC skipped train, the
one an earlier run logged for the same `models/model.joblib` hash). Like is
compared with like: a candidate whose input columns or classes differ from the
champion's is refused (callers of the champion would break; `--force` replaces
it anyway and says what changes). Otherwise both models are scored on the same
held-out rows, the candidate's test table, and the alias moves when the
candidate beats the champion there by more than `registry.min_improvement`, or
with `--force`. The model is registered under `registry.model_name` (once: a
model already registered keeps its version), with tags that lead back to its
run, git commit and data version.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from src.config import METRICS, PATHS
from src.utils.cli import EXIT_BAD_CONFIG, fail, parse_config
from src.utils.data_versions import VersionError, cached_output, output_tag
from src.utils.mlflow_run import ROLE_TAG, STAGE_TAG, describe_tracking_error, import_mlflow

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

CHAMPION = "champion"
MODEL_HASH_TAG = output_tag(PATHS.model)
RAW_DATA_HASH_TAG = output_tag(PATHS.raw)
TEST_DATA_HASH_TAG = output_tag(PATHS.test)
# Tags copied from the parent run onto the registered version: the way back to code and data.
LINEAGE_TAGS = ("git.commit", "git.dirty", "data.version", "data.md5", MODEL_HASH_TAG, RAW_DATA_HASH_TAG)


class PromoteError(Exception):
    """Promotion cannot go on; the message is the one line to show."""


@dataclass
class Candidate:
    """A parent run and the model it trained."""

    run: Any
    model_uri: str


@dataclass
class Interface:
    """What a model takes and what it answers: its input columns and its classes."""

    columns: list[str]
    classes: list[str]

    def changes_to(self, other: Interface) -> str:
        """Say what differs from `other` in one clause ("" when nothing does)."""
        parts = []
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


@dataclass
class Promotion:
    """What `promote` did: the line to show, and the two scores on the held-out rows (None if not scored)."""

    message: str
    candidate_metric: float | None = None
    champion_metric: float | None = None
    held_out_rows: int = 0


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
    return Candidate(run, logged_model_uri(client, run))


def champion_version(client: MlflowClient, name: str) -> Any:
    """The version the `champion` alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def interface_of(uri: str) -> Interface:
    """The input columns (signature) and classes (metadata) of a logged model, read from its MLmodel file."""
    import mlflow

    info = mlflow.models.get_model_info(uri)
    columns = info.signature.inputs.input_names() if info.signature is not None else []
    classes = (info.metadata or {}).get("classes")
    if classes is None:  # a model logged before its classes were recorded
        classes = [str(label) for label in mlflow.sklearn.load_model(uri).classes_]
    return Interface([str(name) for name in columns], [str(label) for label in classes])


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


def register(client: MlflowClient, name: str, candidate: Candidate, metric: str) -> Any:
    """Register the candidate's model under `name` (or find its version) with lineage tags."""
    import mlflow

    for version in client.search_model_versions(f"name = '{name}'"):
        if version.source == candidate.model_uri:
            return version
    tags = {key: candidate.run.data.tags[key] for key in LINEAGE_TAGS if key in candidate.run.data.tags}
    tags["pipeline.run_id"] = candidate.run.info.run_id
    if metric in candidate.run.data.metrics:
        tags[f"metric.{metric}"] = str(candidate.run.data.metrics[metric])
    return mlflow.register_model(candidate.model_uri, name, tags=tags)


def promote(
    client: MlflowClient, name: str, candidate: Candidate, metric: str, min_improvement: float, force: bool, target: str
) -> Promotion:
    """Register the candidate and move the alias if it takes what the champion takes and is better (or forced).

    Args:
        client: The MLflow client.
        name: The registered model (`registry.model_name`).
        candidate: The parent run and its model.
        metric: The metric that decides, one of `src.config.METRICS`.
        min_improvement: How much the candidate must beat the champion by.
        force: Move the alias whatever the scores, and even if the input or classes change.
        target: The label column of the held-out rows.

    Raises:
        PromoteError: The candidate's input columns or classes differ from the champion's
            (without `force`), or its held-out rows are not in the DVC cache.
    """
    import mlflow.sklearn

    from src.ml.metrics import score_model

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
    ours = score_model(mlflow.sklearn.load_model(candidate.model_uri), held_out, target)[metric]
    theirs = score_model(mlflow.sklearn.load_model(current.source), held_out, target)[metric]
    scores = f"{metric} {ours:.4f} against {theirs:.4f} on run {run_id}'s {len(held_out)} held-out rows"
    promotion = Promotion("", ours, theirs, len(held_out))
    if force:
        reason = f"forced; the champion was version {current.version} ({scores})"
    elif ours > theirs + min_improvement:
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


def main(argv: list[str] | None = None) -> None:
    """`make promote [RUN_ID=...] [METRIC=...] [FORCE=1]`."""
    parser = argparse.ArgumentParser(prog="python -m src.service.registry", description=__doc__)
    parser.add_argument("--run-id", default="", help="the parent run to promote (default: the best on the metric)")
    parser.add_argument("--metric", default="", help="the metric that decides (default: registry.metric)")
    parser.add_argument("--force", action="store_true", help="move the alias even if the candidate is not better")
    arguments, config = parse_config(parser, argv)
    metric = arguments.metric or config.registry.metric
    if metric not in METRICS:
        fail(f"METRIC must be one of {', '.join(METRICS)}, got {metric!r}", EXIT_BAD_CONFIG)
    mlflow = import_mlflow()
    client = mlflow.MlflowClient()
    try:
        experiment = client.get_experiment_by_name(config.mlflow.experiment_name)
        if experiment is None:
            raise PromoteError(f"no experiment {config.mlflow.experiment_name!r} yet; run `make pipeline` first")
        candidate = candidate_of(client, arguments.run_id, experiment.experiment_id, metric)
        promotion = promote(
            client,
            config.registry.model_name,
            candidate,
            metric,
            config.registry.min_improvement,
            arguments.force,
            config.data_load.target,
        )
    except PromoteError as error:
        fail(str(error))
    except Exception as error:
        refused = f"change registered model {config.registry.model_name!r}"
        fail(f"cannot promote: {describe_tracking_error(error, refused)}")
    sys.stdout.write(promotion.message + "\n")


if __name__ == "__main__":
    main()
