"""The command-line edge shared by every entry point: arguments, config, exit codes, signals."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TextIO

from src.config import Config, ConfigError, load_config
from src.forkclient import STOP_SIGNALS
from src.logs import setup_logging

logger = logging.getLogger(__name__)


EXIT_FAILED = 1

EXIT_BAD_CONFIG = 2

EXIT_INTERRUPTED = 130

EXIT_TERMINATED = 143

# What a terminal sends on Ctrl-C, what `kill` and service managers send, and what a closed terminal sends.


class Interrupted(KeyboardInterrupt):
    """This process was asked to stop by SIGINT, SIGTERM or SIGHUP.

    A KeyboardInterrupt, so code that handles Ctrl-C handles the other two alike.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """143 after SIGTERM, else 130: what a shell reports for a process a SIGTERM or a Ctrl-C ended."""
        return EXIT_TERMINATED if self.signum == signal.SIGTERM else EXIT_INTERRUPTED


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (0 never does)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exit_now(exit_code: int) -> NoReturn:
    """Exit at once, skipping the interpreter's teardown of the libraries it loaded.

    With mlflow or scikit-learn loaded that teardown costs a process 0.3-0.6 s,
    paid by every stage. Call it only when the process has closed every file it
    wrote; the log, stdout and stderr are flushed here.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


def fail(message: str, exit_code: int = EXIT_FAILED) -> NoReturn:
    """Print `error: <message>` as one line on stderr and exit with `exit_code`."""
    sys.stderr.write(f"error: {message}\n")
    exit_now(exit_code)


@contextlib.contextmanager
def one_line_errors(command: str, *errors: type[BaseException]) -> Iterator[None]:
    """For a `main()`: turn the listed errors into one `error:` line, and an interrupt into `<command> interrupted`.

    The exit code is the error's `exit_code` if it has one (1 otherwise), 130 or 143
    for an interrupt.
    """
    try:
        yield
    except errors as error:
        fail(str(error), getattr(error, "exit_code", EXIT_FAILED))
    except Interrupted as interrupt:
        fail(f"{command} interrupted", interrupt.exit_code)


def parse_config(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> tuple[argparse.Namespace, Config]:
    """Parse the command line (adding `--config`) and load the validated config.

    A bad params.yaml ends the process here with exit code 2 and one line,
    before anything else happens. Logging is set up from `base.log_level`, and
    SIGTERM is turned into KeyboardInterrupt so that runs end KILLED.

    Args:
        parser: The entry point's parser, with any arguments of its own.
        argv: The arguments; `sys.argv[1:]` when None.

    Returns:
        The parsed arguments and the validated config.
    """
    parser.add_argument("--config", default="params.yaml", help="the params file (default: params.yaml)")
    arguments = parser.parse_args(argv)
    try:
        config = load_config(arguments.config)
    except ConfigError as error:
        fail(str(error), EXIT_BAD_CONFIG)
    setup_logging(config.base.log_level)
    signal.signal(signal.SIGTERM, _interrupt)
    return arguments, config


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    STOPS_RECEIVED.append(signum)
    raise Interrupted(signum)


STOPS_RECEIVED: list[int] = []
"""The stop signals this process took as `Interrupted`, in order: an error that follows one is its consequence."""


def stop_on_signals() -> None:
    """Turn SIGINT, SIGTERM and SIGHUP into `Interrupted`, so that each ends the process through its handlers."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)


@contextlib.contextmanager
def signals_deferred() -> Iterator[list[int]]:
    """Hold SIGINT, SIGTERM and SIGHUP back while the block runs; yield the list of those that arrived.

    For a few steps that must happen all or none. The caller looks at the list
    after the block and acts on it. A child a `ChildRunner` starts in the block
    runs in a session of its own, out of reach of the terminal's Ctrl-C (which
    reaches the whole process group), so it is not stopped half-way either.
    """
    global _deferring
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in STOP_SIGNALS}
    _deferring = True
    try:
        yield received
    finally:
        _deferring = False
        for signum, handler in previous.items():
            signal.signal(signum, handler)


