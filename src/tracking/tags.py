"""The names the project gives MLflow tags and environment variables, each in one place."""

from __future__ import annotations

from src.lockfile import DATA_HASH_TAG, output_tag
from src.paths import PATHS

PARENT_RUN_ENV = "PIPELINE_PARENT_RUN_ID"

"""The variable `make pipeline` exports the parent run id in (not MLFLOW_RUN_ID, which
would make MLflow resume the parent itself instead of nesting under it)."""


RECORDS_ENV = "PIPELINE_RECORDS_DIR"
"""Where stages leave their records for the pipeline process (default: .pipeline/ at the project root)."""


STAGE_TAG = "pipeline.stage"

ROLE_TAG = "pipeline.role"

CACHED_TAG = "pipeline.cached"

NOTE_TAG = "pipeline.note"
"""Why a parent run ended the way it did, when it was not the pipeline's own outcome (a kill, an interrupt)."""


SWEEP_TAG = "sweep"
"""The id of the sweep a parent run belongs to."""


SWEEP_EXPERIMENT_TAG = "sweep.experiment"
"""The DVC experiment a sweep's parent run is the point of."""


ATTEMPT_TAG = "sweep.attempt"
"""On a cluster sweep's parent run: how many times its point started on a worker (a worker that died: one more)."""

WORKER_TAG = "sweep.worker"
"""On a cluster sweep's parent run: the host of the worker its latest attempt ran on."""

PARALLEL_WORK_TAG = "train.parallel_work"
"""On a train run: where its folds and trees were computed, a Dask scheduler's address or "this machine"."""

TASK_TAG = "task"
"""On a parent run, data_load's and train's: classification or regression, as data_load found it."""

TASK_REASON_TAG = "task.reason"
"""On a parent run and data_load's: why that task (the label's type and distinct values, or base.task)."""

MAIN_METRIC_TAG = "main_metric"
"""On a parent run and evaluate's: the metric that ranks it (`evaluate.main_metric`, or the task's default)."""

DIRECTION_TAG = "main_metric.direction"
"""Beside MAIN_METRIC_TAG: `higher` or `lower`, which way is better."""

PID_TAG = "pipeline.pid"

HOST_TAG = "pipeline.host"

ROOT_TAG = "pipeline.root"

CHAMPION = "champion"

MODEL_HASH_TAG = output_tag(PATHS.model)

RAW_DATA_HASH_TAG = output_tag(PATHS.raw)

TEST_DATA_HASH_TAG = output_tag(PATHS.test)

# Tags copied from the parent run onto the registered version: the way back to code and data.
LINEAGE_TAGS = (
    "git.commit", "git.dirty", "data.version", DATA_HASH_TAG, MODEL_HASH_TAG, RAW_DATA_HASH_TAG,
    TASK_TAG, MAIN_METRIC_TAG,
)  # fmt: skip
