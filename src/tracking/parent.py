"""Parent runs: one per pipeline run, opened before `dvc repro` and closed with its outcome.

Every stage that ran left a record (see `src.tracking.stage_runs`); closing the
parent turns each into a nested run with the stage's true start and end times.
On success every stage DVC skipped also gets a nested run, tagged
`pipeline.cached`, with the params and output hashes dvc.lock recorded for it and
the metrics it wrote when it last ran; the parent gets every stage's metrics, its
task and main metric, a summary of which stages ran, dvc.lock as an artifact and
the hash of every output as tags. A pipeline that cannot reach the tracking store as it ends keeps its
outcome (`keep_outcome`), and a later command closes the run late (`close_late`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from src.cli import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    one_line,
    process_alive,
)
from src.config import Config, flatten
from src.io import write_json
from src.lockfile import LOCK_FILE, lineage_tags, output_hashes
from src.ml.catalog import AUTO
from src.paths import PATHS, PROJECT_ROOT, pipeline_stages
from src.revisions import read_at_revision
from src.tracking.client import (
    experiment_id_for,
    import_mlflow,
)
from src.tracking.stage_runs import StageRecord, events_file, finish_stage_run, log_record, now_ms, records_folder
from src.tracking.tags import (
    CACHED_TAG,
    DIRECTION_TAG,
    MAIN_METRIC_TAG,
    NOTE_TAG,
    ROLE_TAG,
    STAGE_TAG,
    TASK_REASON_TAG,
    TASK_TAG,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from src.ml.tables import TableSchema


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CodeVersion:
    """The code a run runs: the git commit, whether the tree differs from it, and the data versions (tags) there."""

    commit: str
    dirty: bool
    data_version: list[str]


def open_parent_run(
    config: Config,
    params_text: str,
    code: CodeVersion,
    run_name: str = "",
    tags: dict[str, str] | None = None,
    command: str = "make pipeline",
) -> str:
    """Open the parent run of one pipeline run and return its id.

    The run carries every param, the params file as an artifact, the git commit,
    whether the tree was dirty and the data version (the tags at that commit).

    Args:
        config: The validated config the pipeline runs with.
        params_text: The params.yaml those values come from, logged as an artifact.
        code: The git commit and data version the run runs on.
        run_name: The run's name; MLflow picks one when empty.
        tags: Extra tags, e.g. the sweep a run belongs to.
        command: The command that runs the pipeline, as the run's source.
    """
    commit, dirty = code.commit, code.dirty
    run_tags = {
        ROLE_TAG: "parent",
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": command,
        "mlflow.source.git.commit": commit,
        "git.commit": commit,
        "git.dirty": str(dirty).lower(),
        "data.version": ",".join(code.data_version),
        **(tags or {}),
    }
    mlflow = import_mlflow()
    client = mlflow.MlflowClient()
    experiment_id = experiment_id_for(client, config.mlflow.experiment_name)
    run = client.create_run(experiment_id, run_name=run_name or None, tags=run_tags)
    try:
        client.log_batch(
            run.info.run_id,
            params=[mlflow.entities.Param(key, str(value)) for key, value in config.flat().items()],
        )
        client.log_text(run.info.run_id, params_text, "params.yaml")
    except Exception as error:
        # The run exists but is not complete (S3 behind the server is down, say): it must not stay RUNNING.
        with contextlib.suppress(Exception):
            client.set_tag(run.info.run_id, "error", f"could not be opened completely: {one_line(error)}")
            client.set_terminated(run.info.run_id, "FAILED")
        raise
    return run.info.run_id


MAIN_METRIC_PARAM = "evaluate.main_metric"
"""The parent's param that names its main metric (see `verdict_tags`)."""


def outcome(exit_code: int) -> str:
    """Map the exit code of `dvc repro` to an MLflow run status."""
    if exit_code == 0:
        return "FINISHED"
    if exit_code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        return "KILLED"
    return "FAILED"


class PipelineRecords:
    """The files a finished pipeline left: dvc.lock and the stage metrics.

    Read from the working tree, from a git revision (a DVC experiment of
    `make sweep`, whose workspace is gone by the time its run is closed), or from
    the copy kept when the run could not be closed at once (see `keep_outcome`).
    """

    def __init__(self, revision: str = "", snapshot: Path | None = None) -> None:
        self.revision = revision
        self.snapshot = snapshot

    def read(self, path: str) -> bytes:
        """Return the content of a project file."""
        if self.revision:
            return read_at_revision(path, self.revision)
        return ((self.snapshot or PROJECT_ROOT) / path).read_bytes()

    @staticmethod
    def paths() -> list[Path]:
        """The files a pipeline's outcome is read from: dvc.lock, every stage's metrics and the table's schema."""
        return [LOCK_FILE, PATHS.schema, *(PATHS.stage_metrics(stage) for stage in pipeline_stages())]

    def lock(self) -> dict[str, Any]:
        """Return dvc.lock, parsed."""
        return yaml.safe_load(self.read(str(LOCK_FILE))) or {}

    def stage_metrics(self, stage: str) -> dict[str, float]:
        """Return the metrics `stage` wrote when it last ran."""
        return json.loads(self.read(str(PATHS.stage_metrics(stage))))

    def schema(self) -> TableSchema:
        """Return what data_load found in the table: the task, the kinds of the columns."""
        from src.ml.tables import TableSchema

        return TableSchema(**json.loads(self.read(str(PATHS.schema))))


