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
import contextlib
import logging
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.config import PROJECT_ROOT, Config
from src.utils.cli import (
    EXIT_INTERRUPTED,
    ChildRunner,
    Interrupted,
    exit_now,
    fail,
    parse_config,
    process_alive,
    signals_deferred,
)
from src.utils.exp_queue import QueueError, stop
from src.utils.git import git_state, tags_at
from src.utils.mlflow_run import (
    NOTE_TAG,
    PARENT_RUN_ENV,
    ROLE_TAG,
    SWEEP_EXPERIMENT_TAG,
    describe_outage,
    describe_tracking_error,
    experiment_id_for,
    experiment_parent_file,
    import_mlflow,
    one_line,
    records_folder,
    tracking_uri,
    where_to_browse,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

logger = logging.getLogger(__name__)

PID_TAG = "pipeline.pid"
HOST_TAG = "pipeline.host"
ROOT_TAG = "pipeline.root"


def process_tags() -> dict[str, str]:
    """The tags that let a later command tell whether the process running a parent run is gone.

    The process id, the host and the project root of this process (see `end_orphans`).
    """
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname(), ROOT_TAG: str(PROJECT_ROOT)}


def open_parent_run(
    config: Config,
    params_text: str,
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
        run_name: The run's name; MLflow picks one when empty.
        tags: Extra tags, e.g. the sweep a run belongs to.
        command: The command that runs the pipeline, as the run's source.
    """
    commit, dirty = git_state()
    run_tags = {
        ROLE_TAG: "parent",
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": command,
        "mlflow.source.git.commit": commit,
        "git.commit": commit,
        "git.dirty": str(dirty).lower(),
        "data.version": ",".join(tags_at(commit)),
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
        """Take the lock, or stop with one sentence if another pipeline holds it."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.path.open("a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            fail(
                f"another `make pipeline` or `make sweep` is running in this checkout ({holder}); "
                "wait for it to end and run again"
            )
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"{self.command}, pid {os.getpid()}")
        self.handle.flush()


def end_orphans(client: MlflowClient, experiment_id: str, command: str = "make pipeline") -> list[str]:
    """End the parent runs left RUNNING by a pipeline or sweep whose process is gone (a hard kill).

    Only runs started on this machine, from this checkout, are considered. Each is
    closed KILLED with a note, and the stage records it left become KILLED nested runs.
    A killed sweep's points are first taken off DVC's queue, and any queue worker
    still training one is stopped (see `exp_queue.stop`), so nothing goes on
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
    from src.utils.finish_pipeline import close_late, close_parent, pending_outcomes

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


def main(argv: list[str] | None = None) -> None:
    """`make pipeline`: open the parent run, run `dvc repro` under it, close it with the outcome.

    Prints the parent run's id alone on stdout as soon as the run is open.
    Exits 2 on a bad params.yaml (before any run exists), 1 when the tracking
    store cannot be reached or another pipeline runs in this checkout, and
    otherwise with the exit code of `dvc repro` (130 or 143 when interrupted).
    """
    parser = argparse.ArgumentParser(prog="python -m src.utils.start_pipeline", description=__doc__)
    parser.add_argument("--run-name", default="", help="name of the parent run (default: MLflow's)")
    parser.add_argument("--force", action="store_true", help="re-run every stage (dvc repro --force)")
    parser.add_argument("--tag", action="append", default=[], help="KEY=VALUE: a tag of the parent run (repeatable)")
    arguments, config = parse_config(parser, argv)
    extra_tags = dict(tag.split("=", 1) for tag in arguments.tag if "=" in tag)
    lock = CheckoutLock()
    lock.acquire()
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        mlflow = import_mlflow()
        client = mlflow.MlflowClient()
        experiment_id = experiment_id_for(client, config.mlflow.experiment_name)
        end_orphans(client, experiment_id)
    except QueueError as error:
        fail(f"cannot stop the DVC queue of a killed sweep: {error}")
    except Exception as error:
        fail(f"cannot open the MLflow parent run at {tracking_uri()}: {describe_tracking_error(error)}")
    try:
        params_text = Path(arguments.config).read_text(encoding="utf-8")
        run_id = open_parent_run(config, params_text, arguments.run_name, tags=process_tags() | extra_tags)
    except Exception as error:
        fail(f"cannot open the MLflow parent run at {tracking_uri()}: {describe_outage(error)}")
    sys.stdout.write(f"{run_id}\n")
    sys.stdout.flush()

    from src.utils.data_versions import after_failure, read_lock
    from src.utils.finish_pipeline import close_parent, keep_outcome, outcome, stopped_stage

    command = [sys.executable, "-m", "dvc", "repro", *(["--force"] if arguments.force else [])]
    # The stage ends its run KILLED and writes nothing half-done; a hard kill is cleaned up by `end_orphans`.
    runner = ChildRunner(stopping="the running stage")
    interrupted = None
    lock_before = read_lock()
    try:
        exit_code = runner.run(command, PROJECT_ROOT, {**os.environ, PARENT_RUN_ENV: run_id}).returncode
    except Interrupted as interrupt:
        interrupted, exit_code = interrupt, interrupt.exit_code
    stopped_at = stopped_stage(run_id) if exit_code else ""
    # A second Ctrl-C must not leave the parent run RUNNING: closing it is not interrupted.
    with signals_deferred():
        # The failing stage (or DVC) has said what went wrong, on its `error:` line; say truthfully what is left.
        left = after_failure(lock_before, stopped_at) if exit_code else ""
        try:
            status = close_parent(client, run_id, exit_code)
        except Exception as error:
            keep_outcome(run_id, exit_code)
            ended = {0: "ran", **dict.fromkeys((130, 143), "was interrupted")}.get(exit_code, "failed")
            fail(
                f"the pipeline {ended}, but run {run_id} cannot be recorded now: {describe_outage(error)}; "
                f"its stage records and outcome are kept, and the next make target that reaches the tracking "
                f"server records them and ends the run {outcome(exit_code)}" + (f"; {left}" if left else "")
            )
    logger.info("MLflow parent run %s %s; %s", run_id, status, where_to_browse(run_id))
    if not exit_code:
        exit_now(0)
    where = f" at stage {stopped_at}" if stopped_at else ""
    if interrupted:
        fail(f"pipeline interrupted{where}; run {run_id} is {status}; {left}", exit_code)
    logger.error("pipeline failed%s; run %s is %s; %s", where, run_id, status, left)
    exit_now(exit_code)


if __name__ == "__main__":
    main()
