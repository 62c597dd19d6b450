"""Stage runs: what a stage leaves behind (a record), and how a record becomes a nested MLflow run.

A stage process does not import mlflow: the decorator writes a record, and the
pipeline process logs it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import os
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.cli import STOPS_RECEIVED, one_line
from src.config import Config
from src.io import write_json
from src.paths import PATHS, PROJECT_ROOT, params_under, stage_param_keys
from src.tracking.client import experiment_id_for, import_mlflow, tracking_uri
from src.tracking.tags import PARENT_RUN_ENV, RECORDS_ENV, ROLE_TAG, STAGE_TAG, TASK_TAG

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient


logger = logging.getLogger(__name__)


MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "skops", "pandas", "numpy", "scipy")

TRUSTED_TYPES = (
    "src.ml.features.Featurizer",
    "src.ml.encoding.TableEncoder",
    "src.ml.encoding.Categories",
    "src.ml.encoding.Words",
    "src.ml.targets.ScaledTarget",
    "functools.partial",  # scikit-learn's encoders keep their checks as partials of scikit-learn functions
    "numpy.dtype",  # the dtype a one-hot encoder writes
)
"""The project's own classes (and the plain types its encoders hold) a logged model may hold, trusted on purpose
when skops loads it; scikit-learn's own types are trusted too, anything else stays refused."""


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
        history: Metrics per step (an epoch), logged as MLflow metric history.
    """

    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    model: Any = None
    model_input_example: pd.DataFrame | None = None
    history: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class StageRecord:
    """What one run of a stage leaves behind, in a folder, until its nested run is logged.

    Under `make pipeline` a stage does not import mlflow (that costs each stage
    process seconds): it writes this record, and the pipeline process logs every
    record as a nested run, with the stage's true start and end times, in one
    process. On its own, a stage logs its record at once.
    """

    stage: str
    start_ms: int
    end_ms: int | None = None
    status: str = "RUNNING"
    pid: int = field(default_factory=os.getpid)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    has_model: bool = False
    history: dict[str, list[float]] = field(default_factory=dict)
    error: str = ""
    traceback: str = ""

    @staticmethod
    def path(folder: Path, stage: str) -> Path:
        """The record file of `stage` in `folder`."""
        return folder / f"{stage}.json"

    def save(self, folder: Path) -> None:
        """Write the record (atomically) into `folder`."""
        write_json(asdict(self), self.path(folder, self.stage))

    @classmethod
    def load(cls, folder: Path, stage: str) -> StageRecord | None:
        """Read the record of `stage` from `folder`, or None if the stage left none."""
        path = cls.path(folder, stage)
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    def keep(self, folder: Path, result: StageResult) -> None:
        """Copy what the stage returned into the record and its folder (artifacts, model)."""
        self.metrics = {key: float(value) for key, value in result.metrics.items()}
        self.history = {key: [float(value) for value in values] for key, values in result.history.items()}
        self.tags.update(result.tags)
        files = folder / self.stage
        files.mkdir(parents=True, exist_ok=True)
        for artifact in result.artifacts:
            shutil.copyfile(artifact, files / Path(artifact).name)
            self.artifacts.append(Path(artifact).name)
        if result.model is not None:
            import joblib

            joblib.dump(result.model, files / "model.joblib")
            if result.model_input_example is not None:
                result.model_input_example.to_parquet(files / "input_example.parquet")
            self.has_model = True


EVENTS_SUFFIX = ".events"
_current: dict[str, Any] = {}  # the folder and stage of the stage run this process is in, set by `mlflow_stage`


def events_file(folder: Path, stage: str) -> Path:
    """The append-only file of `stage`'s progress events (one JSON object a line) in a records folder."""
    return folder / f"{stage}{EVENTS_SUFFIX}"


def report_progress(metrics: dict[str, float], step: int, total: int | None = None) -> None:
    """Tell the pipeline how a stage is getting on: metrics at a step (an epoch) of `total`.

    The pipeline process follows these events as they come and logs them as the
    nested run's metric history, so `mlflow ui` shows training while it runs, and
    the terminal shows a progress bar. Outside a tracked stage it does nothing.
    """
    if not _current:
        return
    event = {"step": step, "total": total, "time_ms": now_ms(), "metrics": {k: float(v) for k, v in metrics.items()}}
    with events_file(_current["folder"], _current["stage"]).open("a", encoding="utf-8") as events:
        events.write(json.dumps(event) + "\n")


