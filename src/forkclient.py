"""A stage command handed to the pipeline's preloaded runner, when one is running (see `src.pipeline.preload`).

`make pipeline` starts a runner that has imported pandas, scikit-learn and the
stages once; DVC still runs each stage as its own command, and that command,
before importing anything heavy, asks the runner to fork a child that runs the
stage in its place: with the command's arguments, working directory,
environment, stdin, stdout and stderr, its signals passed on, and its exit code
given back. Without a runner (plain `dvc repro`, a stage run by hand) nothing
changes: the stage runs in the command's own process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys

RUNNER_ENV = "PIPELINE_PRELOAD_SOCKET"
"""Where the preloaded runner listens (a Unix socket); unset when there is none."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stage_module_requested() -> str:
    """The stage module this process was started to run (`python -m src.stages.<name> ...`), or ""."""
    arguments = getattr(sys, "orig_argv", [])
    if "-m" not in arguments:
        return ""
    module = arguments[arguments.index("-m") + 1] if arguments.index("-m") + 1 < len(arguments) else ""
    return module if module.startswith("src.stages.") else ""


def hand_over(module: str, socket_path: str) -> int | None:
    """Ask the runner to run `module` in a forked child; return the child's exit code, or None to run it here.

    The runner may not be there (not started yet, or gone): then None, and the
    command runs the stage itself.
    """
    arguments = sys.orig_argv
    request = json.dumps(
        {
            "module": module,
            "argv": [module, *arguments[arguments.index("-m") + 2 :]],
            "cwd": os.getcwd(),
            "env": dict(os.environ),
        }
    ).encode()
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(socket_path)
        socket.send_fds(connection, [struct.pack("!I", len(request)), request], [0, 1, 2])
        child = struct.unpack("!i", _receive(connection, 4))[0]
    except OSError:
        connection.close()
        return None

    def pass_on(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, pass_on)
    try:
        return struct.unpack("!i", _receive(connection, 4))[0]
    except OSError:
        return 1
    finally:
        connection.close()


def _receive(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the preloaded runner went away")
        data += chunk
    return data


def run_in_runner_if_any() -> None:
    """If this process is a stage command and a runner is there, let it run the stage and exit with its code."""
    socket_path = os.environ.get(RUNNER_ENV, "")
    module = stage_module_requested() if socket_path else ""
    if not module:
        return
    exit_code = hand_over(module, socket_path)
    if exit_code is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    if exit_code < 0:  # the child was killed by a signal: end the same way
        signal.signal(-exit_code, signal.SIG_DFL)
        os.kill(os.getpid(), -exit_code)
    os._exit(exit_code)
