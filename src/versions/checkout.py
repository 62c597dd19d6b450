"""`make checkout`: from an MLflow run back to its commit, params.yaml, dvc.lock and data."""

from __future__ import annotations

import logging
from pathlib import Path

from src.lockfile import LOCK_FILE
from src.paths import PROJECT_ROOT
from src.versions.runner import GitError, dvc, git, tracked_changes
from src.versions.workspace import VersionError

logger = logging.getLogger(__name__)


def checkout(run_id: str) -> None:
    """Restore what an MLflow parent run used, on a new branch.

    Switches to a new branch `run-<id>` at the run's commit, writes the run's
    params.yaml and dvc.lock over the ones there, and checks the data out of
    the DVC cache (pulling what is missing from the remote). Refuses when
    tracked files have uncommitted changes.

    Args:
        run_id: A parent run id, or a stage run id (its parent is used).
    """
    changes = tracked_changes()
    if changes:
        raise VersionError(
            f"uncommitted changes in {', '.join(changes[:5])}; commit or stash them before `make checkout`"
        )
    from src.tracking.client import import_mlflow

    mlflow = import_mlflow()
    client = mlflow.MlflowClient()
    try:
        run = client.get_run(run_id)
    except Exception:
        raise VersionError(f"no MLflow run {run_id} in {mlflow.get_tracking_uri()}") from None
    parent_id = run.data.tags.get("mlflow.parentRunId")
    if parent_id:
        run = client.get_run(parent_id)
    run_id = run.info.run_id
    commit = run.data.tags.get("git.commit")
    if not commit:
        raise VersionError(f"run {run_id} records no git commit, so it cannot be checked out")
    artifacts = {item.path for item in client.list_artifacts(run_id)}
    if LOCK_FILE.name not in artifacts:
        raise VersionError(f"run {run_id} ended {run.info.status} without a dvc.lock; check out a FINISHED run")
    branch = f"run-{run_id[:8]}"
    try:
        git("switch", "--quiet", "--create", branch, commit)
    except GitError as error:
        raise VersionError(f"cannot create branch {branch} at {commit[:12]}: {error}") from None
    for name in ("params.yaml", LOCK_FILE.name):
        downloaded = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name)
        (PROJECT_ROOT / name).write_bytes(Path(downloaded).read_bytes())
    if dvc("checkout", quiet=True).returncode != 0:
        logger.info("some data is not in the local DVC cache; pulling it from the remote")
        if dvc("pull").returncode != 0:
            raise VersionError(
                "dvc pull failed (see above); the data of this run is in no cache or remote we can reach"
            )
    logger.info(
        "checked out run %s on branch %s (commit %s, its params.yaml and dvc.lock); `make pipeline` reproduces it",
        run_id,
        branch,
        commit[:12],
    )
