"""Close the pipeline's MLflow parent run with the outcome of `dvc repro`.

On success the parent gets the final metrics, read from the metrics files the
stages wrote (so runs compare in `mlflow ui` even when stages were cached),
dvc.lock as an artifact and the hash of every stage output as tags. Any nested
run still RUNNING (its stage was killed) is ended with the parent.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from src.config import PATHS
from src.utils.cli import EXIT_INTERRUPTED, fail
from src.utils.data_versions import LOCK_FILE, lineage_tags
from src.utils.io import read_json
from src.utils.logs import setup_logging
from src.utils.mlflow_run import import_mlflow, one_line, tracking_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

METRICS_FILES = {PATHS.cv_metrics: "train", PATHS.metrics: "evaluate"}
SIGTERM_EXIT = 143


def outcome(exit_code: int) -> str:
    """Map the exit code of `dvc repro` to an MLflow run status."""
    if exit_code == 0:
        return "FINISHED"
    if exit_code in (EXIT_INTERRUPTED, SIGTERM_EXIT):
        return "KILLED"
    return "FAILED"


def final_metrics() -> dict[str, float]:
    """Read every metrics file the pipeline writes into one flat mapping."""
    metrics: dict[str, float] = {}
    for path, stage in METRICS_FILES.items():
        metrics.update(read_json(path, made_by=stage))
    return metrics


def main(argv: list[str] | None = None) -> None:
    """End the parent run FINISHED, FAILED or KILLED from `--exit-code`."""
    parser = argparse.ArgumentParser(prog="python -m src.utils.finish_pipeline", description=__doc__)
    parser.add_argument("--run-id", required=True, help="the parent run to close")
    parser.add_argument("--exit-code", type=int, required=True, help="the exit code of `dvc repro`")
    arguments = parser.parse_args(argv)
    setup_logging()
    status = outcome(arguments.exit_code)
    try:
        mlflow = import_mlflow()
        client = mlflow.MlflowClient()
        try:
            if status == "FINISHED":
                now = mlflow.utils.time.get_current_time_millis()
                metrics = [mlflow.entities.Metric(key, float(value), now, 0) for key, value in final_metrics().items()]
                tags = [mlflow.entities.RunTag(key, value) for key, value in lineage_tags(LOCK_FILE).items()]
                client.log_batch(arguments.run_id, metrics=metrics, tags=tags)
                client.log_artifact(arguments.run_id, str(LOCK_FILE))
        finally:
            end_children(client, arguments.run_id, "KILLED" if status == "KILLED" else "FAILED")
            client.set_tag(arguments.run_id, "pipeline.exit_code", str(arguments.exit_code))
            client.set_terminated(arguments.run_id, status)
    except Exception as error:
        fail(f"cannot close MLflow run {arguments.run_id} at {tracking_uri()}: {one_line(error)}")
    logger.info("MLflow parent run %s %s; browse it with `make ui` or `mlflow ui`", arguments.run_id, status)


def end_children(client: MlflowClient, parent_run_id: str, status: str) -> None:
    """End every nested run of `parent_run_id` still RUNNING with `status`."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    running = client.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'",
    )
    for child in running:
        client.set_terminated(child.info.run_id, status)


if __name__ == "__main__":
    main()
