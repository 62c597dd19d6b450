"""What the project writes is this account's alone: the embedded store, DVC's cache, the stack's keys."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import subprocess
import threading

import pytest

from src.paths import PROJECT_ROOT
from src.team.certs import issue
from src.tracking.client import keep_local_store_private
from src.versions.remote import configure_remote


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_embedded_store_is_made_private_whether_new_or_left_open(tmp_path, monkeypatch):
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    old.write_bytes(b"")
    old.chmod(0o644)
    for database in (old, new):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{database}")
        keep_local_store_private()
        assert mode(database) == 0o600
    assert mode(tmp_path / "mlruns") == 0o700


def test_dvc_setup_makes_dvcs_own_cache_private_and_a_new_remote_folder_too(tmp_path):
    (tmp_path / ".dvc" / "cache").mkdir(parents=True, mode=0o755)
    configure_remote(tmp_path / ".dvc" / "config.local", "local", str(tmp_path / "remote"))
    assert mode(tmp_path / ".dvc" / "cache") == 0o700
    assert mode(tmp_path / "remote") == 0o700


def test_make_team_user_never_puts_the_password_on_a_command_line():
    password = "a-password-nobody-may-see"
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", "team-user", "NAME=alice", "ROLE=read"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PASSWORD": password},
        capture_output=True,
        text=True,
        check=False,
    )
    assert "-m src.team user --name" in result.stdout, result.stderr
    assert password not in result.stdout + result.stderr


def test_make_team_user_refuses_a_password_on_its_own_command_line_where_ps_shows_it():
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "team-user",
            "NAME=alice",
            "ROLE=read",
            "PASSWORD=shown-in-ps",
            "RUNTIME_STAMP=",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        "error: PASSWORD on make's command line shows to every account (ps); "
        "choose another and export it instead, or let make team-user ask for it"
    )


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """Connect `client` to `server` over a socket pair: "ok", or the error that ended the handshake."""
    left, right = socket.socketpair()
    outcome: list[str] = []

    def serve() -> None:
        try:
            with server.wrap_socket(left, server_side=True) as wrapped:
                wrapped.sendall(b"x")
        except (ssl.SSLError, OSError) as error:
            outcome.append(type(error).__name__)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(right, server_hostname="127.0.0.1") as wrapped:
            wrapped.recv(1)
        result = "ok"
    except (ssl.SSLError, OSError) as error:
        result = type(error).__name__
    thread.join(timeout=10)
    return result if not outcome else outcome[0]


def test_the_stacks_certificates_are_private_and_let_in_only_who_holds_one(tmp_path):
    folder = tmp_path / "tls"
    server, client, foreign = issue(folder, "s3"), issue(folder, "client"), issue(tmp_path / "other", "client")
    assert mode(folder) == 0o700
    assert {path.name: mode(path) for path in folder.iterdir()} == dict.fromkeys(
        ["ca.crt", "ca.key", "s3.crt", "s3.key", "client.crt", "client.key"], 0o600
    )
    assert issue(folder, "s3") == server and server.cert.read_bytes() == issue(folder, "s3").cert.read_bytes()

    def server_context() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(server.cert, server.key)
        context.load_verify_locations(server.ca)
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client_context(holding=None) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(server.ca)
        if holding is not None:
            context.load_cert_chain(holding.cert, holding.key)
        return context

    assert handshake(server_context(), client_context(client)) == "ok"
    assert handshake(server_context(), client_context()) != "ok"
    assert handshake(server_context(), client_context(foreign)) != "ok"


@pytest.mark.parametrize("name", ["team.env", "stack.json"])
def test_a_private_file_is_never_readable_by_others_even_if_it_was(tmp_path, name):
    from src.io import write_private

    path = tmp_path / name
    path.write_text("open")
    path.chmod(0o644)
    write_private(path, b"secret")
    assert mode(path) == 0o600 and path.read_bytes() == b"secret"


def test_a_new_stack_moves_off_a_taken_default_port_and_an_existing_one_says_which_and_how():
    """Two trial stacks on one machine: the second takes free ports, or names the taken one and TEAM_*_PORT."""
    from src.team.stack import Settings, StackError, make_room

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        fresh = Settings(mlflow_port=taken, s3_internal_ports=[1, 2, 3, 4])
        make_room("mlflow", "MLflow", fresh, fresh=True)
        assert fresh.mlflow_port != taken
        kept = Settings(mlflow_port=taken)
        with pytest.raises(StackError) as refused:
            make_room("mlflow", "MLflow", kept, fresh=False)
    assert str(refused.value) == (
        f"port {taken} for MLflow is taken by another program (another trial stack?): "
        "start this one on a free port with `TEAM_MLFLOW_PORT=<port> make team-up`"
    )
    assert kept.mlflow_port == taken