_deferring = False  # True while a `signals_deferred` block runs


class ChildRunner:
    """Run one child process so that a stop signal sent to this process reaches it and everything under it.

    A Ctrl-C in the terminal reaches the whole process group (make, this process,
    the child and its children) at once; a SIGTERM or SIGHUP sent to make or to
    this process does not, so it is passed on as SIGINT to every process under
    the child, innermost first (DVC ignores SIGINT while a stage runs, but the
    stage does not). Whatever is still there after 10 s gets SIGTERM, and after
    20 s SIGKILL. Once the child has ended, `run` raises `Interrupted`: nothing
    is left running behind the process. In a `signals_deferred` block the child
    runs in a session of its own instead, and no signal reaches it.

    Args:
        stopping: What the child is, for a warning logged when a signal arrives
            (`interrupted (SIGTERM): stopping the running stage`); nothing is
            logged when empty.
    """

    ESCALATION = ((10, signal.SIGTERM), (20, signal.SIGKILL))

    def __init__(self, stopping: str = "") -> None:
        self.stopping = stopping
        self.process: subprocess.Popen | None = None
        self.signal_received = 0

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_received:
            return
        self.signal_received = signum
        if self.stopping:
            logger.warning("interrupted (%s): stopping %s", signal.Signals(signum).name, self.stopping)
        # A terminal's Ctrl-C already reached the child: give it a second before sending it again.
        first = (1.0 if signum == signal.SIGINT else 0.0, signal.SIGINT)
        for delay, escalation in (first, *self.ESCALATION):
            timer = threading.Timer(delay, self._signal_tree, (escalation,))
            timer.daemon = True
            timer.start()

    def _signal_tree(self, signum: int) -> None:
        """Send `signum` to the child and every process under it, innermost first."""
        if self.process is None or self.process.poll() is not None:
            return
        import psutil

        try:
            top = psutil.Process(self.process.pid)
            tree = [*reversed(top.children(recursive=True)), top]
        except psutil.NoSuchProcess:
            return
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signum)

    def run(
        self, command: list[str], cwd: Path, env: dict[str, str] | None = None, capture: bool = False
    ) -> subprocess.CompletedProcess:
        """Run `command` to its end and return how it ended.

        Args:
            command: The program and its arguments.
            cwd: Where it runs.
            env: Its environment; this process's when None.
            capture: Return its output (text) instead of letting it through.

        Raises:
            Interrupted: If this process got SIGINT, SIGTERM or SIGHUP while the
                child ran; raised once the child has ended.
        """
        # Signal handlers can only be set from the main thread; elsewhere the child just runs.
        forward = threading.current_thread() is threading.main_thread() and not _deferring
        previous = {signum: signal.signal(signum, self._interrupt) for signum in STOP_SIGNALS} if forward else {}
        # Output is captured in files, not pipes: a daemon the child leaves behind (DVC's queue
        # worker) inherits its descriptors, and reading a pipe would wait for the daemon to end.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            try:
                self.process = subprocess.Popen(
                    command,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL if capture else None,
                    stdout=out if capture else None,
                    stderr=err if capture else None,
                    text=True,
                    start_new_session=_deferring,
                )
                if self.signal_received:  # arrived before the child existed
                    self._signal_tree(signal.SIGINT)
                self.process.wait()
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
            if self.signal_received:
                raise Interrupted(self.signal_received)
            out.seek(0)
            err.seek(0)
            stdout, stderr = (out.read(), err.read()) if capture else (None, None)
        return subprocess.CompletedProcess(command, self.process.returncode, stdout, stderr)


class InterruptFlag:
    """Record SIGINT, SIGTERM and SIGHUP instead of raising wherever the process happens to be.

    A command that must clean up after itself (stop processes it started, end
    its runs) checks the flag at points where stopping is safe, with `check` or
    `sleep`, rather than having a KeyboardInterrupt land inside a database write
    or a library that swallows it. The first signal counts; later ones are
    ignored while the command stops.
    """

    def __init__(self) -> None:
        self.signum = 0

    def install(self) -> None:
        """Handle the signals from now on."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._record)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if not self.signum:
            self.signum = signum

    def check(self) -> None:
        """Return if no signal came.

        Raises:
            Interrupted: If one did.
        """
        if self.signum:
            raise Interrupted(self.signum)

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`, or less if a signal comes.

        Raises:
            Interrupted: If a signal came, before or during the wait.
        """
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.2))


