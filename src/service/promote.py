"""`make promote`: register a pipeline run's model and move the `champion` alias only to a better one.

The candidate is a FINISHED parent run (`RUN_ID`, or the best on the metric).
Its model is the one its train stage logged (or, when DVC skipped train, the
one an earlier run logged for the same `models/model.joblib` hash). Like is
compared with like: a candidate whose task, input columns or classes differ
from the champion's is refused (callers of the champion would break; `--force`
replaces it anyway and says what changes). Otherwise both models are scored on
the same held-out rows, the candidate's test table, and the alias moves when
the candidate beats the champion there on the main metric (`evaluate.main_metric`,
or its task's default; `--metric` for another), in the direction the metric
declares, by more than `registry.min_improvement`, or with `--force`. The model
is registered under `registry.model_name` (once: a model already registered
keeps its version), with tags that lead back to its run, git commit and data
version.
"""

from __future__ import annotations

import argparse
import sys

from src.cli import EXIT_BAD_CONFIG, fail, parse_config
from src.ml.catalog import METRICS
from src.service.champion import PromoteError, candidate_of, deciding_metric, promote
from src.tracking.client import describe_tracking_error, import_mlflow
from src.tracking.registry import RegistryError


def main(argv: list[str] | None = None) -> None:
    """`make promote [RUN_ID=...] [METRIC=...] [FORCE=1]`."""
    parser = argparse.ArgumentParser(prog="python -m src.service.promote", description=__doc__)
    parser.add_argument("--run-id", default="", help="the parent run to promote (default: the best on the metric)")
    parser.add_argument("--metric", default="", help="the metric that decides (default: evaluate.main_metric)")
    parser.add_argument("--force", action="store_true", help="move the alias even if the candidate is not better")
    arguments, config = parse_config(parser, argv)
    if arguments.metric and arguments.metric not in METRICS:
        fail(f"METRIC must be one of {', '.join(METRICS)}, got {arguments.metric!r}", EXIT_BAD_CONFIG)
    mlflow = import_mlflow()
    client = mlflow.MlflowClient()
    try:
        experiment = client.get_experiment_by_name(config.mlflow.experiment_name)
        if experiment is None:
            raise PromoteError(f"no experiment {config.mlflow.experiment_name!r} yet; run `make pipeline` first")
        requested = arguments.metric or config.evaluate.main_metric
        metric = deciding_metric(client, experiment.experiment_id, requested, arguments.run_id)
        candidate = candidate_of(client, arguments.run_id, experiment.experiment_id, metric)
        promotion = promote(
            client,
            config.registry.model_name,
            candidate,
            metric,
            config.registry.min_improvement,
            arguments.force,
            config.data_load.target,
        )
    except RegistryError as error:
        fail(str(error))
    except Exception as error:
        refused = f"change registered model {config.registry.model_name!r}"
        fail(f"cannot promote: {describe_tracking_error(error, refused)}")
    sys.stdout.write(promotion.message + "\n")


if __name__ == "__main__":
    main()
