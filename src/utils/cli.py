"""The command-line edge shared by every entry point: arguments, config, exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn

from src.config import Config, ConfigError, load_config
from src.utils.logs import setup_logging
from src.utils.mlflow_run import one_line

logger = logging.getLogger(__name__)

EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


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
    raise KeyboardInterrupt(signal.Signals(signum).name)


def interrupt_exit_code(signum: int) -> int:
    """The exit code of a process stopped by `signum`, as a shell reports it: 143 for SIGTERM, else 130."""
    return EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED


class StopSignalError(Exception):
    """The process was asked to stop: Ctrl-C, SIGTERM or SIGHUP.

    Attributes:
        signum: The signal that asked.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        """130, or 143 for SIGTERM."""
        return interrupt_exit_code(self.signum)


class InterruptFlag:
    """Record SIGINT, SIGTERM and SIGHUP instead of raising wherever the process happens to be.

    A command that must clean up after itself (stop processes it started, end
    its runs) checks the flag at points where stopping is safe, with `check` or
    `sleep`, rather than having a KeyboardInterrupt land inside a database write
    or a library that swallows it. The first signal counts; later ones are
    ignored while the command stops.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.signum = 0

    def install(self) -> None:
        """Handle the signals from now on."""
        for signum in self.SIGNALS:
            signal.signal(signum, self._record)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if not self.signum:
            self.signum = signum

    def check(self) -> None:
        """Return if no signal came.

        Raises:
            StopSignalError: If one did.
        """
        if self.signum:
            raise StopSignalError(self.signum)

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`, or less if a signal comes.

        Raises:
            StopSignalError: If a signal came, before or during the wait.
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
    try:
        stage_main(config)
    except KeyboardInterrupt:
        fail(f"stage {name} interrupted; it wrote no output", EXIT_INTERRUPTED)
    except Exception as error:
        logger.debug("stage %s failed", name, exc_info=True)
        hint = (
            "" if isinstance(error, ValueError | FileNotFoundError) else "; set base.log_level: DEBUG for the traceback"
        )
        fail(f"stage {name} failed: {one_line(error)}{hint}")
    exit_now(0)
