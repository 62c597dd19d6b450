"""A Dask cluster: `make cluster-up` (a trial one here), `cluster-down`, `cluster-status`, `make worker`.

The trial cluster is a real Dask scheduler and `WORKERS` workers (one thread
and one sweep point each), started from this checkout's venv like the team
stack's parts: in sessions of their own, remembered by process id under
`.team/` (gitignored), logs in `.team/logs`. Every listener binds to 127.0.0.1:
the scheduler, its dashboard (Dask serves it on every interface unless told
otherwise), and each worker and its nanny. `cluster-up` writes `DASK_SCHEDULER`
into team.env, and `cluster-down` takes it out.

`make worker SCHEDULER=...` joins this machine to a team's cluster, in the
foreground: a worker of this checkout's venv, with one point at a time. A
scheduler off this machine must be `tls://`, with the team's certificates.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from src.cluster import SCHEDULER_ENV, check_address, is_loopback, tls_files
from src.paths import PROJECT_ROOT
from src.pipeline.fanout import POINT_RESOURCE
from src.team.stack import TEAM_DIR, TEAM_ENV, StackError, launch, log_file, resident, running, say, stop, wait_until

SCHEDULER = "dask-scheduler"

DASK_DIR = TEAM_DIR / "dask"


@dataclass
class ClusterSettings:
    """The trial cluster's ports and size, kept in `.team/cluster.json`."""

    scheduler_port: int = 0
    dashboard_port: int = 0
    workers: int = 2

    @property
    def address(self) -> str:
        """The scheduler's address."""
        return f"tcp://127.0.0.1:{self.scheduler_port}"

    @property
    def dashboard(self) -> str:
        """The dashboard's URL."""
        return f"http://127.0.0.1:{self.dashboard_port}/status"

    @staticmethod
    def path() -> Path:
        """The settings file."""
        return TEAM_DIR / "cluster.json"

    @classmethod
    def load(cls) -> ClusterSettings:
        """The settings of the last `cluster-up`, or defaults."""
        return cls(**json.loads(cls.path().read_text())) if cls.path().exists() else cls()

    def save(self) -> None:
        """Write the settings."""
        TEAM_DIR.mkdir(exist_ok=True)
        self.path().write_text(json.dumps(asdict(self), indent=2) + "\n")

    def parts(self) -> list[str]:
        """The parts, in the order they start: the scheduler, then each worker."""
        return [SCHEDULER, *(f"dask-worker-{index}" for index in range(1, self.workers + 1))]


def plural(workers: int) -> str:
    """`1 worker`, `2 workers`."""
    return f"{workers} worker{'' if workers == 1 else 's'}"


