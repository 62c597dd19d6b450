"""`python -m src.team up|down|status|user|cluster-up|cluster-down|cluster-status|worker`: the trial stacks, users."""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys

from src.cli import EXIT_BAD_CONFIG, fail
from src.cluster import ClusterError
from src.config import ConfigError, load_config
from src.logs import setup_logging
from src.paths import PROJECT_ROOT
from src.team import cluster
from src.team.stack import ROLES, StackError, down, status, up
from src.team.users import add_user


def new_password(name: str) -> str:
    """The new user's password: from the PASSWORD variable, else typed at the terminal; "" to generate one.

    Never an argument: a command line is visible to every account in `ps`.
    """
    if os.environ.get("PASSWORD"):
        return os.environ["PASSWORD"]
    if not sys.stdin.isatty():
        return ""
    import getpass

    return getpass.getpass(f"Password for {name} (12 characters or more; empty: generate one): ")


def main(argv: list[str] | None = None) -> None:
    """`python -m src.team up|down|status|user|cluster-up|cluster-down|cluster-status|worker`."""
    parser = argparse.ArgumentParser(prog="python -m src.team", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the stack and write team.env")
    start.add_argument("--project-name", default=PROJECT_ROOT.name)
    commands.add_parser("down", help="stop what the stack started")
    commands.add_parser("status", help="show each part and the memory it holds")
    user = commands.add_parser("user", help="create a user and grant it a role on the experiment")
    user.add_argument("--name", required=True)
    user.add_argument("--role", required=True)
    user.add_argument("--config", default="params.yaml")
    cluster_up = commands.add_parser("cluster-up", help="start a trial Dask cluster on 127.0.0.1")
    cluster_up.add_argument("--workers", default="2")
    commands.add_parser("cluster-down", help="stop the trial Dask cluster")
    commands.add_parser("cluster-status", help="show each part of the trial Dask cluster")
    worker = commands.add_parser("worker", help="join this machine to a Dask cluster, in the foreground")
    worker.add_argument("--scheduler", required=True)
    arguments = parser.parse_args(argv)
    os.umask(0o077)  # every file the stack and the cluster write is this account's alone
    setup_logging()
    if arguments.command == "up":
        try:
            up(arguments.project_name)
        except StackError as error:
            fail(str(error))
    elif arguments.command == "down":
        down()
    elif arguments.command.startswith("cluster-") or arguments.command == "worker":
        try:
            if arguments.command == "cluster-up":
                if not arguments.workers.isdigit() or int(arguments.workers) < 1:
                    fail(f"WORKERS must be a whole number of at least 1, got {arguments.workers!r}", EXIT_BAD_CONFIG)
                cluster.up(int(arguments.workers))
            elif arguments.command == "cluster-down":
                cluster.down()
            elif arguments.command == "cluster-status":
                sys.exit(cluster.status())
            else:
                cluster.join(arguments.scheduler)
        except ClusterError as error:
            fail(str(error), EXIT_BAD_CONFIG)
        except StackError as error:
            fail(str(error))
    elif arguments.command == "status":
        sys.exit(status())
    else:
        if arguments.role not in ROLES:
            fail(f"ROLE must be one of {', '.join(ROLES)}, got {arguments.role!r}", EXIT_BAD_CONFIG)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]*", arguments.name):
            fail(f"NAME must be letters, digits and . _ @ -, got {arguments.name!r}", EXIT_BAD_CONFIG)
        password = new_password(arguments.name)
        if password and len(password) < 12:
            fail("PASSWORD must be at least 12 characters (MLflow refuses shorter ones)", EXIT_BAD_CONFIG)
        try:
            config = load_config(arguments.config)
        except ConfigError as error:
            fail(str(error), EXIT_BAD_CONFIG)
        password = password or secrets.token_urlsafe(12)
        try:
            add_user(
                arguments.name, arguments.role, password, config.mlflow.experiment_name, config.registry.model_name
            )
        except StackError as error:
            fail(str(error))


if __name__ == "__main__":
    main()
