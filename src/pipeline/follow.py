"""Watching a pipeline run live: nested runs as the stages start, metric history as it comes, progress in the terminal.

While `dvc repro` runs, the pipeline process follows what the stage processes
write (their records and progress events, see `src.tracking.stage_runs`): a
stage's nested run is created RUNNING when it starts, its per-epoch metrics
arrive as history while it trains, and it ends with its metrics, artifacts and
model when the stage ends, all in this process, while DVC runs the next stage.
The terminal gets one line as each stage starts and ends, a progress bar for
work in steps (plain lines when it is not a terminal), and a table at the end.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from src.cli import Progress, one_line
from src.ml.catalog import METRICS
from src.paths import pipeline_stages
from src.tracking.stage_runs import StageRecord, finish_stage_run, open_stage_run, read_events, records_folder
from src.tracking.tags import CACHED_TAG, MAIN_METRIC_TAG, STAGE_TAG, TASK_REASON_TAG, TASK_TAG

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.3


class StageFollower:
    """Follow the stages of one pipeline run as `dvc repro` runs them, and log each as a nested run live.

    Args:
        client: The MLflow client.
        parent_run_id: The pipeline's parent run.
        experiment_id: Its experiment.
        progress: Where the lines and bars go.
    """

    def __init__(self, client: MlflowClient, parent_run_id: str, experiment_id: str, progress: Progress) -> None:
        self.client = client
        self.parent_run_id = parent_run_id
        self.experiment_id = experiment_id
        self.progress = progress
        self.runs: dict[str, str] = {}
        self.ended: set[str] = set()
        self.streamed: set[str] = set()
        self.offsets: dict[str, int] = {}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="stage-follower", daemon=True)

    def start(self) -> None:
        """Start following, in a thread of this process."""
        self._thread.start()

    def stop(self) -> None:
        """Stop following once DVC is done: one last look, so a stage that just ended is logged too."""
        self._stop.set()
        self._thread.join()
        if self.error is None:
            self._look()

    def _follow(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self._look()
            if self.error is not None:
                return

    def _look(self) -> None:
        """Log what every stage has written since the last look; give up (closing will retry) on an error."""
        try:
            folder = records_folder(self.parent_run_id)
            for stage in pipeline_stages():
                record = StageRecord.load(folder, stage)
                if record is None or stage in self.ended:
                    continue
                if stage not in self.runs:
                    self.runs[stage] = open_stage_run(self.client, record, self.experiment_id, self.parent_run_id)
                    self.progress.say(f"{stage}: running")
                self._log_events(folder, stage)
                if record.status != "RUNNING":
                    self.progress.close(stage)
                    status = finish_stage_run(self.client, self.runs[stage], record, folder, stage in self.streamed)
                    self.ended.add(stage)
                    seconds = ((record.end_ms or record.start_ms) - record.start_ms) / 1000
                    self.progress.say(f"{stage}: {status} in {seconds:.1f} s")
        except Exception as error:  # the tracking server went away: closing the parent says so
            logger.debug("stopped following the stages: %s", one_line(error))
            self.error = error

    def _log_events(self, folder: Any, stage: str) -> None:
        from mlflow.entities import Metric

        events, self.offsets[stage] = read_events(folder, stage, self.offsets.get(stage, 0))
        if not events:
            return
        self.streamed.add(stage)
        metrics = [
            Metric(key, value, event["time_ms"], event["step"])
            for event in events
            for key, value in event["metrics"].items()
        ]
        for start in range(0, len(metrics), 1000):  # MLflow takes up to 1000 metrics per batch
            self.client.log_batch(self.runs[stage], metrics=metrics[start : start + 1000])
        last = events[-1]
        self.progress.step(stage, last["step"], last.get("total"), last["metrics"], unit="epoch")


def results_line(metrics: dict[str, float], tags: dict[str, str]) -> str:
    """`results: <main metric> <value>, ...`: a finished run's held-out metrics of its task, its main metric first."""
    main, task = tags.get(MAIN_METRIC_TAG, ""), tags.get(TASK_TAG, "")
    names = [main, *(name for name, metric in METRICS.items() if metric.task == task and name != main)]
    shown = [f"{name} {metrics[name]:.4f}" for name in names if name in metrics]
    return "results: " + ", ".join(shown) if shown else ""


def summary(client: MlflowClient, parent_run_id: str) -> str:
    """The table printed at the end: each stage's status, seconds and whether it ran, then the task and results."""
    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )
    by_stage = {child.data.tags.get(STAGE_TAG, ""): child for child in children}
    lines = [f"{'stage':<12} {'status':<9} {'seconds':>8}  how"]
    for stage in pipeline_stages():
        run = by_stage.get(stage)
        if run is None:
            lines.append(f"{stage:<12} {'-':<9} {'-':>8}  not run")
            continue
        cached = run.data.tags.get(CACHED_TAG) == "true"
        seconds = "-" if cached else f"{run.data.metrics.get('stage_seconds', 0.0):.1f}"
        lines.append(f"{stage:<12} {run.info.status:<9} {seconds:>8}  {'cached' if cached else 'ran'}")
    tags = parent.data.tags
    if TASK_TAG in tags:
        from src.ml.tables import task_line

        lines.append(task_line(tags[TASK_TAG], tags.get(TASK_REASON_TAG, "")))
    results = results_line(parent.data.metrics, tags)
    if results:
        lines.append(results)
    return "\n".join(lines) + "\n"
