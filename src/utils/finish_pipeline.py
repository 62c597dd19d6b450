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

import datetime
import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from src.config import PATHS, PROJECT_ROOT, pipeline_stages
from src.utils.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, process_alive
from src.utils.data_versions import LOCK_FILE, lineage_tags, output_hashes
from src.utils.io import read_at_revision, write_json
from src.utils.mlflow_run import (
    CACHED_TAG,
    NOTE_TAG,
    ROLE_TAG,
    STAGE_TAG,
    StageRecord,
    log_record,
    now_ms,
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
        """The files a pipeline's outcome is read from: dvc.lock and every stage's metrics."""
        return [LOCK_FILE, *(PATHS.stage_metrics(stage) for stage in pipeline_stages())]

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


def logged_stages(client: MlflowClient, parent_run_id: str, experiment_id: str) -> set[str]:
    """The stages that have a nested run under the parent already (a close cut short, then finished late)."""
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`{ROLE_TAG}` = 'stage'"
    )
    return {child.data.tags.get(STAGE_TAG, "") for child in children}


def log_stage_runs(
    client: MlflowClient, parent_run_id: str, experiment_id: str, lock: dict[str, Any], logged: set[str] = frozenset()
) -> list[str]:
    """Log the record every stage that ran left as a nested run of the parent.

    A stage whose process died without closing its record (a kill) is logged
    KILLED with a note. Finished stages get their output hashes from `lock`.
    Stages in `logged` have their nested run already.

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
        if stage not in logged:
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


def main(argv: list[str] | None = None) -> None:
    """Record, late, the parent runs whose pipeline could not reach the tracking store as it ended.

    make runs this before its targets when such a run is kept in `.pipeline/`:
    the first target that reaches the tracking server (and the S3 behind it)
    logs what was missing and ends the run with its true status. A store still
    out of reach is left for the next target, quietly.
    """
    import argparse

    from src.utils.logs import setup_logging
    from src.utils.mlflow_run import import_mlflow, one_line

    parser = argparse.ArgumentParser(prog="python -m src.utils.finish_pipeline", description=main.__doc__)
    parser.add_argument("--command", default="a later make target", help="the command that runs this, for the note")
    arguments = parser.parse_args(argv)
    setup_logging()
    pending = pending_outcomes()
    if not pending:
        return
    client = import_mlflow().MlflowClient()
    for run_id, kept in pending.items():
        try:
            if client.get_run(run_id).info.status != "RUNNING":  # ended meanwhile, by hand or by end_orphans
                shutil.rmtree(records_folder(run_id), ignore_errors=True)
                continue
            status = close_late(client, run_id, kept, arguments.command)
        except Exception as error:
            logger.debug("run %s is still not recorded: %s", run_id, one_line(error))
            continue
        logger.warning("recorded run %s late: %s; its pipeline could not reach the tracking store", run_id, status)


if __name__ == "__main__":
    main()
