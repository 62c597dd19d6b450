"""`make sweep` on a Dask cluster: each point a task on a worker, still a DVC experiment and a complete MLflow run.

With `DASK_SCHEDULER` set (team.env), `make sweep` checks first, in one line
each, that the run is in team mode (sqlite takes no writers from other
machines), that the tree is clean and HEAD is on the git remote (a worker
clones it from there), and that the scheduler answers. It then opens each
point's parent run, as a local sweep does, and submits one task per point
(`run_point`). A worker runs a point in a fresh clone at the sweep's commit,
with its venv checked against that commit's lock: see `src.pipeline.point` for
what the point does there. Points are reported as each ends, their
experiments fetched into this clone (`dvc exp pull`), and ranked at the end.

A worker that dies mid-point: the scheduler runs the point again on another
worker; its parent run carries the attempt, and only the attempt whose
experiment reaches the git remote logs anything. Ctrl-C or SIGTERM: each point
in flight is told to stop and ends KILLED, those not started end KILLED, and
the cluster keeps running. A scheduler that dies: its workers stop their points
(Dask closes a worker whose scheduler is gone), the sweep ends every point not
ended FAILED and says so in one line; no worker left to take points for
WORKERLESS_SECONDS: the same.

Each attempt's clone lives in a folder of `.team/points/` that a lock file
beside it marks as held while the worker or the point's process lives; a
folder whose holders died (a worker killed mid-point) is removed by the next
point on that machine, and by `make cluster-up` and `cluster-down`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from src.cli import EXIT_BAD_CONFIG, EXIT_FAILED, Interrupted, InterruptFlag, Progress
from src.cluster import SCHEDULER_ENV, ClusterError, SchedulerLostError, connect, lost
from src.config import Config
from src.paths import PROJECT_ROOT
from src.tracking.client import import_mlflow, uses_tracking_server
from src.tracking.tags import NOTE_TAG
from src.versions.remote import configure_remote
from src.versions.runner import GitError, dvc, dvc_error, git

logger = logging.getLogger(__name__)


POINT_RESOURCE = "POINT"
"""The Dask resource a point holds: each worker of `make cluster-up` and `make worker` has one (a point at a time)."""

POINTS_DIR = PROJECT_ROOT / ".team" / "points"
"""Where a worker clones the sweep's commit for each point; each clone is removed when its point ends."""

POLL_SECONDS = 0.5

WINNER_SECONDS = 120.0
"""How long a point whose attempt lost the push waits for the attempt that won to end its parent run."""

STOP_SECONDS = 30.0
"""How long a stopped point has to end its stage runs KILLED before it is killed outright."""

WORKERLESS_SECONDS = 60.0
"""How long points may wait with no worker to take them before the sweep stops (a nanny restarts one in seconds)."""

WORKERS_POLL_SECONDS = 5.0


class SweepRefusedError(RuntimeError):
    """The sweep cannot go to the cluster as things are; the message says why and what to do."""

    exit_code = EXIT_BAD_CONFIG


def git_remote() -> str:
    """The git remote HEAD's branch tracks, else `origin`."""
    with contextlib.suppress(GitError):
        upstream = git("rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}")
        return upstream.split("/", 1)[0]
    return "origin"


def check_ready(remote: str) -> tuple[str, str]:
    """Check that a cluster sweep can run from here; return the commit the workers will run and where they get it.

    Returns:
        The commit, and the git remote's URL (a local path made absolute).

    Raises:
        SweepRefusedError: In team mode only; with a clean tree; with HEAD on the git remote.
    """
    if not uses_tracking_server():
        raise SweepRefusedError(
            f"a sweep on the cluster ({SCHEDULER_ENV}) needs team mode: a tracking server every worker reaches "
            "(sqlite takes no writers from other machines); run `make team-up` or fill in team.env"
        )
    changed = (
        git("diff", "--name-only", "HEAD").splitlines() + git("ls-files", "--others", "--exclude-standard").splitlines()
    )
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise SweepRefusedError(
            f"the tree has uncommitted changes ({shown}): the workers run the commit from the git remote; "
            "commit and push them, or stash them"
        )
    commit = git("rev-parse", "HEAD")
    try:
        url = git("remote", "get-url", remote)
        git("fetch", "--quiet", remote)
    except GitError as error:
        raise SweepRefusedError(f"the workers clone the git remote {remote!r}; it cannot be read: {error}") from None
    if not git("branch", "--remotes", "--contains", commit, "--list", f"{remote}/*"):
        raise SweepRefusedError(
            f"HEAD ({commit[:8]}) is not on the git remote {remote} ({url}), where the workers clone it from: "
            f"`git push {remote}` first"
        )
    if "://" not in url and Path(url).exists():
        url = str(Path(url).resolve())
    return commit, url


