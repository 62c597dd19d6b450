"""`make pipeline`: open the MLflow parent run, run `dvc repro` under it, close it.

params.yaml is validated first, so a bad one exits 2 before any run exists. The
parent's id is printed alone on stdout and exported to the stages as
`PIPELINE_PARENT_RUN_ID`. One process does the three steps, so mlflow is imported
once, and interrupts are handled in one place: the parent and the running stage
end KILLED. After a failure or an interrupt the stage that stopped gets its
outputs back from the DVC cache, so the workspace matches dvc.lock, and one line
says which stages dvc.lock records from this run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.cli import (
    EXIT_BAD_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    ChildRunner,
    Interrupted,
    Progress,
    exit_now,
    fail,
    parse_config,
    process_alive,
    signals_deferred,
)
from src.cluster import ClusterError, scheduler_address
from src.config import Config
from src.paths import PATHS, PIPELINE_DVC_SETTINGS, PROJECT_ROOT, pipeline_stages
from src.pipeline.follow import StageFollower, summary
from src.pipeline.preload import Runner
from src.pipeline.queue import QueueError, stop
from src.tracking.client import (
    describe_outage,
    describe_tracking_error,
    experiment_id_for,
    import_mlflow,
    tracking_uri,
    where_to_browse,
)
from src.tracking.parent import open_parent_run
from src.tracking.stage_runs import experiment_parent_file, import_model_logging, records_folder
from src.tracking.tags import HOST_TAG, NOTE_TAG, PARENT_RUN_ENV, PID_TAG, ROLE_TAG, ROOT_TAG, SWEEP_EXPERIMENT_TAG
from src.versions.runner import code_version

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run


logger = logging.getLogger(__name__)


def process_tags() -> dict[str, str]:
    """The tags that let a later command tell whether the process running a parent run is gone.

    The process id, the host and the project root of this process (see `end_orphans`).
    """
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname(), ROOT_TAG: str(PROJECT_ROOT)}


class LockedError(RuntimeError):
    """Another pipeline or sweep runs in this checkout; the message says which."""


class CheckoutLock:
    """One `make pipeline` or `make sweep` per checkout at a time: an exclusive lock on .pipeline/lock.

    A sweep stops the checkout's DVC queue workers when it is interrupted, and a
    pipeline or sweep ends what a killed one left: neither may run beside another.
    The operating system releases the lock when the process ends, however it
    ends, so it never goes stale.

    Args:
        command: What holds the lock, as the user typed it.
    """

    def __init__(self, command: str = "make pipeline") -> None:
        self.command = command
        self.path = records_folder("lock").parent / "lock"
        self.handle: Any = None

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            LockedError: If another pipeline or sweep holds it, naming it.
        """
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.path.open("a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            raise LockedError(
                f"another `make pipeline` or `make sweep` is running in this checkout ({holder}); "
                "wait for it to end and run again"
            ) from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"{self.command}, pid {os.getpid()}")
        self.handle.flush()