def run_stage(stage_main: Callable[[Config], Any], argv: list[str] | None = None) -> NoReturn:
    """Run a stage from the command line: `python -m src.stages.<name> --config params.yaml`.

    Exit codes: 0 done, 1 the stage failed (one line on stderr; the traceback is
    in the MLflow run's error.txt and in the log at DEBUG level), 2 bad
    params.yaml, 130 interrupted.

    Args:
        stage_main: The stage's decorated `main`.
        argv: The arguments; `sys.argv[1:]` when None.
    """
    name = getattr(stage_main, "stage_name", stage_main.__module__)
    parser = argparse.ArgumentParser(prog=f"python -m src.stages.{name}", description=stage_main.__doc__)
    _, config = parse_config(parser, argv)
    stop_on_signals()
    try:
        stage_main(config)
    except KeyboardInterrupt:
        fail(f"stage {name} interrupted; it wrote no output", EXIT_INTERRUPTED)
    except Exception as error:
        if STOPS_RECEIVED:  # raised as the interrupt unwound the stage
            fail(f"stage {name} interrupted; it wrote no output", Interrupted(STOPS_RECEIVED[0]).exit_code)
        logger.debug("stage %s failed", name, exc_info=True)
        hint = (
            "" if isinstance(error, ValueError | FileNotFoundError) else "; set base.log_level: DEBUG for the traceback"
        )
        fail(f"stage {name} failed: {one_line(error)}{hint}")
    exit_now(0)


def one_line(error: BaseException) -> str:
    """Describe an exception in one line: its type and first line of message."""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0]}" if message else type(error).__name__


PLAIN_STEPS = 10
"""Without a terminal (a CI log): a progress line at each tenth of the work, or every 10 steps of unknown total."""


def show_number(value: float) -> str:
    """A number as progress shows it: whole numbers with thousands separators, others to 4 significant digits."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:.4g}"


class Progress:
    """Progress in the terminal: a line per event, and a bar for work in steps (epochs, batches, sweep points).

    On a terminal the bar is tqdm's; elsewhere (a CI log, a file) it degrades to a
    plain line at each tenth of the work.

    Args:
        out: Where to write (standard error by default).
    """

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.terminal = self.out.isatty()
        self.bars: dict[str, Any] = {}
        self.plain_done: dict[str, int] = {}

    def say(self, line: str) -> None:
        """Write one line (above any bar)."""
        if self.terminal and self.bars:
            from tqdm import tqdm

            tqdm.write(line, file=self.out)
        else:
            self.out.write(line + "\n")
            self.out.flush()

    def step(
        self, name: str, step: int, total: int | None, metrics: dict[str, float] | None = None, unit: str = "step"
    ) -> None:
        """Show that `name` reached `step` of `total` (None: unknown), with its latest metrics."""
        shown = ", ".join(f"{key} {show_number(value)}" for key, value in (metrics or {}).items())
        if self.terminal:
            from tqdm import tqdm

            bar = self.bars.get(name)
            if bar is None:
                bar = self.bars[name] = tqdm(total=total, desc=f"  {name}", unit=unit, file=self.out, leave=False)
            bar.n = step
            bar.set_postfix_str(shown, refresh=True)
            return
        done = step * PLAIN_STEPS // total if total else step // PLAIN_STEPS
        if done > self.plain_done.get(name, 0) or step == total:
            self.plain_done[name] = done
            of = f"/{total}" if total else ""
            self.say(f"  {name}: {step}{of} {unit}s" + (f" ({shown})" if shown else ""))

    def close(self, name: str) -> None:
        """Take `name`'s bar away."""
        bar = self.bars.pop(name, None)
        if bar is not None:
            bar.close()
