"""The Dask cluster a run may use: `DASK_SCHEDULER` (team.env), checked, and the joblib backend that sends work there.

Unset, nothing here imports Dask and everything runs on this machine. Set, the
train stage's parallel work (cross-validation folds, a forest's trees) goes to
the cluster through joblib's dask backend, and `make sweep` sends its points
there. The switch is the environment only, never params.yaml: dvc.lock and the
scores do not depend on where a run ran.

Whoever reaches a Dask scheduler can run code on its workers, as the account
that runs them. So the scheduler is `tls://`, and every connection shows a
certificate of the team's CA, named in team.env (`DASK_TLS_CA_FILE`,
`DASK_TLS_CERT`, `DASK_TLS_KEY`; `make cluster-up` writes its own). Plain
`tcp://` is refused, unless `DASK_ALLOW_PLAINTEXT=1` says that no one else has
an account on this machine, and then only on this machine (127.0.0.1,
localhost, ::1).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

SCHEDULER_ENV = "DASK_SCHEDULER"

PLAINTEXT_ENV = "DASK_ALLOW_PLAINTEXT"
"""Set to 1, a plain tcp:// scheduler on this machine is allowed: for a machine no one else has an account on."""

TLS_FILES_ENV = {"ca_file": "DASK_TLS_CA_FILE", "cert": "DASK_TLS_CERT", "key": "DASK_TLS_KEY"}
"""team.env's names of the CA certificate and of this machine's certificate and key, for a `tls://` scheduler."""

CONNECT_SECONDS = 10

PROBE_SECONDS = 3
"""How long the scheduler's port has to accept a connection before Dask is asked to connect at all."""

DASK_LOGGERS = ("distributed.client", "distributed.comm", "distributed.core", "distributed.utils")
"""Dask's loggers on the client side: a connection lost is said in one line of ours, not in their tracebacks."""


class ClusterError(RuntimeError):
    """The cluster cannot be used as set; the message names the setting and the fix."""


class SchedulerLostError(ClusterError):
    """The scheduler stopped answering while a command used it."""


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (127.0.0.0/8, ::1 or localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plaintext_allowed() -> bool:
    """Whether `DASK_ALLOW_PLAINTEXT=1` allows a plain tcp:// scheduler on this machine."""
    return os.environ.get(PLAINTEXT_ENV, "").strip() == "1"


def check_address(address: str) -> str:
    """Return the scheduler address as Dask takes it (`tls://host:port`, or `tcp://host:port` where allowed).

    Raises:
        ClusterError: If the address is malformed, its protocol is neither tls
            nor tcp, it is plain tcp off this machine, plain tcp here without
            `DASK_ALLOW_PLAINTEXT=1`, or tls without certificates.
    """
    text = address.strip()
    parts = urlsplit(text if "://" in text else f"tcp://{text}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or port is None:
        raise ClusterError(
            f"{SCHEDULER_ENV}={address!r} is not a scheduler address; give e.g. tls://127.0.0.1:8786 or tls://host:8786"
        )
    if parts.scheme == "tcp" and not is_loopback(parts.hostname):
        raise ClusterError(
            f"{SCHEDULER_ENV}={address} is plain tcp off this machine: anyone who reaches it can run code on the "
            f"workers; use tls:// with Dask's certificates ({', '.join(TLS_FILES_ENV.values())} in team.env)"
        )
    if parts.scheme == "tcp" and not plaintext_allowed():
        raise ClusterError(
            f"{SCHEDULER_ENV}={address} is plain tcp: any account on this machine could run code on its workers as "
            f"you; use tls:// (`make cluster-up` starts a trial cluster with certificates), or set {PLAINTEXT_ENV}=1 "
            "if no one else has an account here"
        )
    if parts.scheme == "tls":
        tls_files()
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


def tls_files() -> dict[str, str]:
    """The TLS files team.env names, by Dask's option (`ca_file`, `cert`, `key`).

    Raises:
        ClusterError: If one is not set or does not exist.
    """
    files = {option: os.environ.get(name, "") for option, name in TLS_FILES_ENV.items()}
    for option, path in files.items():
        if not path or not Path(path).is_file():
            name = TLS_FILES_ENV[option]
            raise ClusterError(f"a tls:// scheduler needs {name} in team.env, a readable file (got {path!r})")
    return files


def dask_config(files: dict[str, str]) -> dict[str, Any]:
    """Dask's own settings for a client of a TLS cluster with these files: encryption required, the CA, the key pair."""
    return {
        "distributed.comm.require-encryption": True,
        "distributed.comm.tls.ca-file": files["ca_file"],
        "distributed.comm.tls.client.cert": files["cert"],
        "distributed.comm.tls.client.key": files["key"],
    }


def dask_environment(files: dict[str, str]) -> dict[str, str]:
    """`dask_config` as Dask's environment variables (`DASK_DISTRIBUTED__COMM__TLS__CA_FILE`, ...).

    A process started with them makes TLS clients of a plain `distributed.Client(address)`.
    """
    return {
        "DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value)
        for key, value in dask_config(files).items()
    }


def scheduler_address() -> str:
    """The checked address of `DASK_SCHEDULER`, where something answers, or "" when it is unset (all runs here).

    Raises:
        ClusterError: As `check_address`, or `probe`: a scheduler stopped is named
            before any run, within seconds.
    """
    address = os.environ.get(SCHEDULER_ENV, "").strip()
    if not address:
        return ""
    address = check_address(address)
    probe(address)
    return address


def security(address: str, files: dict[str, str] | None = None) -> Any:
    """Dask's `Security` for `address`: the team's certificates (`files`, else team.env's) for tls://, none for tcp://."""
    if not address.startswith("tls://"):
        return None
    from distributed.security import Security

    files = files or tls_files()
    return Security(
        tls_ca_file=files["ca_file"],
        tls_client_cert=files["cert"],
        tls_client_key=files["key"],
        require_encryption=True,
    )


def probe(address: str) -> None:
    """Check that something accepts connections at the scheduler's host and port, within PROBE_SECONDS.

    Raises:
        ClusterError: If nothing does: a scheduler stopped, or a wrong address.
    """
    parts = urlsplit(address)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=PROBE_SECONDS):
            pass
    except OSError as error:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address} ({SCHEDULER_ENV} in team.env): nothing answers there "
            f"({type(error).__name__}); start it with `make cluster-up`, or check the address"
        ) from None