def lock_hash(requirements: Path) -> str:
    """The hash make names a venv's stamp by: the first 16 hex digits of the lock's SHA-256."""
    return hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]


def check_venv(venv: Path, clone: Path, commit: str) -> None:
    """Check that `venv` holds the lock the commit's requirements.txt pins (make's stamp of it).

    Raises:
        RuntimeError: If it does not; the message says what to do on the worker.
    """
    wanted = lock_hash(clone / "requirements.txt")
    if not (venv / f".installed-runtime-{wanted}").exists():
        raise RuntimeError(
            f"this worker's venv {venv} does not hold the lock of commit {commit[:8]} (requirements.txt {wanted}): "
            "update the worker's checkout, run `make venv` there, and start the worker again"
        )


def claim_folder(name: str) -> tuple[Path, int]:
    """Create a folder of `.team/points/` for an attempt of point `name`, held by a lock beside it.

    Returns:
        The folder, and the descriptor holding its lock: the lock lasts while
        this process or one it passes the descriptor to lives.
    """
    POINTS_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    while True:
        folder = POINTS_DIR / f"{name}-{uuid.uuid4().hex[:8]}"
        lock = os.open(lock_file(folder), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.fstat(lock).st_ino == os.stat(lock_file(folder)).st_ino:  # not removed by a cleanup meanwhile
            folder.mkdir(mode=0o700)
            return folder, lock
        os.close(lock)  # pragma: no cover - a cleanup took the lock between its creation and its locking


def lock_file(folder: Path) -> Path:
    """The lock file that marks a point folder as held."""
    return folder.with_name(folder.name + ".lock")


def release_folder(folder: Path, lock: int = -1) -> None:
    """Remove an attempt's folder and its lock file; close `lock`, the descriptor holding it, if given."""
    shutil.rmtree(folder, ignore_errors=True)
    lock_file(folder).unlink(missing_ok=True)
    if lock >= 0:
        os.close(lock)


def remove_stale_points(points_dir: Path | None = None) -> list[str]:
    """Remove the point folders of `.team/points/` that no process holds any more; return their names.

    A folder is held while the worker that made it, or the point's process,
    lives (see `claim_folder`); one whose holders died mid-point holds a clone
    with the DVC remote's keys, and nothing else would remove it.
    """
    points_dir = points_dir or POINTS_DIR
    removed = []
    for folder in sorted(points_dir.glob("*")) if points_dir.is_dir() else []:
        if not folder.is_dir() or folder == points_dir / "dvc-cache":
            continue
        try:
            lock = os.open(lock_file(folder), os.O_WRONLY)
        except FileNotFoundError:
            lock = -1  # a folder of no attempt: made by hand, or before folders had locks
        try:
            if lock >= 0:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            continue
        release_folder(folder, lock)
        removed.append(folder.name)
    for orphan in points_dir.glob("*.lock") if points_dir.is_dir() else []:
        if not orphan.with_suffix("").exists():
            with contextlib.suppress(OSError):
                held = os.open(orphan, os.O_WRONLY)
                try:
                    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    orphan.unlink()
                finally:
                    os.close(held)
    return removed


def run_point(spec: dict[str, Any]) -> dict[str, Any]:
    """The task of one point on a worker: clone the commit, check the venv, run `src.pipeline.point` there.

    The point runs in a session of its own, which the kernel stops if this
    worker dies; the task leaves the worker's thread pool (`secede`) while it
    waits, so that the point's own training can send work to the same cluster.
    The stop event of the sweep, once set, stops the point (SIGTERM, then
    SIGKILL to its session after STOP_SECONDS).

    Returns:
        The point's outcome (see `src.pipeline.point`) and the end of its log.
    """
    from distributed import Event, secede

    secede()
    stop = Event(spec["stop_event"])
    if stop.is_set():  # the sweep stopped while the point waited for a worker
        return {"status": "KILLED", "message": "the sweep stopped before the point started"}
    venv = Path(os.environ.get("PROJECT_VENV") or sys.prefix)
    remove_stale_points()
    # A folder of this attempt's own: a point whose worker died may still be stopping in its old one.
    folder, lock = claim_folder(spec["name"])
    clone, log = folder / "repo", folder / "point.log"
    try:
        try:
            git("clone", "--quiet", "--no-checkout", spec["git_url"], str(clone))
            git("-C", str(clone), "checkout", "--quiet", "--detach", spec["commit"])
        except GitError as error:
            return {"status": "FAILED", "message": f"could not clone the sweep's commit: {error}"}
        check_venv(venv, clone, spec["commit"])
        environment = {
            **os.environ,
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "PROJECT_VENV": str(venv),
            "PIPELINE_RECORDS_DIR": str(clone / ".pipeline"),
            "PYTHONPATH": str(clone),
        }
        if os.environ.get("DVC_REMOTE_URL") and os.environ.get("DVC_REMOTE"):
            # The worker's own DVC remote settings and keys (team.env), and one cache for every clone of this worker.
            configure_remote(
                clone / ".dvc" / "config.local",
                os.environ["DVC_REMOTE"],
                os.environ["DVC_REMOTE_URL"],
                str(POINTS_DIR / "dvc-cache"),
                clone / ".dvc" / "config",
            )
        command = [str(venv / "bin" / "python"), "-m", "src.pipeline.point", "--name", spec["name"]]
        command += ["--parent-run-id", spec["parent_run_id"], "--worker-pid", str(os.getpid()), "--folder", str(folder)]
        for override in spec["overrides"]:
            command += ["--set", override]
        with log.open("w") as output:
            point = subprocess.Popen(
                command, cwd=clone, env=environment, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, pass_fds=(lock,),  # the point holds its folder too, should this worker die
            )  # fmt: skip
            stopped_at = 0.0
            while point.poll() is None:
                time.sleep(POLL_SECONDS)
                if not stopped_at and stop.is_set():
                    stopped_at = time.monotonic()
                    point.send_signal(signal.SIGTERM)
                elif stopped_at and time.monotonic() - stopped_at > STOP_SECONDS:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(point.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(point.pid, signal.SIGKILL)  # nothing of the point outlives it
        lines = log.read_text(errors="replace").splitlines()
        result: dict[str, Any] = {"status": "FAILED", "message": f"the point exited with code {point.returncode}"}
        with contextlib.suppress(IndexError, ValueError):
            result = json.loads(lines[-1])
        result["log"] = lines[-8:]
        return result
    except (OSError, RuntimeError, KeyError) as error:
        return {"status": "FAILED", "message": str(error).splitlines()[0] if str(error) else type(error).__name__}
    finally:
        release_folder(folder, lock)


def run_on_cluster(
    address: str,
    points: list[Any],
    configs: list[Config],
    sweep_id: str,
    interrupts: InterruptFlag,
    progress: Progress | None = None,
) -> None:
    """Run every point as a task on the cluster at `address`; close and report each as it ends.

    Args:
        address: The scheduler's checked address.
        points: The sweep's points (see `src.pipeline.sweep.Point`).
        configs: Each point's validated config, in order.
        sweep_id: The sweep's id, for the runs' tags.
        interrupts: The signals received so far.
        progress: Where each point's line and the bar go.

    Raises:
        SweepRefusedError: Before any run exists, if the sweep cannot go to the cluster.
        ClusterError: Before any run exists, if the scheduler does not answer; later, once
            every point not ended is FAILED, if no worker takes points any more.
        SchedulerLostError: Once every point not ended is FAILED, if the scheduler died.
        Interrupted: Once every point not ended is stopped and KILLED.
    """
    from distributed import Event

    from src.pipeline.sweep import open_point

    progress = progress or Progress()
    remote = git_remote()
    commit, url = check_ready(remote)
    client = connect(address)
    if not point_workers(client):
        client.close()
        raise SweepRefusedError(
            f"no worker of the Dask cluster at {address} takes sweep points: start them with `make worker` "
            f"(or give each `--resources {POINT_RESOURCE}=1`)"
        )
    stop = Event(f"{sweep_id}-stop", client=client)
    futures: dict[str, Any] = {}
    try:
        for point, config in zip(points, configs, strict=True):
            interrupts.check()
            open_point(point, config, sweep_id, {"sweep.cluster": address})
            overrides = point.overrides
            spec = {
                "name": point.name,
                "parent_run_id": point.run_id,
                "overrides": [f"{key}={yaml.safe_dump(value).splitlines()[0]}" for key, value in overrides.items()],
                "commit": commit,
                "git_url": url,
                "stop_event": f"{sweep_id}-stop",
            }
            futures[point.name] = client.submit(
                run_point, spec, key=point.name, pure=False, resources={POINT_RESOURCE: 1}
            )
        logger.info(
            "%s: %d points sent to the cluster at %s (commit %s), one at a time per worker (JOBS does not apply)",
            sweep_id, len(points), address, commit[:8],
        )  # fmt: skip
        pending = {point.name: point for point in points}
        watch = WorkerWatch(address)
        while pending:
            interrupts.sleep(POLL_SECONDS)
            if client.status != "running":  # Dask cancels every future as it loses the scheduler
                raise scheduler_lost(address)
            for name in [name for name in pending if futures[name].done()]:
                point = pending.pop(name)
                future = futures.pop(name)
                try:
                    result = future.result()
                except Exception as error:  # the task itself failed, e.g. its workers kept dying
                    if lost(error):
                        raise scheduler_lost(address) from None
                    result = {"status": "FAILED", "message": f"{type(error).__name__}: {error}"}
                future.release()
                end_point(point, result)
                progress.say(point.summary())
                ended = [other for other in points if other.name not in pending]
                failed = sum(other.status != "FINISHED" for other in ended)
                progress.step("sweep", len(ended), len(points), {"failed": failed}, unit="point")
            if pending:
                watch.check(client)
        progress.close("sweep")
        finished = [point.name for point in points if point.status == "FINISHED"]
        if finished:
            pulled = dvc("exp", "pull", remote, *finished, quiet=True)
            if pulled.returncode:
                logger.warning("could not fetch the experiments from %s: %s", remote, dvc_error(pulled))
    except (Exception, Interrupted) as error:
        if isinstance(error, Exception) and is_lost(client, error):
            # No scheduler to tell the points or to ask: its workers stopped them as it went.
            error = error if isinstance(error, SchedulerLostError) else scheduler_lost(address)
            end_open_points(points, f"the sweep stopped: {error}", EXIT_FAILED)
            remove_stale_points()
            raise error from None
        stop.set()
        interrupted = isinstance(error, Interrupted) or interrupts.signum
        note = "the sweep was interrupted" if interrupted else f"the sweep stopped on {type(error).__name__}: {error}"
        stop_points(client, points, futures, note, 130 if interrupted else 1)
        raise
    finally:
        client.close(timeout=5)


def point_workers(client: Any) -> list[str]:
    """The workers of the cluster that take sweep points (those with the POINT resource)."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return [address for address, worker in workers.items() if POINT_RESOURCE in worker.get("resources", {})]


class WorkerWatch:
    """Notice a cluster left with no worker that takes points: the points would wait for good.

    Args:
        address: The scheduler's address, for the message.
        seconds: How long the cluster may be without such a worker.
    """

    def __init__(self, address: str, seconds: float = WORKERLESS_SECONDS) -> None:
        self.address = address
        self.seconds = seconds
        self.last_seen = time.monotonic()
        self.last_asked = 0.0

    def seen(self, workers: int, now: float) -> None:
        """Take a count of the workers that take points, at `now` (monotonic seconds).

        Raises:
            ClusterError: If there has been none for `seconds`.
        """
        if workers:
            self.last_seen = now
        elif now - self.last_seen >= self.seconds:
            raise ClusterError(
                f"no worker of the Dask cluster at {self.address} has taken sweep points for {self.seconds:.0f} s "
                "(they died, or were stopped)"
            )

    def check(self, client: Any) -> None:
        """Ask the scheduler every WORKERS_POLL_SECONDS; see `seen`."""
        now = time.monotonic()
        if now - self.last_asked >= WORKERS_POLL_SECONDS:
            self.last_asked = now
            self.seen(len(point_workers(client)), now)


def scheduler_lost(address: str) -> SchedulerLostError:
    """The error of a scheduler that died mid-sweep."""
    return SchedulerLostError(
        f"the Dask scheduler at {address} stopped answering mid-sweep (its workers stopped their points as it went)"
    )


def is_lost(client: Any, error: Exception) -> bool:
    """Whether `error` came of the scheduler's going: said so, or the client no longer runs."""
    return isinstance(error, SchedulerLostError) or lost(error) or client.status != "running"


def end_open_points(points: list[Any], note: str, exit_code: int) -> None:
    """End each point not ended whose parent run is open (FAILED or KILLED as `exit_code` says); read each status.

    A point still stopping on a worker finds its run ended and logs nothing
    (see `src.pipeline.point`), so the status read here is the one that stays.
    """
    from src.tracking.parent import close_parent

    client = import_mlflow().MlflowClient()
    for point in points:
        if not point.run_id or point.status != "not run":
            continue
        run = client.get_run(point.run_id)
        if run.info.status == "RUNNING":
            client.set_tag(point.run_id, NOTE_TAG, note)
            close_parent(client, point.run_id, exit_code)
            run = client.get_run(point.run_id)
        point.take_outcome(run)


def end_point(point: Any, result: dict[str, Any]) -> None:
    """Take a point's outcome: end its parent run if the worker did not, and read its status and metric."""
    from src.tracking.parent import close_parent

    client = import_mlflow().MlflowClient()
    run = client.get_run(point.run_id)
    deadline = time.monotonic() + WINNER_SECONDS
    while result.get("status") == "LOST" and run.info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)  # the attempt that won is logging the point's runs
        run = client.get_run(point.run_id)
    message = str(result.get("message") or "")
    if run.info.status == "RUNNING":
        client.set_tag(point.run_id, NOTE_TAG, message or "the point ended without logging its run")
        close_parent(client, point.run_id, 130 if result.get("status") == "KILLED" else 1)
        run = client.get_run(point.run_id)
    point.take_outcome(run)
    if point.status != "FINISHED":
        sys.stderr.write(f"  {point.name}: {message or 'failed'}\n")
        sys.stderr.write("".join(f"  {point.name}: {line}\n" for line in result.get("log", [])[-6:]))


def stop_points(cluster: Any, points: list[Any], futures: dict[str, Any], note: str, exit_code: int) -> None:
    """Cancel the points not started, wait for those running to stop (the stop event is set), end every parent open.

    A point a worker runs stops its stages and ends its parent KILLED itself;
    its task kills what is left of it after STOP_SECONDS, so the wait is bounded.

    Args:
        cluster: The Dask client.
        points: The sweep's points.
        futures: The tasks of the points not ended yet, by name.
        note: Why the sweep stopped, for the parents' `pipeline.note` tag.
        exit_code: 130 (KILLED) for an interrupt, 1 (FAILED) for an error.
    """
    with contextlib.suppress(Exception):  # a scheduler gone leaves nothing running to wait for
        running = {key for keys in cluster.processing().values() for key in keys}
        for name, future in futures.items():
            if name not in running:
                future.cancel()
        deadline = time.monotonic() + STOP_SECONDS + 30
        while time.monotonic() < deadline and not all(future.done() for future in futures.values()):
            time.sleep(POLL_SECONDS)
    for future in futures.values():
        future.cancel()
    end_open_points(points, note, exit_code)
