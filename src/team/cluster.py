"""A Dask cluster: `make cluster-up` (a trial one here), `cluster-down`, `cluster-status`, `make worker`.

The trial cluster is a real Dask scheduler and `WORKERS` workers (one thread
and one sweep point each), started from this checkout's venv like the team
stack's parts: in sessions of their own, remembered by process id under
`.team/` (gitignored), logs in `.team/logs`. Every listener binds to 127.0.0.1
and speaks TLS with mutual authentication, since 127.0.0.1 alone would let any
account of this machine in: `cluster-up` has the stack's CA (`src.team.certs`,
`.team/tls`, readable by this account only) sign a certificate for the
scheduler, the workers and the clients, and every connection must show one.
The dashboard is off, and the HTTP port Dask opens all the same serves nothing. `cluster-up` writes
`DASK_SCHEDULER` and the client's certificate into team.env, and `cluster-down`
takes them out. With `DASK_ALLOW_PLAINTEXT=1` (a machine no one else has an
account on) the cluster speaks plain tcp instead, with its dashboard.

`make worker SCHEDULER=...` joins this machine to a team's cluster, in the
foreground: a worker of this checkout's venv, with one point at a time, and
the certificate team.env names.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from src.cluster import (
    PLAINTEXT_ENV,
    SCHEDULER_ENV,
    TLS_FILES_ENV,
    check_address,
    dask_environment,
    is_loopback,
    plaintext_allowed,
    security,
    tls_files,
)
from src.io import write_private
from src.paths import PROJECT_ROOT
from src.pipeline.fanout import POINT_RESOURCE, POINTS_DIR, remove_stale_points
from src.team.certs import issue
from src.team.stack import TEAM_DIR, TEAM_ENV, StackError, launch, log_file, resident, running, say, stop, wait_until

SCHEDULER = "dask-scheduler"

DASK_DIR = TEAM_DIR / "dask"

TLS_DIR = TEAM_DIR / "tls"
"""The stack's CA (see `src.team.certs`) and what it signs: the cluster's scheduler, workers and clients."""

TLS_ROLES = ("scheduler", "worker", "client")

HTTP_OFF = {
    "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES": "[]",
    "DASK_DISTRIBUTED__WORKER__HTTP__ROUTES": "[]",
}
"""Dask opens an HTTP port on the scheduler and each worker, dashboard or not: with no routes it serves nothing."""


@dataclass
class ClusterSettings:
    """The trial cluster's ports and size, kept in `.team/cluster.json`."""

    scheduler_port: int = 0
    dashboard_port: int = 0
    workers: int = 2
    certificates: dict[str, dict[str, str]] = field(default_factory=dict)
    """By role, the TLS files of a tls:// cluster (see `certificates`); none for plain tcp."""

    @property
    def tls(self) -> bool:
        """Whether the cluster speaks TLS."""
        return bool(self.certificates)

    @property
    def address(self) -> str:
        """The scheduler's address."""
        return f"{'tls' if self.tls else 'tcp'}://127.0.0.1:{self.scheduler_port}"

    @property
    def dashboard(self) -> str:
        """The dashboard's URL, or why there is none."""
        if self.tls:
            return f"off (a plain tcp cluster has one: {PLAINTEXT_ENV}=1)"
        return f"http://127.0.0.1:{self.dashboard_port}/status"

    def files(self, role: str) -> dict[str, str]:
        """The TLS files of `role` (scheduler, worker, client) by Dask's option, or none for plain tcp."""
        return self.certificates.get(role, {})

    def team_env(self) -> dict[str, str]:
        """What team.env says of this cluster: its address, and for TLS the client's certificate."""
        files = self.files("client")
        return {SCHEDULER_ENV: self.address, **{name: files[option] for option, name in TLS_FILES_ENV.items() if files}}

    @staticmethod
    def path() -> Path:
        """The settings file."""
        return TEAM_DIR / "cluster.json"

    @classmethod
    def load(cls) -> ClusterSettings:
        """The settings of the last `cluster-up`, or defaults."""
        if not cls.path().exists():
            return cls()
        saved = json.loads(cls.path().read_text())
        return cls(**{each.name: saved[each.name] for each in fields(cls) if each.name in saved})

    def save(self) -> None:
        """Write the settings, readable by this account only."""
        TEAM_DIR.mkdir(mode=0o700, exist_ok=True)
        write_private(self.path(), (json.dumps(asdict(self), indent=2) + "\n").encode())

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