def free_port() -> int:
    """A port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_environment(address: str) -> dict[str, str]:
    """The environment of a worker or the scheduler: this one, the scheduler's address, this checkout importable.

    Dask's scheduler unpickles every task, and a worker runs it: both import the
    project's code (`src`), with the same packages as the client.
    """
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        SCHEDULER_ENV: address,
        "PYTHONPATH": f"{PROJECT_ROOT}{os.pathsep}{path}" if path else str(PROJECT_ROOT),
        "PROJECT_VENV": os.environ.get("PROJECT_VENV") or sys.prefix,
    }


def worker_command(address: str, name: str, threads: int | None, host: str = "") -> list[str]:
    """The `dask worker` command of a worker called `name` with one sweep point at a time."""
    command = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--name", name]
    command += ["--resources", f"{POINT_RESOURCE}=1", "--local-directory", str(DASK_DIR / name)]
    # A worker serves HTTP (health, metrics) on every interface unless told otherwise, dashboard or not.
    command += ["--no-dashboard", "--dashboard-address", f"{host or ''}:0"]
    if threads:
        command += ["--nthreads", str(threads)]
    if host:
        command += ["--host", host]
    if address.startswith("tls://"):
        files = tls_files()
        command += ["--tls-ca-file", files["ca_file"], "--tls-cert", files["cert"], "--tls-key", files["key"]]
    return command


def workers_connected(address: str) -> int:
    """How many workers the scheduler at `address` has, or -1 if it does not answer."""
    from distributed import Client

    try:
        with Client(address, timeout=3) as client:
            return len(client.scheduler_info(n_workers=-1)["workers"])
    except (OSError, TimeoutError):
        return -1


def set_team_env(key: str, value: str) -> None:
    """Set `key=value` in team.env ("" removes the line); a team.env left with no setting is removed."""
    lines = TEAM_ENV.read_text().splitlines() if TEAM_ENV.exists() else []
    kept = [line for line in lines if not line.startswith(f"{key}=")]
    if value:
        kept.append(f"{key}={value}")
    if not any(line.strip() and not line.startswith("#") for line in kept):
        TEAM_ENV.unlink(missing_ok=True)
        return
    TEAM_ENV.touch(mode=0o600)
    TEAM_ENV.write_text("\n".join(kept) + "\n")


def up(workers: int) -> None:
    """Start the scheduler and `workers` workers on 127.0.0.1, wait until all have joined, write DASK_SCHEDULER.

    Raises:
        StackError: Naming the part that did not start, once every part this call started is stopped.
    """
    if workers < 1:
        raise StackError(f"WORKERS must be at least 1, got {workers}")
    settings = ClusterSettings.load()
    if running(SCHEDULER):
        say(f"The cluster runs already: {settings.address}; `make cluster-down` first to change it")
        return
    for part in settings.parts():  # workers left from an earlier cluster
        stop(part)
    settings = ClusterSettings(free_port(), free_port(), workers)
    began = time.monotonic()
    started: list[str] = []
    try:
        started.append(SCHEDULER)
        scheduler = launch(
            SCHEDULER,
            [
                *(sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1"),
                *(
                    "--port",
                    str(settings.scheduler_port),
                    "--dashboard-address",
                    f"127.0.0.1:{settings.dashboard_port}",
                ),
            ],
            worker_environment(settings.address),  # the scheduler unpickles the tasks: it imports this checkout too
        )
        wait_until(SCHEDULER, scheduler, lambda: workers_connected(settings.address) >= 0, "the Dask scheduler")
        processes = {}
        for part in settings.parts()[1:]:
            started.append(part)
            command = worker_command(settings.address, part, threads=1, host="127.0.0.1")
            processes[part] = launch(part, command, worker_environment(settings.address))
        for index, (part, process) in enumerate(processes.items(), start=1):
            wait_until(part, process, lambda index=index: workers_connected(settings.address) >= index, f"Dask {part}")
    except BaseException as error:
        for part in reversed(started):
            stop(part)
        message = str(error) if isinstance(error, StackError) else f"starting the cluster stopped: {error}"
        raise StackError(f"{message}; stopped what had started") from None
    settings.save()
    set_team_env(SCHEDULER_ENV, settings.address)
    say(
        f"Dask cluster up in {time.monotonic() - began:.1f} s: scheduler {settings.address}, {plural(workers)}, "
        f"dashboard {settings.dashboard}"
    )
    say("team.env now has DASK_SCHEDULER: `make sweep` and train send their work there; `make cluster-down` stops it.")


def down() -> None:
    """Stop the workers, then the scheduler, and take DASK_SCHEDULER out of team.env if it named this cluster."""
    settings = ClusterSettings.load()
    parts = settings.parts()
    for part in [*parts[1:], SCHEDULER]:
        say(f"{part}: {'stopped' if stop(part) else 'was not running'}")
    if TEAM_ENV.exists() and f"{SCHEDULER_ENV}={settings.address}" in TEAM_ENV.read_text().splitlines():
        set_team_env(SCHEDULER_ENV, "")
    with contextlib.suppress(FileNotFoundError):
        ClusterSettings.path().unlink()


def status() -> int:
    """Print each part's state, process id, memory and log, and the workers the scheduler has; 0 if all run."""
    import psutil

    settings = ClusterSettings.load()
    total, all_running = 0, True
    say(f"{'part':<15} {'state':<8} {'pid':>7} {'memory':>9}  log")
    for part in settings.parts():
        process = running(part)
        memory = 0
        if process is not None:
            with contextlib.suppress(psutil.Error):
                memory = sum(resident(each) for each in [process, *process.children(recursive=True)])
        total += memory
        all_running &= process is not None
        shown = f"{memory / 2**20:.0f} MB" if process is not None else "-"
        state, pid = ("running", str(process.pid)) if process is not None else ("stopped", "-")
        say(f"{part:<15} {state:<8} {pid:>7} {shown:>9}  {log_file(part)}")
    connected = workers_connected(settings.address) if running(SCHEDULER) else -1
    joined = f"{plural(connected)} joined" if connected >= 0 else "not answering"
    say(f"scheduler {settings.address} ({joined}), dashboard {settings.dashboard}; memory held: {total / 2**20:.0f} MB")
    return 0 if all_running else 1


def join(scheduler: str) -> None:
    """Run a worker of this machine for the cluster at `scheduler`, in the foreground (`make worker`).

    Raises:
        ClusterError: If the address is refused (plain tcp off this machine, tls without certificates).
    """
    address = check_address(scheduler)
    host = "127.0.0.1" if is_loopback(address.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")) else ""
    name = f"{socket.gethostname()}-{os.getpid()}"
    command = worker_command(address, name, threads=None, host=host)
    say(f"worker {name} joins {address} with one sweep point at a time (Ctrl-C stops it)")
    sys.stdout.flush()
    os.execve(command[0], command, worker_environment(address))
