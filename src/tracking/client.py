"""The MLflow client of the project: one tracking URI for every process, and errors said in one line."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from src.cli import one_line
from src.io import private_folder
from src.paths import PROJECT_ROOT

if TYPE_CHECKING:
    from mlflow import MlflowClient


def tracking_uri() -> str:
    """Return the tracking URI every process of the project shares.

    `MLFLOW_TRACKING_URI` when set (the Makefile sets it to an absolute path);
    otherwise MLflow's own default store, `mlflow.db` at the project root,
    addressed absolutely so that any working directory agrees.
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def import_mlflow() -> ModuleType:
    """Import mlflow with telemetry off and the project's tracking URI set."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A tracking server that stops answering mid-command: give up after three tries in about 7 s, not minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    # A tracking server's client prints each run's URL on stdout, where the parent id must be alone.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    import mlflow

    keep_local_store_private()
    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


def keep_local_store_private() -> None:
    """Make the embedded store this account's alone: the SQLite file 0600 (created so if new), `mlruns/` beside it 0700.

    SQLite gives its journal the database's mode, and MLflow would create both
    readable by every account of the machine (`mlruns/`, the artifacts, is
    MLflow's default artifact root: beside the database, as make runs at the
    project's root).
    """
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        return
    database = Path(uri.removeprefix("sqlite:///"))
    if database.parent.is_dir():
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT, 0o600))
        database.chmod(0o600)
        private_folder(database.parent / "mlruns")


def experiment_id_for(client: MlflowClient, name: str) -> str:
    """Return the id of the experiment called `name`, creating it if needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name)


def describe_tracking_error(error: BaseException, refused: str = "create or change runs in this experiment") -> str:
    """Say in one line what an error from the tracking store means, and for a refusal what to do.

    A tracking server with logins answers HTTP 401 to a wrong username or
    password, and 403 to an account without the right (e.g. READ only, and the
    pipeline creates runs); a server that is down refuses the connection.

    Args:
        error: What the MLflow client raised.
        refused: What a 403 refused, naming the resource (`change registered model 'iris-classifier'`).
    """
    status = error.get_http_status_code() if hasattr(error, "get_http_status_code") else 0
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    if status == 401:
        return (
            f"the tracking server refused the login of user {user!r} (HTTP 401): "
            "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in team.env"
        )
    if status == 403:
        return (
            f"user {user!r} may not {refused} (HTTP 403): "
            f"an admin can give it the right with `make team-user NAME={user} ROLE=edit`"
        )
    if "Connection refused" in str(error):
        return (
            "nothing answers there (connection refused): "
            "start the server (`make team-up` for the trial stack) or fix MLFLOW_TRACKING_URI"
        )
    return one_line(error)


def uses_tracking_server() -> bool:
    """Whether the tracking URI is a tracking server (team mode), not a local store."""
    return tracking_uri().startswith(("http://", "https://"))


def where_to_browse(run_id: str) -> str:
    """Where a user sees a run: the tracking server's page of it in team mode, `make ui` otherwise."""
    uri = tracking_uri()
    if uses_tracking_server():
        experiment_id = import_mlflow().MlflowClient().get_run(run_id).info.experiment_id
        return f"browse it at {uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    experiment_id = import_mlflow().MlflowClient().get_run(run_id).info.experiment_id
    return f"browse it with `make ui` at http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}"


def answers(url: str) -> bool:
    """Whether anything answers HTTP at `url` (any status counts; a refused or timed-out connection does not)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=3):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def silent_server() -> str:
    """In team mode, say in one line that the tracking server does not answer within seconds; "" when it does."""
    uri = tracking_uri()
    if uses_tracking_server() and not answers(f"{uri.rstrip('/')}/health"):
        return f"the tracking server {uri} does not answer; start it again (`make team-up` for the trial stack)"
    return ""


def unreachable() -> str:
    """In team mode, say in one line which part does not answer within seconds: the tracking server or its S3.

    In team mode the server keeps artifacts (params.yaml, plots, models) in S3; a
    server that answers while S3 does not fails on artifacts only. "" when both
    answer, or in embedded mode.
    """
    if not uses_tracking_server():
        return ""
    silent = silent_server()
    if silent:
        return silent
    endpoint = os.environ.get("DVC_S3_ENDPOINT_URL", "")
    if endpoint and not answers(endpoint):
        return (
            f"the S3 endpoint {endpoint}, where the tracking server keeps artifacts, does not answer; "
            "start it again (`make team-up` for the trial stack)"
        )
    return ""


def describe_outage(error: BaseException) -> str:
    """Name the part that failed when the tracking store could not be used: the tracking server, or the S3 behind it.

    Falls back to `describe_tracking_error` when both answer, or in embedded mode.
    """
    return unreachable() or describe_tracking_error(error)