def certificates() -> dict[str, dict[str, str]]:
    """The trial cluster's certificate and key for each role, signed by the stack's CA (made where missing).

    Returns:
        By role (scheduler, worker, client), the files by Dask's option: `ca_file`, `cert`, `key`.
    """
    files = {}
    for role in TLS_ROLES:
        made = issue(TLS_DIR, f"dask-{role}")
        files[role] = {"ca_file": str(made.ca), "cert": str(made.cert), "key": str(made.key)}
    return files


@contextlib.contextmanager
def owner_only() -> Iterator[None]:
    """Create files readable by this account only (umask 077) in the block, and in the processes it starts."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def keep_private(path: Path) -> None:
    """Take every right of group and others off `path` and all under it (what an earlier umask let through)."""
    if not path.exists():
        return
    for each in [path, *path.rglob("*")] if path.is_dir() else [path]:
        with contextlib.suppress(OSError):  # a file a running point removes meanwhile
            if not each.is_symlink():
                each.chmod(each.stat().st_mode & 0o700)


def worker_environment(address: str, files: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker or the scheduler: this one, the cluster's settings, this checkout importable.

    Dask's scheduler unpickles every task, and a worker runs it: both import the
    project's code (`src`), with the same packages as the client. A task that is
    itself a client (a sweep point's train stage) finds the cluster as team.env
    would name it, and `files` (the client's certificate; team.env's by default)
    also as Dask's own settings, so that a plain `distributed.Client` connects.
    """
    path = os.environ.get("PYTHONPATH", "")
    environment = {
        **os.environ,
        SCHEDULER_ENV: address,
        "PYTHONPATH": f"{PROJECT_ROOT}{os.pathsep}{path}" if path else str(PROJECT_ROOT),
        "PROJECT_VENV": os.environ.get("PROJECT_VENV") or sys.prefix,
    }
    if address.startswith("tls://"):
        files = files or tls_files()
        environment.update({name: files[option] for option, name in TLS_FILES_ENV.items()})
        environment.update(dask_environment(files))
        environment.update(HTTP_OFF)
    else:
        environment[PLAINTEXT_ENV] = "1"
    return environment


def worker_command(
    address: str, name: str, threads: int | None, host: str = "", files: dict[str, str] | None = None
) -> list[str]:
    """The `dask worker` command of a worker called `name` with one sweep point at a time.

    For a tls:// scheduler the worker and its nanny listen with TLS too, and
    show `files` (team.env's certificate by default).
    """
    command = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--name", name]
    command += ["--resources", f"{POINT_RESOURCE}=1", "--local-directory", str(DASK_DIR / name)]
    # A worker serves HTTP (health, metrics) on every interface unless told otherwise, dashboard or not.
    command += ["--no-dashboard", "--dashboard-address", f"{host or ''}:0"]
    if threads:
        command += ["--nthreads", str(threads)]
    if host:
        command += ["--host", host]
    if address.startswith("tls://"):
        files = files or tls_files()
        command += ["--protocol", "tls", "--tls-ca-file", files["ca_file"]]
        command += ["--tls-cert", files["cert"], "--tls-key", files["key"]]
    return command


def scheduler_command(settings: ClusterSettings) -> list[str]:
    """The `dask scheduler` command of the trial cluster: on 127.0.0.1, TLS and no dashboard unless plain tcp."""
    command = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1"]
    command += ["--port", str(settings.scheduler_port)]
    # Dask serves the dashboard, or its HTTP port without one, on every interface unless given an address.
    command += ["--dashboard-address", f"127.0.0.1:{settings.dashboard_port}"]
    if settings.tls:
        files = settings.files("scheduler")
        command += ["--protocol", "tls", "--no-dashboard", "--tls-ca-file", files["ca_file"]]
        command += ["--tls-cert", files["cert"], "--tls-key", files["key"]]
    return command


def workers_connected(address: str, files: dict[str, str] | None = None) -> int:
    """How many workers the scheduler at `address` has, or -1 if it does not answer (or refuses `files`)."""
    from distributed import Client

    try:
        with Client(address, security=security(address, files), timeout=3) as client:
            return len(client.scheduler_info(n_workers=-1)["workers"])
    except (OSError, TimeoutError):
        return -1


def set_team_env(settings: dict[str, str]) -> None:
    """Set each `key=value` in team.env ("" removes the line); a team.env left with no setting is removed."""
    lines = TEAM_ENV.read_text().splitlines() if TEAM_ENV.exists() else []
    kept = [line for line in lines if line.split("=", 1)[0] not in settings]
    kept += [f"{key}={value}" for key, value in settings.items() if value]
    if not any(line.strip() and not line.startswith("#") for line in kept):
        TEAM_ENV.unlink(missing_ok=True)
        return
    TEAM_ENV.touch(mode=0o600)
    TEAM_ENV.write_text("\n".join(kept) + "\n")


