"""`make ui`: the MLflow UI of the embedded store, on 127.0.0.1 only, behind MLflow's own login.

Another account of the machine reaches a port of 127.0.0.1 as easily as this one,
so the UI runs MLflow's basic-auth app: every page and API call but `/health`
answers 401 without the admin's login. The first `make ui` makes the admin's
password and the Flask secret key into `.mlflow-ui/` (mode 700, files 600, a
`.gitignore` of `*`), beside the auth app's own SQLite database of users. Both
secrets reach `mlflow ui` by its environment, never by its command line; this
process then becomes `mlflow ui` (exec), so Ctrl-C stops it as before.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

from src.cli import fail
from src.io import private_folder, write_private
from src.paths import PROJECT_ROOT

UI_FOLDER = PROJECT_ROOT / ".mlflow-ui"
"""Where `make ui` keeps its login: the admin's password, the Flask secret key, the auth app's database."""

ADMIN = "admin"


@dataclass(frozen=True)
class Login:
    """The UI's admin password and Flask secret key, and the files that hold them.

    Attributes:
        folder: The private folder of `make ui` (mode 700).
        password: The admin's password (never in a repr, a log or a message).
        secret_key: The key Flask signs the login's CSRF tokens with (never shown either).
    """

    folder: Path
    password: str = field(repr=False)
    secret_key: str = field(repr=False)

    @property
    def password_file(self) -> Path:
        """The file the admin's password is in (mode 600)."""
        return self.folder / "password"

    @property
    def config_file(self) -> Path:
        """The auth app's settings (MLFLOW_AUTH_CONFIG_PATH): its database and the admin's name."""
        return self.folder / "auth.ini"


def _read_or_make(path: Path) -> str:
    """The secret in `path`, or a new one (`secrets.token_urlsafe(24)`) written there mode 600."""
    if path.exists():
        path.chmod(0o600)
        return path.read_text(encoding="utf-8").strip()
    secret = secrets.token_urlsafe(24)
    write_private(path, f"{secret}\n".encode())
    return secret


def prepare_login(folder: Path = UI_FOLDER) -> Login:
    """Make (once) and read the UI's login, and write the auth app's settings, all for this account alone.

    The auth app sets the admin's password only when it creates its database, so a
    missing password file means a new database too: the two never disagree.

    Args:
        folder: Where to keep them; created mode 700 (tightened if it exists), with a
            `.gitignore` of `*`.

    Returns:
        The login, read from its files.
    """
    private_folder(folder)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# make ui's login: never in git\n*\n", encoding="utf-8")
    database = folder / "auth.db"
    if not (folder / "password").exists():
        database.unlink(missing_ok=True)
    login = Login(folder, _read_or_make(folder / "password"), _read_or_make(folder / "secret-key"))
    write_private(login.config_file, auth_settings(f"sqlite:///{database}"))
    return login


def auth_settings(database_uri: str, *extra: str) -> bytes:
    """The settings of MLflow's basic-auth app (`MLFLOW_AUTH_CONFIG_PATH`), with `extra` lines as they are.

    Its users live in `database_uri`, every login may read, and the admin is `ADMIN`.
    """
    lines = [
        "[mlflow]",
        "default_permission = READ",
        f"database_uri = {database_uri.replace('%', '%%')}",  # configparser reads % as interpolation
        f"admin_username = {ADMIN}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        # Checking a password costs 0.3 s and a UI sends many requests; remember a good one for a minute.
        "auth_cache_ttl_seconds = 60",
        *extra,
    ]
    return ("\n".join(lines) + "\n").encode()


def server_environment(login: Login, base: dict[str, str]) -> dict[str, str]:
    """`base` plus what the auth app reads: its settings file, the admin's first password, the secret key."""
    environment = {key: value for key, value in base.items() if key != "MLFLOW_AUTH_ADMIN_USERNAME"}
    environment.update(
        MLFLOW_AUTH_CONFIG_PATH=str(login.config_file),
        MLFLOW_AUTH_ADMIN_PASSWORD=login.password,
        MLFLOW_FLASK_SERVER_SECRET_KEY=login.secret_key,
    )
    return environment


def ui_command(backend_store_uri: str, port: int) -> list[str]:
    """`mlflow ui` with the login app, on 127.0.0.1 only, one worker: no secret among its words."""
    mlflow = str(Path(sys.executable).parent / "mlflow")
    return [mlflow, "ui", "--app-name", "basic-auth", "--backend-store-uri", backend_store_uri,
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """`make ui [PORT=5000]`: say where the UI is and where its password is, then become `mlflow ui`."""
    parser = argparse.ArgumentParser(prog="python -m src.tracking.ui", description=__doc__)
    parser.add_argument("--backend-store-uri", required=True, help="the embedded store, sqlite:///<repo>/mlflow.db")
    parser.add_argument("--port", type=int, default=5000, help="the port on 127.0.0.1")
    arguments = parser.parse_args(argv)
    try:
        login = prepare_login()
    except OSError as error:
        fail(f"could not write make ui's login into {UI_FOLDER}: {error}")
    shown = login.password_file.relative_to(PROJECT_ROOT)
    sys.stdout.write(
        f"MLflow UI on http://127.0.0.1:{arguments.port}: log in as {ADMIN} with the password in {shown}"
        " (Ctrl-C stops it)\n"
    )
    sys.stdout.flush()
    command = ui_command(arguments.backend_store_uri, arguments.port)
    os.execve(command[0], command, server_environment(login, dict(os.environ)))


if __name__ == "__main__":
    main()
