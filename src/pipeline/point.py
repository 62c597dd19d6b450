"""One sweep point on a cluster worker, run inside a fresh clone of the sweep's commit.

The worker's task (`src.pipeline.fanout.run_point`) clones the git remote at the
commit the sweep runs, checks its own venv against that commit's lock, and starts
`python -m src.pipeline.point` in the clone, with the clone's own code. This:

1. marks the point's parent run (opened by `make sweep`) with this attempt,
   `sweep.attempt`, and the worker's host;
2. runs `dvc exp run --pull` with the point's params: missing data comes from
   the DVC remote, and the stages leave their records here;
3. pushes the experiment (`dvc exp push`) and checks that the git remote's ref
   now holds this attempt's commit (`dvc exp push` exits 0 when a ref of that
   name is there already);
4. only then logs the stage runs into the parent run and ends it FINISHED.

An attempt that lost the race (the remote's ref holds another attempt's
commit) logs nothing, and so does one whose parent run the sweep has ended
meanwhile (its scheduler died): the status the sweep wrote stays. A failed
attempt ends the parent FAILED with its stage runs, if it is still the point's
latest attempt. SIGTERM (the sweep was interrupted) stops the stages and ends
the parent KILLED. If the worker that started it dies, the kernel sends it
SIGHUP: it stops its stages, logs nothing (the scheduler runs the point again
elsewhere, or the sweep ends it if the scheduler is gone) and removes its
folder.

The last line on standard output is the outcome, as JSON: `status` (FINISHED,
FAILED, KILLED, LOST or ABANDONED), `commit`, `attempt` and `message`.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from src.cli import EXIT_FAILED, Interrupted, one_line
from src.logs import setup_logging
from src.paths import PIPELINE_DVC_SETTINGS
from src.pipeline.fanout import release_folder
from src.pipeline.sweep import experiment_commit, experiment_revision
from src.tracking.client import describe_tracking_error, import_mlflow
from src.tracking.tags import ATTEMPT_TAG, NOTE_TAG, PARENT_RUN_ENV, WORKER_TAG
from src.versions.runner import GitError, dvc, dvc_error, git

logger = logging.getLogger(__name__)


EXIT_LOST = 3
"""The attempt ran, but another attempt of the same point had pushed its experiment first."""


WORKER_GONE = signal.SIGHUP
"""What the kernel sends the point when its worker dies: not SIGTERM, which is the sweep's stop."""


def die_with_parent(parent_pid: int) -> bool:
    """Have the kernel send this process WORKER_GONE when its parent (the Dask worker) dies (Linux only).

    Returns:
        Whether the parent is still there.
    """
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, WORKER_GONE)
    return not parent_pid or os.getppid() == parent_pid


def remote_experiment(remote: str, name: str) -> str:
    """The commit of the experiment `name` on the git remote, or "" if the remote has none."""
    return experiment_commit(git("ls-remote", remote, "refs/exps/*"), name)


def outcome(status: str, message: str = "", commit: str = "", attempt: int = 0) -> dict[str, object]:
    """The JSON-able outcome of this attempt."""
    return {"status": status, "message": message, "commit": commit, "attempt": attempt}