def names_this_cluster(settings: ClusterSettings) -> bool:
    """Whether team.env names this trial cluster's scheduler."""
    if not TEAM_ENV.exists():
        return False
    return f"{SCHEDULER_ENV}={settings.address}" in TEAM_ENV.read_text().splitlines()


def up(workers: int) -> None:
    """Start the scheduler and `workers` workers on 127.0.0.1, wait until all have joined, write team.env's settings.

    Each part shows a certificate of the stack's CA (unless `DASK_ALLOW_PLAINTEXT=1`),
    and every file the cluster and its processes write is readable by this account only.

    Raises:
        StackError: Naming the part that did not start, once every part this call started is stopped.
    """
    if workers < 1:
        raise StackError(f"WORKERS must be at least 1, got {workers}")
    settings = ClusterSettings.load()
    if running(SCHEDULER):
        if workers_connected(settings.address, settings.files("client")) >= 0:
            say(f"The cluster runs already: {settings.address}; `make cluster-down` first to change it")
            return
        say(f"The scheduler of {settings.address} runs but does not answer: starting the cluster again")
    with owner_only():
        for part in settings.parts():  # what is left of an earlier cluster
            stop(part)
        if names_this_cluster(settings):
            set_team_env(dict.fromkeys(settings.team_env(), ""))
        remove_stale_points()
        for path in (DASK_DIR, POINTS_DIR, *(log_file(part) for part in ClusterSettings(workers=workers).parts())):
            keep_private(path)
        began = time.monotonic()
        made = {} if plaintext_allowed() else certificates()
        settings = ClusterSettings(free_port(), free_port(), workers, made)
        client_files = settings.files("client")
        environment = worker_environment(settings.address, client_files)
        started: list[str] = []
        try:
            started.append(SCHEDULER)
            # The scheduler unpickles the tasks: it imports this checkout too.
            scheduler = launch(SCHEDULER, scheduler_command(settings), environment)
            wait_until(
                SCHEDULER,
                scheduler,
                lambda: workers_connected(settings.address, client_files) >= 0,
                "the Dask scheduler",
            )
            processes = {}
            for part in settings.parts()[1:]:
                started.append(part)
                command = worker_command(settings.address, part, 1, "127.0.0.1", settings.files("worker"))
                processes[part] = launch(part, command, environment)
            for index, (part, process) in enumerate(processes.items(), start=1):
                wait_until(
                    part,
                    process,
                    lambda index=index: workers_connected(settings.address, client_files) >= index,
                    f"Dask {part}",
                )
        except BaseException as error:
            for part in reversed(started):
                stop(part)
            message = str(error) if isinstance(error, StackError) else f"starting the cluster stopped: {error}"
            raise StackError(f"{message}; stopped what had started") from None
        settings.save()
        set_team_env(settings.team_env())
    say(
        f"Dask cluster up in {time.monotonic() - began:.1f} s: scheduler {settings.address}, {plural(workers)}, "
        f"dashboard {settings.dashboard}"
    )
    if settings.tls:
        say(
            f"team.env now has DASK_SCHEDULER and the client's certificate ({', '.join(TLS_FILES_ENV.values())}): "
            "`make sweep` and train send their work there; `make cluster-down` stops it."
        )
    else:
        say(
            f"plain tcp ({PLAINTEXT_ENV}=1): any account of this machine can run code on these workers as you. "
            "team.env now has DASK_SCHEDULER; `make cluster-down` stops it."
        )


def down() -> None:
    """Stop the workers, then the scheduler; take the cluster out of team.env if it named it."""
    settings = ClusterSettings.load()
    parts = settings.parts()
    for part in [*parts[1:], SCHEDULER]:
        say(f"{part}: {'stopped' if stop(part) else 'was not running'}")
    if names_this_cluster(settings):
        set_team_env(dict.fromkeys(settings.team_env(), ""))
    remove_stale_points()
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
    scheduler = running(SCHEDULER)
    connected = workers_connected(settings.address, settings.files("client")) if scheduler else -1
    joined = f"{plural(connected)} joined" if connected >= 0 else "not answering"
    say(f"scheduler {settings.address} ({joined}), dashboard {settings.dashboard}; memory held: {total / 2**20:.0f} MB")
    if scheduler is None and names_this_cluster(settings):
        say(
            "team.env still names this scheduler, which is not running: `make cluster-up` starts the cluster "
            "again, `make cluster-down` takes it out of team.env"
        )
    return 0 if all_running and connected >= 0 else 1


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
    os.umask(0o077)  # the worker's clones of each point hold the DVC remote's keys
    os.execve(command[0], command, worker_environment(address))
