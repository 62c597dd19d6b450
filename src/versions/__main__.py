"""`python -m src.versions tag|verify|checkout|history|gc`: what make's data-version targets run.

Each command's logic is in its own module (`src/versions/<command>.py`); this is
their one command line: arguments, logging, signals, and each error as one line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from src.cli import one_line_errors, stop_on_signals
from src.io import atomic_path
from src.logs import setup_logging
from src.versions.checkout import checkout
from src.versions.gc import collect_garbage
from src.versions.history import history
from src.versions.runner import GitError
from src.versions.tag import tag
from src.versions.verify import verify
from src.versions.workspace import VersionError, default_remote

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    """Parse the command and run it; a VersionError, a GitError or an interrupt becomes one `error:` line."""
    parser = argparse.ArgumentParser(prog="python -m src.versions", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    tagging = commands.add_parser("tag", help="pin the current data version")
    tagging.add_argument("--name", required=True)
    tagging.add_argument("--message", required=True)
    tagging.add_argument("--push", action="store_true", help="also push the tag to origin")
    checking_out = commands.add_parser("checkout", help="restore what an MLflow run used")
    checking_out.add_argument("--run-id", required=True)
    verifying = commands.add_parser("verify", help="re-hash the DVC cache objects dvc.lock references")
    verifying.add_argument("--rev", default="", help="a git revision or tag (default: the working tree)")
    listing = commands.add_parser("history", help="data versions and the runs trained on them")
    listing.add_argument("--output", type=Path, help="also write the table to this file")
    collecting = commands.add_parser("gc", help="remove what nothing uses from the local DVC cache, never the remote")
    collecting.add_argument("--force", action="store_true", help="also in a cache outside .dvc/cache")
    arguments = parser.parse_args(argv)
    setup_logging()
    stop_on_signals()
    with one_line_errors(f"make {arguments.command}", VersionError, GitError):
        if arguments.command == "tag":
            tag(arguments.name, arguments.message, arguments.push)
        elif arguments.command == "checkout":
            checkout(arguments.run_id)
        elif arguments.command == "verify":
            verify(arguments.rev)
        elif arguments.command == "gc":
            logger.info("%s", collect_garbage(arguments.force).describe())
            logger.info("the DVC remote %s is left as it is: make gc never cleans a remote", default_remote() or "")
        else:
            table = history()
            sys.stdout.write(table)
            if arguments.output:
                with atomic_path(arguments.output) as temporary:
                    temporary.write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
