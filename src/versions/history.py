"""`make history`: per data version (git tag), its data hash and the runs trained on that data."""

from __future__ import annotations

import yaml

from src.lockfile import DATA_HASH_TAG, LOCK_FILE, output_hashes
from src.paths import PATHS
from src.tracking.tags import MAIN_METRIC_TAG, ROLE_TAG
from src.versions.runner import GitError, git


def main_result(run: object) -> str:
    """A finished run's main metric and its value, `accuracy 0.9667` (`-` if it has none)."""
    name = run.data.tags.get(MAIN_METRIC_TAG, "")
    return f"{name} {run.data.metrics[name]:.4f}" if name in run.data.metrics else "-"


def history() -> str:
    """Return a markdown table: per tag, its data hash and the runs trained on that data.

    A run counts for a tag when the raw-table hash it recorded (`data.md5`)
    equals the one in the tag's dvc.lock.
    """
    rows = ["| tag | date | message | data md5 | runs (main metric) |", "| --- | --- | --- | --- | --- |"]
    refs = git(
        "for-each-ref",
        "refs/tags",
        "--sort=creatordate",
        "--format=%(refname:short)%09%(creatordate:short)%09%(contents:subject)",
    )
    if not refs:
        return 'No data versions yet: pin one with `make tag TAG=v1 MSG="..."`.\n'
    from src.tracking.client import import_mlflow

    mlflow = import_mlflow()
    client = mlflow.MlflowClient()
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    for line in refs.splitlines():
        name, date, subject = ([*line.split("\t"), "", ""])[:3]
        try:
            lock = yaml.safe_load(git("show", f"{name}:{LOCK_FILE}"))
        except GitError:
            lock = {}
        data_hash = output_hashes(lock).get(str(PATHS.raw), "")
        runs = (
            client.search_runs(
                experiments,
                filter_string=(
                    f"tags.`{DATA_HASH_TAG}` = '{data_hash}' and tags.`{ROLE_TAG}` = 'parent' "
                    "and attributes.status = 'FINISHED'"
                ),
                order_by=["attributes.start_time DESC"],
            )
            if data_hash
            else []
        )
        described = "<br>".join(f"`{run.info.run_id[:8]}` {run.info.run_name} ({main_result(run)})" for run in runs)
        rows.append(f"| {name} | {date} | {subject} | `{data_hash[:12]}` | {described or 'none'} |")
    return "\n".join(rows) + "\n"
