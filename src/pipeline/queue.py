"""DVC's experiment queue as `make sweep` drives it: start its workers, read its statuses, stop it.

`dvc queue start` detaches each Celery worker into a process group of its own,
so neither a Ctrl-C in the terminal, nor a SIGTERM to make, nor a kill of the
sweep's process group reaches the workers or the experiments they run: a worker
left alone trains every point still queued. Whoever stops a sweep stops them
(`stop`); after a sweep was killed outright, the next `make pipeline` or `make
sweep` does (see `src.pipeline.run.end_orphans`).

The processes are found by where they run: an experiment (`dvc exp exec-run`,
its `dvc repro` and stages) inside .dvc/tmp/exps, and a worker (`dvc exp
queue-worker`, and the `dvc queue start` that waits for it) at the project root.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Collection
from typing import TYPE_CHECKING

from src.paths import PIPELINE_DVC_SETTINGS, PROJECT_ROOT
from src.versions.runner import dvc

if TYPE_CHECKING:
    import psutil


logger = logging.getLogger(__name__)


EXPERIMENTS_TMP = PROJECT_ROOT / ".dvc" / "tmp" / "exps"
"""Where DVC's queue keeps its broker, its process records and each experiment's copy of the workspace."""


EXPERIMENT_SIGNAL = signal.SIGINT
"""What an experiment gets first: a Ctrl-C, so that the running stage ends its run KILLED."""


WORKER_SIGNAL = signal.SIGTERM
"""What a worker gets first: Celery's warm shutdown, so that DVC finishes its bookkeeping of the task in hand."""


ESCALATION = ((10.0, signal.SIGTERM), (20.0, signal.SIGKILL))
"""Seconds after the first signal, and the signal then sent to whatever is left."""


GIVE_UP_SECONDS = 30.0


class QueueError(RuntimeError):
    """DVC's queue did not do what was asked; the message says what is left."""


def start_workers(jobs: int) -> None:
    """Start up to `jobs` queue workers (`dvc queue start`); workers already running count.

    Raises:
        QueueError: If dvc refuses.
    """
    started = dvc("queue", "start", "--jobs", str(jobs), quiet=True, env=PIPELINE_DVC_SETTINGS)
    if started.returncode:
        reason = (started.stderr.strip() or "no message").splitlines()[-1]
        raise QueueError(f"dvc could not start the queue workers: {reason}")


def statuses() -> dict[str, str]:
    """The status DVC's queue gives each experiment by name: Queued, Running, Success or Failed."""
    from dvc.repo import Repo

    with Repo(str(PROJECT_ROOT)) as repo:
        return {entry.get("name") or "": entry["status"] for entry in repo.experiments.celery_queue.status()}


def queue_processes() -> dict[psutil.Process, str]:
    """Every live process of this project's queue, with its role: "experiment" or "worker"."""
    import psutil

    root = os.path.realpath(PROJECT_ROOT)
    experiments = os.path.realpath(EXPERIMENTS_TMP)
    found: dict[psutil.Process, str] = {}
    for process in psutil.process_iter(["cmdline", "cwd", "status"]):
        info = process.info
        if process.pid == os.getpid() or info["status"] in (None, psutil.STATUS_ZOMBIE):
            continue
        arguments = info["cmdline"] or []
        cwd = info["cwd"] or ""
        if cwd == experiments or cwd.startswith(experiments + os.sep) or any(experiments in word for word in arguments):
            found[process] = "experiment"
        elif cwd == root and _is_worker(arguments):
            found[process] = "worker"
    return found


def _is_worker(arguments: list[str]) -> bool:
    """Whether a command line is a DVC queue worker, or the `dvc queue start` waiting for one."""
    words = [word.rsplit("/", 1)[-1] for word in arguments]
    if "dvc" not in words:
        return False
    after = words[words.index("dvc") + 1 :]
    return after[:2] in (["exp", "queue-worker"], ["queue", "start"])


def stop(names: Collection[str]) -> int:
    """Stop every process of this project's queue and take the experiments `names` off it.

    The queued ones are removed first, so that no worker starts them. Then each
    experiment gets SIGINT, as a Ctrl-C would give it (its stage ends its run
    KILLED), and each worker SIGTERM (it ends the task in hand and takes no
    other); whatever is left after 10 s gets SIGTERM, after 20 s SIGKILL. Last,
    an experiment a killed worker left Running is marked failed and one still
    queued is removed, so `dvc queue status` shows none of `names` running or
    queued.

    Args:
        names: The DVC experiments to take off the queue.

    Returns:
        How many processes were stopped.

    Raises:
        QueueError: If a process outlives SIGKILL, or an experiment stays on the queue.
    """
    import psutil

    _clear(names)
    sent: dict[psutil.Process, int] = {}
    started = time.monotonic()
    while processes := queue_processes():
        elapsed = time.monotonic() - started
        if elapsed > GIVE_UP_SECONDS:
            pids = ", ".join(str(process.pid) for process in processes)
            raise QueueError(f"DVC queue processes {pids} outlived SIGKILL")
        for process, role in processes.items():
            signum = EXPERIMENT_SIGNAL if role == "experiment" else WORKER_SIGNAL
            for after, escalation in ESCALATION:
                if elapsed >= after:
                    signum = escalation
            if sent.get(process) != signum:
                sent[process] = signum
                try:
                    process.send_signal(signum)
                except psutil.Error:
                    continue
                logger.debug("sent %s to %s process %d", signal.Signals(signum).name, role, process.pid)
        time.sleep(0.2)
    if sent:
        logger.info("stopped %d DVC queue processes in %.1f s", len(sent), time.monotonic() - started)
    _clear(names)
    left = {name: status for name, status in statuses().items() if name in names and status in ("Queued", "Running")}
    if left:
        raise QueueError(f"DVC's queue still has {', '.join(f'{name} {status}' for name, status in left.items())}")
    return len(sent)


def _clear(names: Collection[str]) -> None:
    """Remove the queued experiments of `names`; mark failed those left Running by a worker that is gone.

    A worker killed mid-task never records the end of its task, so DVC would
    show the experiment Running for good. With no queue process left, its
    process is gone: it is recorded as ended, as DVC does when it finds a
    process gone, and `kill` then marks the task failed without sending any
    signal.
    """
    from dvc.repo import Repo

    with Repo(str(PROJECT_ROOT)) as repo:
        queue = repo.experiments.celery_queue
        entries = {entry.get("name"): entry["status"] for entry in queue.status()}
        queued = [name for name in names if entries.get(name) == "Queued"]
        if queued:
            queue.remove(queued)
            logger.debug("removed from DVC's queue: %s", ", ".join(queued))
        running = [name for name in names if entries.get(name) == "Running"]
        if not running or queue_processes():
            return
        for entry in queue.match_queue_entry_by_name(running, queue.iter_active()).values():
            record = queue.proc.get(entry.stash_rev) if entry is not None else None
            if record is not None and record.returncode is None:
                record.returncode = -1
                queue.proc[entry.stash_rev] = record
        queue.kill(running, force=True)
        logger.debug("marked failed in DVC's queue: %s", ", ".join(running))