def connect(address: str, files: dict[str, str] | None = None) -> Any:
    """A Dask client on the scheduler at `address`, with the certificates of `security`.

    Raises:
        ClusterError: If the scheduler does not answer within PROBE_SECONDS, or
            does not take this client within CONNECT_SECONDS (e.g. it does not
            know its certificate's CA).
    """
    probe(address)
    from distributed import Client

    for name in DASK_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    secure = security(address, files)
    try:
        client = Client(address, security=secure, timeout=CONNECT_SECONDS, set_as_default=True)
    except (OSError, TimeoutError) as error:
        hint = (
            f"check that {TLS_FILES_ENV['cert']} is signed by the cluster's CA"
            if secure is not None
            else "check the address"
        )
        raise ClusterError(
            f"the Dask scheduler at {address} ({SCHEDULER_ENV} in team.env) did not take this client within "
            f"{CONNECT_SECONDS} s ({type(error).__name__}): {hint}"
        ) from None
    check_environment(client, address)
    return client


def check_environment(client: Any, address: str) -> None:
    """Check that the scheduler and every worker import this project's code, as Dask needs to run its tasks.

    A scheduler that cannot unpickle a task leaves the client waiting for good:
    better to say so at once.

    Raises:
        ClusterError: Naming the part that cannot, and how to start it.
    """

    def imports_project() -> bool:  # nested, so that Dask sends it by value
        import importlib.util

        return importlib.util.find_spec("src.ml") is not None

    missing = [] if client.run_on_scheduler(imports_project) else ["the scheduler"]
    missing += [f"worker {worker}" for worker, ok in client.run(imports_project).items() if not ok]
    if missing:
        client.close()
        raise ClusterError(
            f"{', '.join(missing)} of {address} cannot import this project's code: start each from a checkout of "
            "the project, in its venv, with the checkout on PYTHONPATH (see the docs' Beyond one machine page)"
        )


def lost(error: BaseException) -> bool:
    """Whether `error` (a future's) says the client lost its scheduler."""
    return getattr(error, "reason", "") == "scheduler-connection-lost"


@contextlib.contextmanager
def parallel_work() -> Iterator[str]:
    """Send joblib's parallel work in the block to the cluster of `DASK_SCHEDULER`; yield its address ("" if unset).

    Unset, the block runs as it would without this (joblib's default: one job).

    Raises:
        ClusterError: If the setting is wrong or the scheduler does not answer.
    """
    address = scheduler_address()
    if not address:
        yield ""
        return
    import joblib

    client = connect(address)
    try:
        with joblib.parallel_config(backend="dask"):
            yield address
    finally:
        client.close()
