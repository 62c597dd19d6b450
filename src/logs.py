"""One logging setup for every entry point."""

from __future__ import annotations

import logging
import sys

QUIET_LOGGERS = {"alembic": "WARNING", "git": "WARNING", "matplotlib": "WARNING", "PIL": "WARNING", "urllib3": "ERROR"}
"""Libraries that log too much for a terminal, and the least level of theirs shown (urllib3 warns on each retry)."""


def setup_logging(level: str = "INFO") -> None:
    """Send log records of `level` and above to stderr, one line each.

    Args:
        level: A logging level name, as in params.yaml's `base.log_level`.
    """
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for name, least in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(logging.getLevelName(least), logging.getLevelName(level)))
