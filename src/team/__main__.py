"""`python -m src.team up|down|status|user`: the trial team stack and its users."""

from __future__ import annotations

import argparse
import re
import secrets
import sys

from src.cli import EXIT_BAD_CONFIG, fail
from src.config import ConfigError, load_config
from src.logs import setup_logging
from src.paths import PROJECT_ROOT
from src.team.stack import ROLES, StackError, down, status, up
from src.team.users import add_user


def main(argv: list[str] | None = None) -> None:
    """`python -m src.team up|down|status|user`."""
    parser = argparse.ArgumentParser(prog="python -m src.team", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the stack and write team.env")
    start.add_argument("--project-name", default=PROJECT_ROOT.name)
    commands.add_parser("down", help="stop what the stack started")
    commands.add_parser("status", help="show each part and the memory it holds")
    user = commands.add_parser("user", help="create a user and grant it a role on the experiment")
    user.add_argument("--name", required=True)
    user.add_argument("--role", required=True)
    user.add_argument("--password", default="")
    user.add_argument("--config", default="params.yaml")
    arguments = parser.parse_args(argv)
    setup_logging()
    if arguments.command == "up":
        try:
            up(arguments.project_name)
        except StackError as error:
            fail(str(error))
    elif arguments.command == "down":
        down()
    elif arguments.command == "status":
        sys.exit(status())
    else:
        if arguments.role not in ROLES:
            fail(f"ROLE must be one of {', '.join(ROLES)}, got {arguments.role!r}", EXIT_BAD_CONFIG)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]*", arguments.name):
            fail(f"NAME must be letters, digits and . _ @ -, got {arguments.name!r}", EXIT_BAD_CONFIG)
        if arguments.password and len(arguments.password) < 12:
            fail("PASSWORD must be at least 12 characters (MLflow refuses shorter ones)", EXIT_BAD_CONFIG)
        try:
            config = load_config(arguments.config)
        except ConfigError as error:
            fail(str(error), EXIT_BAD_CONFIG)
        password = arguments.password or secrets.token_urlsafe(12)
        try:
            add_user(
                arguments.name, arguments.role, password, config.mlflow.experiment_name, config.registry.model_name
            )
        except StackError as error:
            fail(str(error))


if __name__ == "__main__":
    main()
