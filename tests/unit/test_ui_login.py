"""`make ui`'s login: made once, kept for this account alone, and given to MLflow by its environment only."""

from __future__ import annotations

import configparser
import stat

from src.tracking.ui import prepare_login, server_environment, ui_command


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_first_start_makes_a_private_login_and_the_next_keeps_it(tmp_path):
    folder = tmp_path / ".mlflow-ui"
    first = prepare_login(folder)
    assert mode(folder) == 0o700
    for name in ("password", "secret-key", "auth.ini"):
        assert mode(folder / name) == 0o600, name
    assert (folder / ".gitignore").read_text().splitlines()[-1] == "*"
    assert len(first.password) >= 12  # MLflow refuses a shorter admin password
    assert first.password != first.secret_key
    assert first.password not in repr(first) and first.secret_key not in repr(first)
    (folder / "auth.db").write_bytes(b"users")
    folder.chmod(0o755)
    again = prepare_login(folder)
    assert (again.password, again.secret_key) == (first.password, first.secret_key)
    assert (folder / "auth.db").read_bytes() == b"users"
    assert mode(folder) == 0o700


def test_a_lost_password_starts_the_users_afresh_so_the_file_and_the_database_agree(tmp_path):
    folder = tmp_path / ".mlflow-ui"
    first = prepare_login(folder)
    (folder / "auth.db").write_bytes(b"users")
    (folder / "password").unlink()
    again = prepare_login(folder)
    assert again.password != first.password
    assert not (folder / "auth.db").exists()


def test_the_auth_app_reads_its_database_from_the_private_folder(tmp_path):
    folder = tmp_path / "100% mine"
    login = prepare_login(folder)
    settings = configparser.ConfigParser()
    settings.read(login.config_file)
    assert settings["mlflow"]["database_uri"] == f"sqlite:///{folder}/auth.db"
    assert settings["mlflow"]["admin_username"] == "admin"


def test_the_secrets_go_by_the_environment_never_by_the_command_line(tmp_path):
    login = prepare_login(tmp_path / ".mlflow-ui")
    environment = server_environment(login, {"PATH": "/bin", "MLFLOW_AUTH_ADMIN_USERNAME": "someone"})
    assert environment["MLFLOW_AUTH_ADMIN_PASSWORD"] == login.password
    assert environment["MLFLOW_FLASK_SERVER_SECRET_KEY"] == login.secret_key
    assert environment["MLFLOW_AUTH_CONFIG_PATH"] == str(login.config_file)
    assert "MLFLOW_AUTH_ADMIN_USERNAME" not in environment
    command = ui_command("sqlite:////store/mlflow.db", 5005)
    assert command[1:] == ["ui", "--app-name", "basic-auth", "--backend-store-uri", "sqlite:////store/mlflow.db",
                           "--host", "127.0.0.1", "--port", "5005", "--workers", "1"]  # fmt: skip
    assert not any(login.password in word or login.secret_key in word for word in command)