def run(name: str, parent_run_id: str, overrides: list[str], remote: str, worker_pid: int) -> dict[str, object]:
    """Run the point `name` in this clone, push it, and log it into `parent_run_id`; return the outcome."""
    from src.tracking.parent import close_parent

    client = import_mlflow().MlflowClient()
    parent = client.get_run(parent_run_id)
    if parent.info.status != "RUNNING":  # another attempt ran the point to its end already
        return outcome("LOST", f"the point's run is {parent.info.status} already")
    attempt = int(parent.data.tags.get(ATTEMPT_TAG, "0")) + 1
    client.set_tag(parent_run_id, ATTEMPT_TAG, str(attempt))
    client.set_tag(parent_run_id, WORKER_TAG, socket.gethostname())
    logger.info("point %s, attempt %d, on %s", name, attempt, socket.gethostname())

    def latest() -> bool:
        return client.get_run(parent_run_id).data.tags.get(ATTEMPT_TAG) == str(attempt)

    def worker_gone() -> bool:
        return bool(worker_pid) and os.getppid() != worker_pid

    def ended_by_sweep() -> dict[str, object] | None:
        """The outcome to return, logging nothing, if the sweep has ended the point's run already."""
        status = client.get_run(parent_run_id).info.status
        return None if status == "RUNNING" else outcome("LOST", f"the sweep ended its run {status}", attempt=attempt)

    command = ["exp", "run", "--pull", "--name", name]
    for override in overrides:
        command += ["--set-param", override]
    environment = {**PIPELINE_DVC_SETTINGS, PARENT_RUN_ENV: parent_run_id}
    try:
        ran = dvc(*command, env=environment)
    except Interrupted as stopped:
        if stopped.signum == WORKER_GONE or worker_gone() or not latest():
            return outcome("ABANDONED", "its worker died; the point runs again elsewhere", attempt=attempt)
        if ended := ended_by_sweep():
            return ended
        client.set_tag(parent_run_id, NOTE_TAG, "the sweep was interrupted")
        return outcome(close_parent(client, parent_run_id, stopped.exit_code), str(stopped), attempt=attempt)
    if worker_gone():
        return outcome("ABANDONED", "its worker died; the point runs again elsewhere", attempt=attempt)
    if ran.returncode:
        if not latest():
            return outcome("LOST", "a later attempt of this point runs", attempt=attempt)
        if ended := ended_by_sweep():
            return ended
        client.set_tag(parent_run_id, NOTE_TAG, f"dvc exp run exited with code {ran.returncode}")
        return outcome(close_parent(client, parent_run_id, ran.returncode), "dvc exp run failed", attempt=attempt)
    commit = experiment_revision(name)
    if ended := ended_by_sweep():
        return ended
    pushed = dvc("exp", "push", remote, name, quiet=True)
    on_remote = remote_experiment(remote, name)
    if on_remote and on_remote != commit:
        logger.warning("point %s: another attempt pushed its experiment first (%s); logging nothing", name, on_remote)
        return outcome("LOST", f"another attempt pushed {on_remote} first", commit, attempt)
    if ended := ended_by_sweep():
        return ended
    if pushed.returncode or not on_remote:
        reason = dvc_error(pushed) if pushed.returncode else "the git remote has no ref of it after the push"
        client.set_tag(parent_run_id, NOTE_TAG, f"dvc exp push: {reason}")
        close_parent(client, parent_run_id, EXIT_FAILED, commit)
        return outcome("FAILED", f"could not push the experiment: {reason}", commit, attempt)
    client.set_tag(parent_run_id, ATTEMPT_TAG, str(attempt))  # the attempt that won, if two ran at once
    client.set_tag(parent_run_id, WORKER_TAG, socket.gethostname())
    status = close_parent(client, parent_run_id, 0, commit)
    return outcome(status, "", commit, attempt)


def main(argv: list[str] | None = None) -> None:
    """`python -m src.pipeline.point --name N --parent-run-id R [--set key=value ...]`: print the outcome as JSON."""
    parser = argparse.ArgumentParser(prog="python -m src.pipeline.point", description=__doc__)
    parser.add_argument("--name", required=True, help="the DVC experiment's name")
    parser.add_argument("--parent-run-id", required=True)
    parser.add_argument("--set", action="append", default=[], help="a param override, key=value")
    parser.add_argument("--remote", default="origin", help="the git remote to push the experiment to")
    parser.add_argument("--worker-pid", type=int, default=0, help="the Dask worker that started this")
    parser.add_argument("--folder", default="", help="the attempt's folder, removed if its worker died")
    arguments = parser.parse_args(argv)
    setup_logging()
    if not die_with_parent(arguments.worker_pid):
        sys.exit(EXIT_FAILED)
    try:
        result = run(arguments.name, arguments.parent_run_id, arguments.set, arguments.remote, arguments.worker_pid)
    except (GitError, OSError, RuntimeError) as error:
        result = outcome("FAILED", describe_tracking_error(error) or one_line(error))
    if result["status"] == "ABANDONED" and arguments.folder:
        release_folder(Path(arguments.folder))  # no task is left to remove it
    sys.stdout.write(json.dumps(result) + "\n")
    codes = {"FINISHED": 0, "LOST": EXIT_LOST, "KILLED": 130}
    sys.exit(codes.get(str(result["status"]), EXIT_FAILED))


if __name__ == "__main__":
    main()
