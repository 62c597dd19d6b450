"""Open the pipeline's MLflow parent run and print its id (stdout: the id alone).

`make pipeline` calls this after validating nothing else: the config is loaded
first, so a bad params.yaml exits 2 before any run exists.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from src.config import PROJECT_ROOT
from src.utils.cli import fail, parse_config
from src.utils.mlflow_run import ROLE_TAG, experiment_id_for, import_mlflow, one_line, tracking_uri


def git_state() -> tuple[str, bool]:
    """Return the commit checked out at the project root and whether the tree is dirty.

    Returns:
        The full commit hash (empty outside a git repository) and True when
        tracked files differ from it or untracked, unignored files exist.
    """

    def git(*arguments: str) -> str:
        completed = subprocess.run(["git", *arguments], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
        return completed.stdout.strip() if completed.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    return commit, bool(commit and git("status", "--porcelain"))


def main(argv: list[str] | None = None) -> None:
    """Validate params.yaml, open the parent run with every param, print its id."""
    parser = argparse.ArgumentParser(prog="python -m src.utils.start_pipeline", description=__doc__)
    parser.add_argument("--run-name", default="", help="name of the parent run (default: MLflow's)")
    arguments, config = parse_config(parser, argv)
    commit, dirty = git_state()
    tags = {
        ROLE_TAG: "parent",
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": "make pipeline",
        "mlflow.source.git.commit": commit,
        "git.commit": commit,
        "git.dirty": str(dirty).lower(),
    }
    try:
        mlflow = import_mlflow()
        client = mlflow.MlflowClient()
        experiment_id = experiment_id_for(client, config.mlflow.experiment_name)
        run = client.create_run(experiment_id, run_name=arguments.run_name or None, tags=tags)
        client.log_batch(
            run.info.run_id,
            params=[mlflow.entities.Param(key, str(value)) for key, value in config.flat().items()],
        )
    except Exception as error:
        fail(f"cannot open the MLflow parent run at {tracking_uri()}: {one_line(error)}")
    sys.stdout.write(f"{run.info.run_id}\n")


if __name__ == "__main__":
    main()