def verdict_tags(schema: TableSchema, requested_metric: str) -> dict[str, str]:
    """The tags that say what a finished run learnt and how it is ranked: its task (and why), its main metric."""
    from src.ml.catalog import main_metric

    metric = main_metric(requested_metric, schema.task)
    return {
        TASK_TAG: schema.task,
        TASK_REASON_TAG: schema.reason,
        MAIN_METRIC_TAG: metric.name,
        DIRECTION_TAG: metric.direction,
    }


def stage_output_tags(lock: dict[str, Any], stage: str) -> dict[str, str]:
    """Return `dvc.out.<path> -> md5` for the outputs dvc.lock records for `stage`."""
    recorded = {"stages": {stage: lock.get("stages", {}).get(stage, {})}}
    return {f"dvc.out.{path}": md5 for path, md5 in output_hashes(recorded).items()}


def stopped_stage(parent_run_id: str) -> str:
    """The stage of this pipeline run that failed or was interrupted, from the records the stages left ("" if none)."""
    folder = records_folder(parent_run_id)
    for stage in pipeline_stages():
        record = StageRecord.load(folder, stage)
        if record is not None and record.status != "FINISHED":
            return stage
    return ""


def logged_stages(client: MlflowClient, parent_run_id: str, experiment_id: str) -> dict[str, Any]:
    """The nested runs the parent has already, by stage: logged live as the stages ran, or by a close cut short."""
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`{ROLE_TAG}` = 'stage'"
    )
    return {child.data.tags.get(STAGE_TAG, ""): child for child in children}


def log_stage_runs(
    client: MlflowClient,
    parent_run_id: str,
    experiment_id: str,
    lock: dict[str, Any],
    logged: dict[str, Any] | None = None,
) -> list[str]:
    """Make sure the record every stage that ran left is a nested run of the parent, ended as the stage ended.

    A stage logged live keeps its run: it gets the output hashes of `lock`, or is
    ended if it was still RUNNING (its process was killed: KILLED, with a note). A
    stage not logged yet is logged whole.

    Returns:
        The stages that ran, in pipeline order.
    """
    from mlflow.entities import RunTag

    folder = records_folder(parent_run_id)
    logged = logged or {}
    ran = []
    for stage in pipeline_stages():
        record = StageRecord.load(folder, stage)
        if record is None:
            continue
        outputs = stage_output_tags(lock, stage) if record.status == "FINISHED" else {}
        run = logged.get(stage)
        if run is None:
            record.tags |= outputs
            log_record(client, record, folder, experiment_id, parent_run_id)
        elif run.info.status == "RUNNING":
            record.tags |= outputs
            streamed = events_file(folder, stage).exists()
            finish_stage_run(client, run.info.run_id, record, folder, history_logged=streamed)
        elif outputs:
            client.log_batch(run.info.run_id, tags=[RunTag(key, value) for key, value in outputs.items()])
        ran.append(stage)
    return ran


def log_cached_stage_runs(
    client: MlflowClient, parent_run_id: str, experiment_id: str, records: PipelineRecords, stages: list[str]
) -> None:
    """Give each stage DVC skipped a nested run tagged `pipeline.cached`, from dvc.lock and its metrics file."""
    from mlflow.entities import Metric, Param
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    lock = records.lock()
    for stage in stages:
        tags = {MLFLOW_PARENT_RUN_ID: parent_run_id, STAGE_TAG: stage, ROLE_TAG: "stage", CACHED_TAG: "true"}
        run = client.create_run(experiment_id, run_name=stage, tags=tags | stage_output_tags(lock, stage))
        recorded_params = lock.get("stages", {}).get(stage, {}).get("params", {}).get("params.yaml", {})
        now = run.info.start_time
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(key, float(value), now, 0) for key, value in records.stage_metrics(stage).items()],
            params=[Param(key, str(value)) for key, value in flatten(recorded_params).items()],
        )
        client.set_terminated(run.info.run_id, "FINISHED")


