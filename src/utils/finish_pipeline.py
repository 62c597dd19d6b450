"""Close the pipeline's MLflow parent run with the outcome of `dvc repro`.

Every stage that ran left a record (see `mlflow_run.StageRecord`); each becomes
a nested run here, with the stage's true start and end times, so no stage
process pays for importing mlflow. On success every stage DVC skipped also gets
a nested run, tagged
`pipeline.cached`, with the params and output hashes dvc.lock recorded for it
and the metrics it wrote when it last ran (reports/stages/<stage>.json). The
parent gets the final metrics, a summary of which stages ran and which were
cached, dvc.lock as an artifact and the hash of every stage output as tags. So a
run with nothing changed is as complete as a forced one. Any nested run still
RUNNING (its stage was killed) is ended with the parent.
"""

from __future__ import annotations

import json
import logging
import shutil
from typing import TYPE_CHECKING, Any

import yaml

from src.config import PATHS, PROJECT_ROOT, pipeline_stages
from src.utils.cli import EXIT_INTERRUPTED, EXIT_TERMINATED
from src.utils.data_versions import LOCK_FILE, lineage_tags, output_hashes
from src.utils.io import read_at_revision
from src.utils.mlflow_run import (
    CACHED_TAG,
    ROLE_TAG,
    STAGE_TAG,
    StageRecord,
    log_record,
    records_folder,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

FINAL_METRICS_STAGES = ("train", "evaluate")


def outcome(exit_code: int) -> str:
    """Map the exit code of `dvc repro` to an MLflow run status."""
    if exit_code == 0:
        return "FINISHED"
    if exit_code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        return "KILLED"
    return "FAILED"


class PipelineRecords:
    """The files a finished pipeline left: dvc.lock and the stage metrics.

    Read from the working tree, or from a git revision (a DVC experiment of
    `make sweep`, whose workspace is gone by the time its run is closed).
    """

    def __init__(self, revision: str = "") -> None:
        self.revision = revision

    def read(self, path: str) -> bytes:
        """Return the content of a project file."""
        if self.revision:
            return read_at_revision(path, self.revision)
        return (PROJECT_ROOT / path).read_bytes()

    def lock(self) -> dict[str, Any]:
        """Return dvc.lock, parsed."""
        return yaml.safe_load(self.read(str(LOCK_FILE))) or {}

    def stage_metrics(self, stage: str) -> dict[str, float]:
        """Return the metrics `stage` wrote when it last ran."""
        return json.loads(self.read(str(PATHS.stage_metrics(stage))))


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


def log_stage_runs(client: MlflowClient, parent_run_id: str, experiment_id: str, lock: dict[str, Any]) -> list[str]:
    """Log the record every stage that ran left as a nested run of the parent.

    A stage whose process died without closing its record (a kill) is logged
    KILLED with a note. Finished stages get their output hashes from `lock`.

    Returns:
        The stages that ran, in pipeline order.
    """
    folder = records_folder(parent_run_id)
    ran = []
    for stage in pipeline_stages():
        record = StageRecord.load(folder, stage)
        if record is None:
            continue
        if record.status == "RUNNING":
            record.error = "the stage process ended without closing its run (killed)"
        if record.status == "FINISHED":
            record.tags |= stage_output_tags(lock, stage)
        log_record(client, record, folder, experiment_id, parent_run_id)
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
            params=[Param(key, str(value)) for key, value in recorded_params.items()],
        )
        client.set_terminated(run.info.run_id, "FINISHED")


def close_parent(client: MlflowClient, parent_run_id: str, exit_code: int, revision: str = "") -> str:
    """Record the outcome on the parent run and end it; return its status.

    Args:
        client: The MLflow client.
        parent_run_id: The parent run of this pipeline.
        exit_code: The exit code of `dvc repro` (or `dvc exp run`).
        revision: Read dvc.lock and the metrics at this git revision instead of the working tree.
    """
    from mlflow.entities import Metric, RunTag

    status = outcome(exit_code)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    records = PipelineRecords(revision)
    try:
        lock = records.lock() if status == "FINISHED" else {}
        ran = log_stage_runs(client, parent_run_id, experiment_id, lock)
        if status == "FINISHED":
            cached = [stage for stage in pipeline_stages() if stage not in ran]
            log_cached_stage_runs(client, parent_run_id, experiment_id, records, cached)
            final: dict[str, float] = {}
            for stage in FINAL_METRICS_STAGES:
                final.update(records.stage_metrics(stage))
            now = client.get_run(parent_run_id).info.start_time
            tags = {
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
        client.set_terminated(parent_run_id, status)
    shutil.rmtree(records_folder(parent_run_id), ignore_errors=True)
    return status


def end_children(client: MlflowClient, parent_run_id: str, status: str) -> None:
    """End every nested run of `parent_run_id` still RUNNING with `status`."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    running = client.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'",
    )
    for child in running:
        client.set_terminated(child.info.run_id, status)
