"""Another account of the machine, trying what the project's servers and files let it do.

Research servers are shared: these helpers create an unprivileged account
(`useradd`, root only) and run, as that account and with the system's own
Python (the project's venv may live under a home it cannot enter), a script that
tries every listener and file it is given, holding no key. The script only uses
the standard library and reports what answered.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ACCOUNT = "team-stranger"

# Paths an intruder would try on any HTTP port: data of both buckets (S3 and SeaweedFS's filer), the volume
# master's assignment of a new file id, MLflow's experiments, and the pages every server serves.
PATHS = [
    "/",
    "/buckets/dvc-store/",
    "/dvc-store/",
    "/mlflow-artifacts/",
    "/dir/assign",
    "/cluster/status",
    "/info",
    "/api/2.0/mlflow/experiments/search?max_results=10",
    "/health",
    "/metrics",
    "/status",
]

ANSWERS_WITHOUT_KEY = {"/health", "/metrics", "/status"}
"""What a part may answer anyone: that it is alive (MLflow's /health, SeaweedFS's empty /status), and its counters."""

PROBE = r'''
import concurrent.futures, json, os, socket, ssl, struct, sys, urllib.request, urllib.error

request = json.load(sys.stdin)
paths = request["paths"]


def http(scheme, port, path, method="GET", body=None):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(
            urllib.request.Request(f"{scheme}://127.0.0.1:{port}{path}", data=body, method=method),
            timeout=2,
            context=context if scheme == "https" else None,
        ) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
    except Exception as error:
        return type(error).__name__


def postgres(port):
    """The authentication PostgreSQL asks of a stranger who names its superuser: 0 would let it in."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        body = struct.pack("!i", 196608) + b"user\0postgres\0database\0postgres\0\0"
        connection.sendall(struct.pack("!i", len(body) + 4) + body)
        kind = connection.recv(1)
        length = struct.unpack("!i", connection.recv(4))[0]
        rest = connection.recv(length - 4)
        return {"kind": kind.decode(), "code": struct.unpack("!i", rest[:4])[0] if kind == b"R" else None}


def read(path):
    try:
        if os.path.isdir(path):
            os.listdir(path)
            return "listed"
        with open(path, "rb") as file:
            file.read(1)
        return "read"
    except OSError as error:
        return type(error).__name__


def connect_unix(path):
    try:
        with socket.socket(socket.AF_UNIX) as connection:
            connection.connect(path)
        return "connected"
    except OSError as error:
        return type(error).__name__


def try_port(port):
    answers = {}
    for scheme in ("http", "https"):
        for path in paths:
            answers[f"{scheme} GET {path}"] = http(scheme, port, path)
        planted = "/buckets/dvc-store/planted.txt"
        answers[f"{scheme} PUT {planted}"] = http(scheme, port, planted, "PUT", b"x")
        answers[f"{scheme} POST /api/2.0/mlflow/experiments/create"] = http(
            scheme, port, "/api/2.0/mlflow/experiments/create", "POST", b'{"name": "planted"}'
        )
    return answers


result = {"whoami": os.getuid(), "ports": {}, "files": {}, "sockets": {}, "postgres": None}
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    for port, answers in zip(request["ports"], pool.map(try_port, request["ports"])):
        result["ports"][str(port)] = answers
if request.get("postgres"):
    result["postgres"] = postgres(request["postgres"])
for path in request["files"]:
    result["files"][path] = read(path)
for path in request["sockets"]:
    result["sockets"][path] = connect_unix(path)
json.dump(result, sys.stdout)
'''


def stranger() -> pwd.struct_passwd:
    """The unprivileged account, created if missing; the test is skipped, saying why, where that cannot be done."""
    try:
        return pwd.getpwnam(ACCOUNT)
    except KeyError:
        pass
    if os.geteuid() != 0:
        pytest.skip(f"trying the servers as another account needs root, to create the account {ACCOUNT}")
    if shutil.which("useradd") is None:
        pytest.skip("trying the servers as another account needs useradd, to create the account")
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ACCOUNT],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(ACCOUNT)


def probe(ports: list[int], files: list[Path] = (), sockets: list[Path] = (), postgres: int = 0) -> dict[str, Any]:
    """What the stranger gets from each TCP port on 127.0.0.1, each file, each unix socket, and PostgreSQL."""
    account = stranger()
    python = "/usr/bin/python3"
    if not Path(python).exists():
        pytest.skip("trying the servers as another account needs the system's python3 (stdlib only)")
    request = {
        "paths": PATHS,
        "ports": ports,
        "files": [str(path) for path in files],
        "sockets": [str(path) for path in sockets],
        "postgres": postgres,
    }
    result = subprocess.run(
        [python, "-c", PROBE],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["whoami"] == account.pw_uid
    return found


def let_in(found: dict[str, Any]) -> dict[str, list[str]]:
    """Every port that answered the stranger with success (2xx, 3xx) to anything but `ANSWERS_WITHOUT_KEY`."""
    opened = {}
    for port, answers in found["ports"].items():
        passed = [
            attempt
            for attempt, status in answers.items()
            if isinstance(status, int) and status < 400 and attempt.split(" ", 2)[2] not in ANSWERS_WITHOUT_KEY
        ]
        if passed:
            opened[port] = passed
    return opened