def close_parent(
    client: MlflowClient,
    parent_run_id: str,
    exit_code: int,
    revision: str = "",
    snapshot: Path | None = None,
    end_ms: int | None = None,
) -> str:
    """Record the outcome on the parent run and end it; return its status.

    Args:
        client: The MLflow client.
        parent_run_id: The parent run of this pipeline.
        exit_code: The exit code of `dvc repro` (or `dvc exp run`).
        revision: Read dvc.lock and the metrics at this git revision instead of the working tree.
        snapshot: Read them from this copy instead (a run closed late, see `keep_outcome`).
        end_ms: When the pipeline ended, if not now.
    """
    from mlflow.entities import Metric, RunTag

    status = outcome(exit_code)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    records = PipelineRecords(revision, snapshot)
    logged = logged_stages(client, parent_run_id, experiment_id)
    try:
        lock = records.lock() if status == "FINISHED" else {}
        ran = log_stage_runs(client, parent_run_id, experiment_id, lock, logged)
        if status == "FINISHED":
            cached = [stage for stage in pipeline_stages() if stage not in ran]
            log_cached_stage_runs(client, parent_run_id, experiment_id, records, [s for s in cached if s not in logged])
            final: dict[str, float] = {}
            for stage in pipeline_stages():  # in pipeline order: a later stage's metric of the same name wins
                final.update(records.stage_metrics(stage))
            parent = client.get_run(parent_run_id)
            now = parent.info.start_time
            requested = parent.data.params.get(MAIN_METRIC_PARAM, AUTO)
            tags = {
                **verdict_tags(records.schema(), requested),
                **lineage_tags(lock),
                "pipeline.stages_ran": ",".join(ran),
                "pipeline.stages_cached": ",".join(cached),
            }
            client.log_batch(
                parent_run_id,
                metrics=[Metric(key, float(value), now, 0) for key, value in final.items()],
                tags=[RunTag(key, value) for key, value in tags.items()],
            )
            client.log_text(parent_run_id, records.read(str(LOCK_FILE)).decode("utf-8"), str(LOCK_FILE))
            logger.info("stages run: %s; cached: %s", ", ".join(ran) or "none", ", ".join(cached) or "none")
    finally:
        end_children(client, parent_run_id, "KILLED" if status == "KILLED" else "FAILED")
        client.set_tag(parent_run_id, "pipeline.exit_code", str(exit_code))
        client.set_terminated(parent_run_id, status, end_time=end_ms)
    shutil.rmtree(records_folder(parent_run_id), ignore_errors=True)
    return status


OUTCOME_FILE = "outcome.json"


def keep_outcome(parent_run_id: str, exit_code: int) -> None:
    """Keep what closing the parent needs, for a later command: the exit code, the end time, dvc.lock and the metrics.

    Called when the tracking server (or the S3 store behind it) cannot be reached
    as the pipeline ends: the stage records stay in the records folder too, so
    `close_late` can log everything with its true times and status.
    """
    folder = records_folder(parent_run_id)
    for path in PipelineRecords.paths():
        if (PROJECT_ROOT / path).exists():
            (folder / "snapshot" / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(PROJECT_ROOT / path, folder / "snapshot" / path)
    write_json({"exit_code": exit_code, "end_ms": now_ms(), "pid": os.getpid()}, folder / OUTCOME_FILE)


def pending_outcomes() -> dict[str, dict[str, Any]]:
    """The parent runs whose pipeline ended without reaching the tracking server, and what it kept of each."""
    pending = {}
    for path in sorted(records_folder("").glob(f"*/{OUTCOME_FILE}")):
        kept = json.loads(path.read_text(encoding="utf-8"))
        if not process_alive(int(kept.get("pid", 0))):
            pending[path.parent.name] = kept
    return pending


def close_late(client: MlflowClient, parent_run_id: str, kept: dict[str, Any], command: str) -> str:
    """Close a parent run its pipeline could not close, with the outcome it kept; return the status.

    The run ends with the status the pipeline had (FINISHED if every stage
    succeeded), its stage runs as they ran, and a note that it was closed late.
    """
    when = datetime.datetime.fromtimestamp(kept["end_ms"] / 1000).strftime("%Y-%m-%d %H:%M:%S")
    note = f"closed late by {command}: the pipeline ended at {when} but could not reach the tracking store then"
    client.set_tag(parent_run_id, NOTE_TAG, note)
    folder = records_folder(parent_run_id)
    return close_parent(client, parent_run_id, kept["exit_code"], snapshot=folder / "snapshot", end_ms=kept["end_ms"])


def end_children(client: MlflowClient, parent_run_id: str, status: str) -> None:
    """End every nested run of `parent_run_id` still RUNNING with `status`."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    running = client.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'",
    )
    for child in running:
        client.set_terminated(child.info.run_id, status)
