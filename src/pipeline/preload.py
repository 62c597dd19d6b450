"""The preloaded runner: pandas, scikit-learn and the stages imported once, a forked child per stage command.

DVC runs every stage as its own command, and each paid again for importing
pandas and scikit-learn (most of a small stage's time). `make pipeline` starts
this runner beside `dvc repro`: it imports them once, then, for each stage
command that asks (see `src.forkclient`), forks a child that runs the stage with
the command's arguments, directory, environment and standard streams, and sends
its exit code back; the command passes its signals on. The pattern is that of
Python's multiprocessing forkserver. The runner ends when the pipeline does, or
when its parent is gone; a child whose command is gone is killed.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from src.forkclient import RUNNER_ENV, STOP_SIGNALS
from src.paths import PROJECT_ROOT, pipeline_stages

PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "sklearn.base",
    "sklearn.datasets",
    "sklearn.model_selection",
    "sklearn.linear_model",
    "sklearn.ensemble",
    "sklearn.neural_network",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "sklearn.compose",
    "sklearn.impute",
    "sklearn.feature_extraction.text",
    "sklearn.metrics",
    "joblib",
    "matplotlib.pyplot",
    "PIL.Image",
)
"""What the runner imports before it answers, besides the stages of dvc.yaml themselves: what they import."""


class Runner:
    """The preloaded runner of one pipeline run, started as a process of its own; `stop` ends it.

    Args:
        environment: The environment of the pipeline, which the runner is started with.
    """

    def __init__(self, environment: dict[str, str]) -> None:
        folder = tempfile.mkdtemp(prefix="pipeline-runner-")
        self.socket_path = str(Path(folder) / "runner.sock")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "src.pipeline.preload", self.socket_path],
            cwd=PROJECT_ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # the stage commands pass their signals on; the terminal's must not hit it
        )

    def environment(self) -> dict[str, str]:
        """What the stage commands need to find the runner."""
        return {RUNNER_ENV: self.socket_path}

    def stop(self) -> None:
        """End the runner (a child still running ends with it) and remove its socket."""
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            Path(self.socket_path).unlink(missing_ok=True)  # absent if the runner was stopped before it listened
            Path(self.socket_path).parent.rmdir()


def _receive(connection: socket.socket, size: int) -> tuple[bytes, list[int]]:
    data, fds, _, _ = socket.recv_fds(connection, size, 3)
    while len(data) < size:
        more = connection.recv(size - len(data))
        if not more:
            raise ConnectionError("the stage command went away")
        data += more
    return data, fds


def _run_child(request: dict, fds: list[int], server: socket.socket, connection: socket.socket) -> None:
    """In the forked child: become the stage command, run the stage, and exit with its code."""
    server.close()
    connection.close()
    for signum in (*STOP_SIGNALS, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C is a KeyboardInterrupt, as in `python -m`
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = request["argv"]
    exit_code = 1
    try:
        import runpy

        sys.modules.pop(request["module"], None)  # run as __main__, afresh, as `python -m` would
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        exit_code = 0
    except SystemExit as stop:
        exit_code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)


def _wait_for(child: int, connection: socket.socket, children: set[int]) -> None:
    """Send the child's exit code to its command; if the command goes away first, kill the child."""
    while True:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            children.discard(child)  # its process id may be reused: never signal it again
            code = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):
                connection.sendall(struct.pack("!i", code))
            connection.close()
            return
        readable, _, _ = select.select([connection], [], [], 0.2)
        if readable and not connection.recv(1, socket.MSG_PEEK):  # the command is gone (killed)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def serve(socket_path: str) -> None:
    """Import what the stages need, then fork a child for every stage command that asks, until told to stop."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in (*PRELOAD, *(f"src.stages.{stage}" for stage in pipeline_stages())):
        importlib.import_module(name)
    parent = os.getppid()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path)
    server.listen(8)
    children: set[int] = set()

    def end(signum: int, frame: object) -> None:
        for child in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        os._exit(0)

    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the stage commands' to pass on
    while True:
        readable, _, _ = select.select([server], [], [], 1.0)
        if os.getppid() != parent:  # the pipeline is gone (a kill -9): so is this runner
            end(signal.SIGTERM, None)
        if not readable:
            continue
        connection, _ = server.accept()
        fds: list[int] = []
        try:
            header, fds = _receive(connection, 4)
            body, _ = _receive(connection, struct.unpack("!I", header)[0])
            request = json.loads(body)
        except (OSError, ValueError):  # a command that went away mid-request: the next one is served as usual
            for fd in fds:
                os.close(fd)
            connection.close()
            continue
        child = os.fork()
        if child == 0:
            _run_child(request, fds, server, connection)
        for fd in fds:
            os.close(fd)
        children.add(child)
        with contextlib.suppress(OSError):  # a command gone already: _wait_for ends its child
            connection.sendall(struct.pack("!i", child))
        threading.Thread(target=_wait_for, args=(child, connection, children), daemon=True).start()


if __name__ == "__main__":
    serve(sys.argv[1])
