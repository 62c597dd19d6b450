"""Open the pipeline's MLflow parent run and print its id (stdout: the id alone).

params.yaml is validated first, so a bad one exits 2 before any run exists.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from src.config import Config
from src.utils.cli import fail, parse_config
from src.utils.git import git_state, tags_at
from src.utils.mlflow_run import ROLE_TAG, experiment_id_for, import_mlflow, one_line, tracking_uri


def open_parent_run(config: Config, params_text: str, run_name: str = "", tags: dict[str, str] | None = None) -> str:
    """Open the parent run of one pipeline run and return its id.

    The run carries every param, the params file as an artifact, the git commit,
    whether the tree was dirty and the data version (the tags at that commit).

    Args:
        config: The validated config the pipeline runs with.
        params_text: The params.yaml those values come from, logged as an artifact.
        run_name: The run's name; MLflow picks one when empty.
        tags: Extra tags, e.g. the sweep a run belongs to.
    """
    commit, dirty = git_state()
    run_tags = {
        ROLE_TAG: "parent",
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": "make pipeline",
        "mlflow.source.git.commit": commit,
        "git.commit": commit,
        "git.dirty": str(dirty).lower(),
        "data.version": ",".join(tags_at(commit)),
        **(tags or {}),
    }
    mlflow = import_mlflow()
    client = mlflow.MlflowClient()
    experiment_id = experiment_id_for(client, config.mlflow.experiment_name)
    run = client.create_run(experiment_id, run_name=run_name or None, tags=run_tags)
    client.log_batch(
        run.info.run_id,
        params=[mlflow.entities.Param(key, str(value)) for key, value in config.flat().items()],
    )
    client.log_text(run.info.run_id, params_text, "params.yaml")
    return run.info.run_id


def main(argv: list[str] | None = None) -> None:
    """Validate params.yaml, open the parent run and print its id."""
    parser = argparse.ArgumentParser(prog="python -m src.utils.start_pipeline", description=__doc__)
    parser.add_argument("--run-name", default="", help="name of the parent run (default: MLflow's)")
    arguments, config = parse_config(parser, argv)
    try:
        run_id = open_parent_run(config, Path(arguments.config).read_text(encoding="utf-8"), arguments.run_name)
    except Exception as error:
        fail(f"cannot open the MLflow parent run at {tracking_uri()}: {one_line(error)}")
    sys.stdout.write(f"{run_id}\n")


if __name__ == "__main__":
    main()
