"""Open the pipeline's MLflow parent run and print its id (stdout: the id alone).

params.yaml is validated first, so a bad one exits 2 before any run exists.
"""

from __future__ import annotations

import argparse
import sys

from src.utils.cli import fail, parse_config
from src.utils.git import git_state, tags_at
from src.utils.mlflow_run import ROLE_TAG, experiment_id_for, import_mlflow, one_line, tracking_uri


def main(argv: list[str] | None = None) -> None:
    """Validate params.yaml, open the parent run and print its id.

    The run carries every param, params.yaml itself, the git commit, whether
    the tree was dirty and the data version (the tags at that commit).
    """
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
        "data.version": ",".join(tags_at(commit)),
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
        client.log_artifact(run.info.run_id, arguments.config)
    except Exception as error:
        fail(f"cannot open the MLflow parent run at {tracking_uri()}: {one_line(error)}")
    sys.stdout.write(f"{run.info.run_id}\n")


if __name__ == "__main__":
    main()