def read_events(folder: Path, stage: str, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The progress events of `stage` written since `offset` (in bytes), and the offset after them.

    A line still being written (no newline yet) is left for the next read.
    """
    path = events_file(folder, stage)
    if not path.exists():
        return [], offset
    with path.open("rb") as events:
        events.seek(offset)
        data = events.read()
    complete = data[: data.rfind(b"\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()], offset + len(complete)


def records_folder(parent_run_id: str) -> Path:
    """The folder where the stages of the parent run `parent_run_id` leave their records."""
    return Path(os.environ.get(RECORDS_ENV) or PROJECT_ROOT / ".pipeline") / parent_run_id


def experiment_parent_file(experiment_name: str) -> Path:
    """Where a sweep writes the parent run id of the DVC experiment `experiment_name`."""
    return records_folder("experiments") / experiment_name


def experiment_parent_run() -> str:
    """The parent run a sweep opened for the DVC experiment this stage runs in, or "".

    Points queued with `dvc exp run --queue` all run with the environment of the
    queue's workers, so the parent cannot come in PIPELINE_PARENT_RUN_ID; DVC
    gives each its experiment's name in DVC_EXP_NAME instead.
    """
    name = os.environ.get("DVC_EXP_NAME", "")
    path = experiment_parent_file(name) if name else None
    return path.read_text().strip() if path is not None and path.exists() else ""


def now_ms() -> int:
    """The current time in milliseconds, as MLflow stores it."""
    return int(time.time() * 1000)


def open_stage_run(client: MlflowClient, record: StageRecord, experiment_id: str, parent_run_id: str = "") -> str:
    """Create the MLflow run of a stage record, RUNNING from the stage's own start, with its params; return its id."""
    from mlflow.entities import Param
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    tags = {STAGE_TAG: record.stage, ROLE_TAG: "stage", **record.tags}
    if parent_run_id:
        tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    run = client.create_run(experiment_id, start_time=record.start_ms, run_name=record.stage, tags=tags)
    if record.params:
        client.log_batch(run.info.run_id, params=[Param(key, value) for key, value in record.params.items()])
    return run.info.run_id


def finish_stage_run(
    client: MlflowClient, run_id: str, record: StageRecord, folder: Path, history_logged: bool = False
) -> str:
    """Log what a stage record holds at its end (metrics, tags, artifacts, model), end the run; return its status.

    A record still RUNNING (its process was killed) ends KILLED with a note.
    `history_logged`: the metric history came as progress events, already logged.
    """
    import mlflow
    from mlflow.entities import Metric, RunTag

    if record.status == "RUNNING":
        record.error = record.error or "the stage process ended without closing its run (killed)"
    end_ms = record.end_ms or now_ms()
    history = [
        Metric(key, value, end_ms, step)
        for key, values in ({} if history_logged else record.history).items()
        for step, value in enumerate(values, start=1)
    ]
    tags = dict(record.tags) | ({"error": record.error} if record.error else {})
    client.log_batch(
        run_id,
        metrics=[Metric(key, value, end_ms, 0) for key, value in record.metrics.items()],
        tags=[RunTag(key, value) for key, value in tags.items()],
    )
    for start in range(0, len(history), 1000):  # MLflow takes up to 1000 metrics per batch
        client.log_batch(run_id, metrics=history[start : start + 1000])
    for artifact in record.artifacts:
        client.log_artifact(run_id, str(folder / record.stage / artifact))
    if record.traceback:
        client.log_text(run_id, record.traceback, "error.txt")
    if record.has_model:
        with mlflow.start_run(run_id=run_id):
            _log_model(folder / record.stage, record.tags.get(TASK_TAG, ""))
    status = record.status if record.status != "RUNNING" else "KILLED"
    client.set_terminated(run_id, status, end_time=end_ms)
    return status


def log_record(
    client: MlflowClient, record: StageRecord, folder: Path, experiment_id: str, parent_run_id: str = ""
) -> str:
    """Log a stage record as an MLflow run (nested under `parent_run_id` if given) and end it.

    Returns:
        The run id.
    """
    run_id = open_stage_run(client, record, experiment_id, parent_run_id)
    finish_stage_run(client, run_id, record, folder)
    return run_id


def mlflow_stage(name: str) -> Callable[[Callable[[Config], StageResult]], Callable[[Config], StageResult]]:
    """Track a stage's `main(config)` as a nested MLflow run called `name`.

    Under `make pipeline` (the parent's id in `PIPELINE_PARENT_RUN_ID`) or a sweep
    (see `experiment_parent_run`) the stage
    writes a StageRecord that the pipeline process logs as a nested run of the
    parent; on its own the stage logs a run of its own at once, and says where.
    Either way the run has the params dvc.yaml lists for the stage, what the
    stage returns, its wall time (`stage_seconds`) and its true start and end,
    and ends FINISHED, FAILED with the error, or KILLED on an interrupt. The
    metrics are also written to reports/stages/<stage>.json (a DVC metrics
    output), so that a later run that skips the stage can record them.

    Args:
        name: The stage name, as in dvc.yaml.

    Returns:
        A decorator for the stage's `main`.
    """

    def decorate(stage_main: Callable[[Config], StageResult]) -> Callable[[Config], StageResult]:
        @functools.wraps(stage_main)
        def tracked(config: Config) -> StageResult:
            parent_run_id = os.environ.get(PARENT_RUN_ENV, "") or experiment_parent_run()
            folder = records_folder(parent_run_id) if parent_run_id else Path(tempfile.mkdtemp(prefix="stage-run-"))
            every_param = config.flat()
            record = StageRecord(
                stage=name,
                start_ms=now_ms(),
                params={key: str(value) for key, value in params_under(every_param, stage_param_keys(name)).items()},
            )
            record.save(folder)
            _current.update(folder=folder, stage=name)
            started = time.perf_counter()
            try:
                result = stage_main(config)
                write_json(result.metrics, PATHS.stage_metrics(name))
                record.keep(folder, result)
                record.params |= {key: str(value) for key, value in result.params.items()}
                record.metrics["stage_seconds"] = time.perf_counter() - started
                record.status = "FINISHED"
                return result
            except BaseException as error:
                # An error raised while an interrupt unwinds the stage (a writer closed half-way) is the interrupt's.
                interrupted = isinstance(error, KeyboardInterrupt | SystemExit) or bool(STOPS_RECEIVED)
                record.status = "KILLED" if interrupted else "FAILED"
                record.error = one_line(error)
                if STOPS_RECEIVED and not isinstance(error, KeyboardInterrupt):
                    record.error = f"{signal.Signals(STOPS_RECEIVED[0]).name}, then {record.error}"
                record.traceback = "" if isinstance(error, KeyboardInterrupt | SystemExit) else traceback.format_exc()
                raise
            finally:
                record.end_ms = now_ms()
                record.save(folder)
                if parent_run_id:  # the pipeline process says how the stage ended
                    logger.debug(
                        "stage %s %s; its run is logged under parent run %s", name, record.status, parent_run_id
                    )
                else:
                    _log_on_its_own(record, folder, config.mlflow.experiment_name)

        tracked.stage_name = name  # type: ignore[attr-defined]
        return tracked

    return decorate


def _log_on_its_own(record: StageRecord, folder: Path, experiment_name: str) -> None:
    """Log the record of a stage run outside the pipeline as a run of its own."""
    mlflow = import_mlflow()
    client = mlflow.MlflowClient()
    run_id = log_record(client, record, folder, experiment_id_for(client, experiment_name))
    shutil.rmtree(folder, ignore_errors=True)
    logger.info(
        "stage %s logged to MLflow run %s as a run of its own (experiment %s, %s)",
        record.stage,
        run_id,
        experiment_name,
        tracking_uri(),
    )


def import_model_logging() -> None:
    """Import what logging a model takes (MLflow's scikit-learn flavour, skops): a second or two, paid once.

    The pipeline calls it in a thread as the stages start, so that logging the
    train stage's model does not wait for these imports after the last stage.
    """
    import mlflow.models
    import mlflow.sklearn  # noqa: F401
    import skops.io  # noqa: F401


def _log_model(files: Path, task: str) -> None:
    """Log the model a stage kept, with its signature and pinned requirements, to the active run.

    Explicit requirements skip MLflow's inference, which costs seconds. MLflow
    saves scikit-learn models with skops, which refuses to load types it does
    not know; scikit-learn's own (a random forest's `Tree`) and TRUSTED_TYPES
    are trusted here on purpose, anything else stays refused. The project's `src`
    package travels with the model (`code_paths`), so it loads anywhere, `mlflow
    models serve` included. Every input column is required in the signature, and
    may hold empty values (text, numbers and dates alike). The model's task, classes
    and input columns are in its metadata, where `make promote` compares them.
    """
    import warnings

    import joblib
    import mlflow.sklearn
    import pandas as pd
    import skops.io
    from mlflow.models import infer_signature
    from mlflow.types.schema import ColSpec, Schema

    model = joblib.load(files / "model.joblib")
    example_file = files / "input_example.parquet"
    input_example = pd.read_parquet(example_file) if example_file.exists() else None
    with warnings.catch_warnings():  # MLflow's hint on integer columns: `make serve` takes a gap there (see serve)
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        signature = infer_signature(input_example, model.predict(input_example)) if input_example is not None else None
    if signature is not None:  # a column may hold an empty value, but it must be sent
        columns = signature.inputs.inputs
        signature.inputs = Schema([ColSpec(column.type, column.name, required=True) for column in columns])
    requirements = [f"{name}=={importlib.metadata.version(name)}" for name in MODEL_REQUIREMENTS]
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    trusted = [name for name in untrusted if name.startswith("sklearn.") or name in TRUSTED_TYPES]
    metadata = {"task": task, "classes": [str(label) for label in getattr(model, "classes_", [])]}
    if input_example is not None:
        metadata["input_columns"] = [str(name) for name in input_example.columns]
    mlflow.sklearn.log_model(
        model,
        name="model",
        signature=signature,
        input_example=input_example,
        pip_requirements=requirements,
        code_paths=[str(PROJECT_ROOT / "src")],
        metadata=metadata,
        skops_trusted_types=trusted or None,
    )
