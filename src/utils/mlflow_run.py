"""Attach a stage to the pipeline's MLflow parent run as a nested run.

This module and `start_pipeline` / `finish_pipeline` are the only places that
talk to MLflow. mlflow is imported when a run is opened, never at import time,
so a stage that fails validation pays nothing for it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from src.config import PATHS, PROJECT_ROOT, Config, stage_param_keys
from src.utils.io import write_json

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

PARENT_RUN_ENV = "PIPELINE_PARENT_RUN_ID"
"""The variable `make pipeline` exports the parent run id in (not MLFLOW_RUN_ID, which
would make MLflow resume the parent itself instead of nesting under it)."""

STAGE_TAG = "pipeline.stage"
ROLE_TAG = "pipeline.role"
CACHED_TAG = "pipeline.cached"
MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "skops", "pandas", "numpy", "scipy")


@dataclass
class StageResult:
    """What a stage hands to its nested MLflow run.

    Attributes:
        params: Parameters to log besides the stage's keys in dvc.yaml (logged always).
        metrics: Numeric results to log; also written to reports/stages/<stage>.json.
        artifacts: Files to attach to the run.
        tags: Extra tags for the run.
        model: A fitted scikit-learn estimator to log as the run's model.
        model_input_example: A few input rows of `model`, for its signature and example.
    """

    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    model: Any = None
    model_input_example: pd.DataFrame | None = None


def tracking_uri() -> str:
    """Return the tracking URI every process of the project shares.

    `MLFLOW_TRACKING_URI` when set (the Makefile sets it to an absolute path);
    otherwise MLflow's own default store, `mlflow.db` at the project root,
    addressed absolutely so that any working directory agrees.
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def import_mlflow() -> ModuleType:
    """Import mlflow with telemetry off and the project's tracking URI set."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


def experiment_id_for(client: MlflowClient, name: str) -> str:
    """Return the id of the experiment called `name`, creating it if needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name)


def one_line(error: BaseException) -> str:
    """Describe an exception in one line: its type and first line of message."""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0]}" if message else type(error).__name__


def mlflow_stage(name: str) -> Callable[[Callable[[Config], StageResult]], Callable[[Config], StageResult]]:
    """Run a stage's `main(config)` inside a nested MLflow run called `name`.

    The run is nested under the parent whose id is in `PIPELINE_PARENT_RUN_ID`
    (set by `make pipeline`); without it the stage gets a run of its own, and
    says where. It logs the params dvc.yaml lists for the stage and what the
    stage returns, with its wall time, and writes the metrics to
    reports/stages/<stage>.json (a DVC metrics output) so that a later run that
    skips the stage can record them. The run always ends: FINISHED, FAILED with
    the error, or KILLED on an interrupt.

    Args:
        name: The stage name, as in dvc.yaml.

    Returns:
        A decorator for the stage's `main`.
    """

    def decorate(stage_main: Callable[[Config], StageResult]) -> Callable[[Config], StageResult]:
        @functools.wraps(stage_main)
        def tracked(config: Config) -> StageResult:
            mlflow = import_mlflow()
            parent_run_id = os.environ.get(PARENT_RUN_ENV) or None
            client = mlflow.MlflowClient()
            if parent_run_id:
                experiment_id = client.get_run(parent_run_id).info.experiment_id
            else:
                experiment_id = experiment_id_for(client, config.mlflow.experiment_name)
            run = mlflow.start_run(
                experiment_id=experiment_id,
                run_name=name,
                parent_run_id=parent_run_id,
                tags={STAGE_TAG: name, ROLE_TAG: "stage"},
            )
            started = time.perf_counter()
            try:
                result = stage_main(config)
                write_json(result.metrics, PATHS.stage_metrics(name))
                every_param = config.flat()
                params = {key: every_param[key] for key in stage_param_keys(name)} | result.params
                _log_result(mlflow, result, params, duration=time.perf_counter() - started)
            except BaseException as error:
                interrupted = isinstance(error, KeyboardInterrupt | SystemExit)
                mlflow.set_tag("error", one_line(error))
                if not interrupted:
                    mlflow.log_text(traceback.format_exc(), "error.txt")
                mlflow.end_run("KILLED" if interrupted else "FAILED")
                raise
            mlflow.end_run("FINISHED")
            where = f"under parent run {parent_run_id}" if parent_run_id else "as a run of its own"
            logger.info(
                "stage %s logged to MLflow run %s %s (experiment %s, %s)",
                name,
                run.info.run_id,
                where,
                config.mlflow.experiment_name,
                tracking_uri(),
            )
            return result

        tracked.stage_name = name  # type: ignore[attr-defined]
        return tracked

    return decorate


def _log_result(mlflow: ModuleType, result: StageResult, params: dict[str, Any], duration: float) -> None:
    """Log a StageResult, its params and its duration to the active run."""
    metrics = {key: float(value) for key, value in result.metrics.items()}
    metrics["stage_seconds"] = duration
    mlflow.log_params({key: str(value) for key, value in params.items()})
    mlflow.log_metrics(metrics)
    if result.tags:
        mlflow.set_tags(result.tags)
    for artifact in result.artifacts:
        mlflow.log_artifact(str(artifact))
    if result.model is not None:
        _log_model(mlflow, result.model, result.model_input_example)


def _log_model(mlflow: ModuleType, model: Any, input_example: pd.DataFrame | None) -> None:
    """Log a scikit-learn model with its signature and pinned requirements.

    Explicit requirements skip MLflow's inference, which costs seconds.
    """
    import mlflow.sklearn
    from mlflow.models import infer_signature

    signature = None
    if input_example is not None:
        signature = infer_signature(input_example, model.predict(input_example))
    requirements = [f"{name}=={importlib.metadata.version(name)}" for name in MODEL_REQUIREMENTS]
    mlflow.sklearn.log_model(
        model,
        name="model",
        signature=signature,
        input_example=input_example,
        pip_requirements=requirements,
    )