def end_orphans(client: MlflowClient, experiment_id: str, command: str = "make pipeline") -> list[str]:
    """End the parent runs left RUNNING by a pipeline or sweep whose process is gone (a hard kill).

    Only runs started on this machine, from this checkout, are considered. Each is
    closed KILLED with a note, and the stage records it left become KILLED nested runs.
    A killed sweep's points are first taken off DVC's queue, and any queue worker
    still training one is stopped (see `src.pipeline.queue.stop`), so nothing goes on
    writing to a run that is ended.

    Args:
        client: The MLflow client.
        experiment_id: The MLflow experiment to look in.
        command: The command that looks, for the note.

    Returns:
        The ids of the runs ended.

    Raises:
        QueueError: If DVC's queue cannot be stopped.
    """
    from src.tracking.parent import close_late, close_parent, pending_outcomes

    running = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{ROLE_TAG}` = 'parent' and attributes.status = 'RUNNING' "
            f"and tags.`{HOST_TAG}` = '{socket.gethostname()}' and tags.`{ROOT_TAG}` = '{PROJECT_ROOT}'"
        ),
    )
    orphans = [run for run in running if _orphaned(run)]
    kept = pending_outcomes()
    for run in [run for run in orphans if run.info.run_id in kept]:
        status = close_late(client, run.info.run_id, kept[run.info.run_id], command)
        logger.warning(
            "recorded run %s late: %s (its pipeline could not reach the tracking store)", run.info.run_id, status
        )
    orphans = [run for run in orphans if run.info.run_id not in kept]
    points = [run.data.tags[SWEEP_EXPERIMENT_TAG] for run in orphans if SWEEP_EXPERIMENT_TAG in run.data.tags]
    if points:
        stop(points)
    for run in orphans:
        pid = run.data.tags[PID_TAG]
        client.set_tag(run.info.run_id, NOTE_TAG, f"ended by a later {command}: process {pid} was gone")
        close_parent(client, run.info.run_id, EXIT_INTERRUPTED)
        point = run.data.tags.get(SWEEP_EXPERIMENT_TAG)
        if point:
            experiment_parent_file(point).unlink(missing_ok=True)
            logger.warning("ended run %s KILLED: the sweep that ran it (point %s) was killed", run.info.run_id, point)
        else:
            logger.warning("ended run %s KILLED: the pipeline that ran it was killed", run.info.run_id)
    return [run.info.run_id for run in orphans]


def _orphaned(run: Run) -> bool:
    """Whether the process that ran `run` is gone (a run without a process id never is)."""
    pid = int(run.data.tags.get(PID_TAG, "0") or 0)
    return bool(pid) and not process_alive(pid)


class PipelineError(RuntimeError):
    """The pipeline cannot run, or its run cannot be recorded; the message is the one line to show.

    Attributes:
        exit_code: The exit code a command ends with on it.
    """

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class PipelineResult:
    """How one pipeline run ended.

    Attributes:
        run_id: The parent run.
        exit_code: The exit code of `dvc repro` (130 or 143 when interrupted).
        status: The parent run's status: FINISHED, FAILED or KILLED.
        stopped_at: The stage that failed or was interrupted ("" if none).
        left: One sentence on what dvc.lock and the workspace hold after a failure ("" on success).
    """

    run_id: str
    exit_code: int
    status: str
    stopped_at: str = ""
    left: str = ""


class Ahead:
    """What `make pipeline` starts before its parent run is open, while MLflow loads (seconds).

    Unless forced, `dvc status` finds which stages have to run; when one has, or
    when forced, the preloaded runner starts importing what the stages import.
    Nothing runs a stage before the parent run is open.

    Args:
        force: Every stage will run (`--force`): no need to ask DVC.
    """

    def __init__(self, force: bool) -> None:
        self._runner: Runner | None = Runner(dict(os.environ)) if force else None
        self._status: subprocess.Popen | None = None
        self._stale: set[str] | None = None  # None: every stage (forced, or DVC could not tell)
        self._waiting: threading.Thread | None = None
        if not force:
            self._status = subprocess.Popen(
                [sys.executable, "-m", "dvc", "status", "--json"],
                cwd=PROJECT_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            self._waiting = threading.Thread(target=self._start_runner_if_needed, daemon=True)
            self._waiting.start()

    def _start_runner_if_needed(self) -> None:
        if self._status is None:
            return
        output, _ = self._status.communicate()
        if self._status.returncode == 0:
            try:
                self._stale = set(json.loads(output or "{}"))
            except ValueError:
                self._stale = None
        if self._status.returncode >= 0 and self._stale != set():  # not when stopped by a signal (negative)
            self._runner = Runner(dict(os.environ))

    def stale(self) -> set[str] | None:
        """The stages DVC says have to run; None when every stage will (forced, or DVC could not tell)."""
        if self._waiting is not None:
            self._waiting.join()
        return self._stale

    def nothing_to_run(self) -> bool:
        """Whether DVC said every stage is up to date."""
        return self._status is not None and self.stale() == set()

    def runner(self) -> Runner | None:
        """The preloaded runner, if one was started."""
        if self._waiting is not None:
            self._waiting.join()
        return self._runner

    def stop(self) -> None:
        """Stop `dvc status` if it still runs, and the runner."""
        if self._status is not None and self._status.poll() is None:
            self._status.terminate()
            self._status.wait()
        if self._waiting is not None:
            self._waiting.join()
        if self._runner is not None:
            self._runner.stop()


class SourceError(ValueError):
    """The source table cannot be used; the message is the one line to show, before any run."""


def check_source(config: Config, reread: bool = True, root: Path = PROJECT_ROOT) -> None:
    """Check the user's table as data_load will, and the params against its task, before any run exists.

    When data_load will run (`reread`), a CSV or Parquet file of the working tree is
    read and prepared as data_load prepares it (`src.ml.tables.prepare_table`); a
    dataset made in code, an image folder and a file at a git revision are checked by
    data_load itself. When it will not, its schema in the workspace (data/raw/schema.json,
    current as DVC says) tells the task. Either way the main metric and the estimator
    are checked against the task.

    Raises:
        SourceError: One line naming the file, the column or the key, and what to do.
    """
    from src.ml.catalog import estimator_for, main_metric
    from src.ml.sources import parse_table
    from src.ml.tables import TableSchema, prepare_table

    params = config.data_load
    try:
        if not reread:
            if not (root / PATHS.schema).is_file():
                return
            task = TableSchema.load(root / PATHS.schema).task
        elif params.generated or params.image_folder or params.rev:
            return
        else:
            path = root / params.source
            if not path.is_file():
                raise SourceError(
                    f"{params.source} not found; put the file there and track it with `dvc add {params.source}`"
                )
            table = parse_table(path, params.source)
            task = prepare_table(table, params.target, params.id_columns, config.base.task, params.source)[1].task
        main_metric(config.evaluate.main_metric, task)
        estimator_for(config.train.estimator, task)
    except SourceError:
        raise
    except ValueError as error:
        raise SourceError(str(error)) from None


def repro(client: MlflowClient, run_id: str, force: bool, preloaded: Runner | None, progress: Progress) -> int:
    """Run `dvc repro` under the parent run `run_id`, following its stages live; return its exit code.

    An interrupt is passed on to the running stage, which ends its run KILLED and
    writes nothing half-done; a hard kill is cleaned up by `end_orphans`.
    """
    command = [sys.executable, "-m", "dvc", "repro", "--quiet", *(["--force"] if force else [])]
    threading.Thread(target=import_model_logging, name="import-model-logging", daemon=True).start()
    follower = StageFollower(client, run_id, client.get_run(run_id).info.experiment_id, progress)
    follower.start()
    try:
        runner_environment = preloaded.environment() if preloaded is not None else {}
        environment = {**os.environ, **PIPELINE_DVC_SETTINGS, PARENT_RUN_ENV: run_id, **runner_environment}
        return ChildRunner(stopping="the running stage").run(command, PROJECT_ROOT, environment).returncode
    except Interrupted as interrupt:
        return interrupt.exit_code
    finally:
        follower.stop()


def run_pipeline(
    config: Config,
    params_text: str,
    run_name: str = "",
    force: bool = False,
    tags: dict[str, str] | None = None,
    on_open: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> PipelineResult:
    """Open the parent run, run `dvc repro` under it, and close it with the outcome: what `make pipeline` does.

    Takes the checkout's lock first and ends runs that a killed pipeline or sweep
    left RUNNING. A failure or an interrupt of a stage is a result, not an error:
    the stage that stopped gets its outputs back from the DVC cache and the
    parent ends FAILED or KILLED.

    Args:
        config: The validated config.
        params_text: The params.yaml it comes from, logged on the parent run.
        run_name: The parent run's name; MLflow picks one when empty.
        force: Re-run every stage (`dvc repro --force`).
        tags: Extra tags of the parent run.
        on_open: Called with the parent run's id as soon as it is open.
        progress: Where the stages' lines and progress bars go (stderr by default).

    Raises:
        PipelineError: Another pipeline runs in this checkout, the tracking store
            cannot be reached, or the run cannot be recorded as it ends (its
            outcome is then kept for the next make target).
    """
    from src.lockfile import read_lock
    from src.tracking.parent import close_parent, keep_outcome, outcome, stopped_stage
    from src.versions.workspace import after_failure

    lock = CheckoutLock()
    try:
        lock.acquire()
    except LockedError as error:
        raise PipelineError(str(error)) from None
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    ahead = Ahead(force)  # while MLflow loads: what DVC has to run, and the runner if anything
    try:
        try:
            client = import_mlflow().MlflowClient()
            end_orphans(client, experiment_id_for(client, config.mlflow.experiment_name))
        except Exception as error:
            if isinstance(error, QueueError):
                raise PipelineError(f"cannot stop the DVC queue of a killed sweep: {error}") from None
            where = tracking_uri()
            raise PipelineError(
                f"cannot open the MLflow parent run at {where}: {describe_tracking_error(error)}"
            ) from None
        stale = ahead.stale()
        try:  # the first stage reads the source: when it runs again, so does the check
            check_source(config, reread=stale is None or next(iter(pipeline_stages())) in stale)
        except SourceError as error:
            raise PipelineError(str(error), EXIT_BAD_CONFIG) from None
        try:
            run_id = open_parent_run(config, params_text, code_version(), run_name, tags=process_tags() | (tags or {}))
        except Exception as error:
            raise PipelineError(
                f"cannot open the MLflow parent run at {tracking_uri()}: {describe_outage(error)}"
            ) from None
        if on_open is not None:
            on_open(run_id)
        lock_before, exit_code = read_lock(), 0
        try:
            nothing_to_run = ahead.nothing_to_run()
        except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM before any stage ran: the parent ends KILLED
            nothing_to_run, exit_code = False, getattr(interrupt, "exit_code", EXIT_INTERRUPTED)
        if nothing_to_run:  # every stage is cached: the parent records them, no dvc repro needed
            exit_code = 0
        elif not exit_code:
            exit_code = repro(client, run_id, force, ahead.runner(), progress or Progress())
    finally:
        ahead.stop()
    stopped_at = stopped_stage(run_id) if exit_code else ""
    # A second Ctrl-C must not leave the parent run RUNNING: closing it is not interrupted.
    with signals_deferred():
        # The failing stage (or DVC) has said what went wrong, on its `error:` line; say truthfully what is left.
        left = after_failure(lock_before, stopped_at) if exit_code else ""
        try:
            status = close_parent(client, run_id, exit_code)
        except Exception as error:
            ended = {0: "ran", EXIT_INTERRUPTED: "was interrupted", EXIT_TERMINATED: "was interrupted"}
            recorded = recorded_status(client, run_id)
            if recorded not in ("", "RUNNING"):  # the run was ended; what failed was logging part of it
                raise PipelineError(
                    f"the pipeline {ended.get(exit_code, 'failed')} and run {run_id} is {recorded}, but not all of "
                    f"its stage runs, metrics and models could be logged: {describe_outage(error)}"
                    + (f"; {left}" if left else "")
                ) from None
            keep_outcome(run_id, exit_code)
            raise PipelineError(
                f"the pipeline {ended.get(exit_code, 'failed')}, but run {run_id} cannot be recorded now: "
                f"{describe_outage(error)}; its stage records and outcome are kept, and the next make target that "
                f"reaches the tracking server records them and ends the run {outcome(exit_code)}"
                + (f"; {left}" if left else "")
            ) from None
    return PipelineResult(run_id, exit_code, status, stopped_at, left)


def recorded_status(client: MlflowClient, run_id: str) -> str:
    """The status the tracking store holds for `run_id`, or "" when the store cannot be asked."""
    try:
        return client.get_run(run_id).info.status
    except Exception:
        return ""


def main(argv: list[str] | None = None) -> None:
    """`make pipeline`: open the parent run, run `dvc repro` under it, close it with the outcome.

    Prints the parent run's id alone on stdout as soon as the run is open.
    Exits 2 on a bad params.yaml or DASK_SCHEDULER (before any run exists), 1 when the tracking
    store cannot be reached or another pipeline runs in this checkout, and
    otherwise with the exit code of `dvc repro` (130 or 143 when interrupted).
    """
    parser = argparse.ArgumentParser(prog="python -m src.pipeline", description=__doc__)
    parser.add_argument("--run-name", default="", help="name of the parent run (default: MLflow's)")
    parser.add_argument("--force", action="store_true", help="re-run every stage (dvc repro --force)")
    parser.add_argument("--tag", action="append", default=[], help="KEY=VALUE: a tag of the parent run (repeatable)")
    arguments, config = parse_config(parser, argv)
    tags = dict(tag.split("=", 1) for tag in arguments.tag if "=" in tag)
    try:
        scheduler_address()  # a wrong DASK_SCHEDULER is named before any run, not at the train stage
    except ClusterError as error:
        fail(str(error), EXIT_BAD_CONFIG)

    def announce(run_id: str) -> None:
        sys.stdout.write(f"{run_id}\n")
        sys.stdout.flush()

    params_text = Path(arguments.config).read_text(encoding="utf-8")
    try:
        result = run_pipeline(config, params_text, arguments.run_name, arguments.force, tags, on_open=announce)
    except PipelineError as error:
        fail(str(error), error.exit_code)
    sys.stderr.write(summary(import_mlflow().MlflowClient(), result.run_id))
    logger.info("MLflow parent run %s %s; %s", result.run_id, result.status, where_to_browse(result.run_id))
    if not result.exit_code:
        exit_now(0)
    where = f" at stage {result.stopped_at}" if result.stopped_at else ""
    if result.exit_code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        fail(f"pipeline interrupted{where}; run {result.run_id} is {result.status}; {result.left}", result.exit_code)
    logger.error("pipeline failed%s; run %s is %s; %s", where, result.run_id, result.status, result.left)
    exit_now(result.exit_code)


if __name__ == "__main__":
    main()
