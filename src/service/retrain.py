"""`make retrain BATCH=...`: check a new labelled batch, learn from it, and promote only a better model.

1. The batch (CSV or Parquet: the model's input columns and the label, ids
   optional) is validated: every column there and of the kind the model takes
   (a category the model never saw is fine), labels the champion knows (a number
   for a regression), no duplicate rows. Nothing is written when it fails.
2. The champion scores it: its metrics on the batch (the production check) are
   logged as a run of their own.
3. The batch is versioned: written to data/batches/<name>.parquet and tracked
   with DVC (`dvc add`), so data_split adds it to the data from now on.
4. `train.init_from` is set to the champion's exact version and a normal
   tracked pipeline runs (`make pipeline` with FORCE): train continues from
   the champion's weights (`train.init_mode`), and the parent run is tagged with
   the champion and the batch.
5. The new model and the champion are scored on the same held-out set, the
   new test table (which now holds part of the batch); the alias moves only if
   the new model beats the champion on the main metric by more than
   `registry.min_improvement`.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from src.cli import EXIT_FAILED, fail, parse_config
from src.config import Config, ConfigError, load_config
from src.io import write_table
from src.ml.catalog import REGRESSION, main_metric
from src.ml.metrics import score_model
from src.ml.schema import EXACT_FLOAT_INTEGERS, ScoringInputError, check_columns
from src.paths import PATHS, PROJECT_ROOT
from src.pipeline.run import PipelineError, run_pipeline
from src.service.champion import Candidate, promote
from src.tracking.client import describe_tracking_error, experiment_id_for, import_mlflow
from src.tracking.registry import (
    Interface,
    RegistryError,
    champion_version,
    input_columns,
    interface_of,
    logged_model_uri,
)
from src.tracking.tags import ROLE_TAG
from src.versions.runner import dvc, git

logger = logging.getLogger(__name__)

INIT_FROM_LINE = re.compile(r"^(\s+init_from:)[^#\n]*(#.*)?$", re.MULTILINE)


def validate_batch(
    batch: pd.DataFrame, expected: dict[str, str], target: str, interface: Interface, source: str, id_columns: list[str]
) -> pd.DataFrame:
    """Check a labelled batch against the model; return it as the raw table holds rows (ids, model columns, label).

    Args:
        batch: The batch as read.
        expected: The model's input columns and their MLflow types.
        target: The label column.
        interface: The champion's task and classes.
        source: The file, for the messages.
        id_columns: `data_load.id_columns`: kept when the batch has them.

    Raises:
        ScoringInputError: A column is missing or of a kind the model does not take,
            a label is empty, unknown to the model or (regression) not a number, or
            rows repeat; the message names the file.
    """
    from src.ml.features import as_kind
    from src.ml.schema import DATE_TYPES, NUMBER_TYPES
    from src.ml.tables import DATE, NUMBER, TEXT, label_values

    if target not in batch.columns:
        raise ScoringInputError(f"{source}: the label column {target!r} is missing")
    casts = check_columns(dict(batch.dtypes.astype(str)), expected, source)
    labels = batch[target]
    if labels.isna().any():
        raise ScoringInputError(f"{source}: {int(labels.isna().sum())} rows have no label in {target!r}")
    labels = label_values(labels)
    if interface.task == REGRESSION:
        if not pd.api.types.is_numeric_dtype(labels) or pd.api.types.is_bool_dtype(labels):
            raise ScoringInputError(
                f"{source}: {target!r} holds text such as {labels.iloc[0]!r}; the model predicts a number"
            )
        labels = labels.astype("float64")
    else:
        labels = labels.astype(str)  # text, as data_load writes classes (a CSV reads 0, 1, 2 as numbers)
        unknown = sorted(set(labels) - set(interface.classes))
        if unknown:
            raise ScoringInputError(
                f"{source}: labels {unknown} are unknown to the model, which knows {interface.classes}"
            )
    duplicated = batch.duplicated()
    if duplicated.any():
        first = int(duplicated.to_numpy().nonzero()[0][0])
        raise ScoringInputError(
            f"{source}: {int(duplicated.sum())} rows repeat earlier ones (first: data row {first + 1})"
        )
    for name in casts:
        if batch[name].abs().max() > EXACT_FLOAT_INTEGERS:
            raise ScoringInputError(f"{source}: column {name!r} holds integers beyond 2**53, which a float cannot hold")
    kinds = {
        name: NUMBER if kind in NUMBER_TYPES else DATE if kind in DATE_TYPES else TEXT
        for name, kind in expected.items()
    }
    checked = {name: batch[name] for name in id_columns if name in batch.columns}
    try:
        checked |= {name: as_kind(batch[name], kind, name) for name, kind in kinds.items()}
    except ValueError as error:
        raise ScoringInputError(f"{source}: {error}") from None
    return pd.DataFrame(checked).assign(**{target: labels.to_numpy()})


def log_production_check(client: Any, config: Config, version: Any, batch_file: Path, metrics: dict[str, float]) -> str:
    """Log the champion's metrics on the new batch as a run of its own; return its id."""
    from mlflow.entities import Metric

    tags = {
        ROLE_TAG: "production_check",
        "model.version": f"models:/{version.name}/{version.version}",
        "batch.path": str(batch_file),
        "batch.md5": hashlib.md5(batch_file.read_bytes()).hexdigest(),
    }
    run = client.create_run(
        experiment_id_for(client, config.mlflow.experiment_name), run_name="production-check", tags=tags
    )
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(f"batch.{key}", value, run.info.start_time, 0) for key, value in metrics.items()],
    )
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def set_init_from(params_file: Path, uri: str) -> None:
    """Point `train.init_from` at `uri` in params.yaml, keeping the file's comments and layout."""
    text = params_file.read_text(encoding="utf-8")
    updated, count = INIT_FROM_LINE.subn(
        lambda match: f'{match[1]} "{uri}"' + (f"  {match[2]}" if match[2] else ""), text
    )
    if count != 1:
        raise ValueError(f"{params_file}: expected one train.init_from line, found {count}")
    params_file.write_text(updated, encoding="utf-8")


def version_batch(batch: pd.DataFrame, name: str) -> Path:
    """Write the batch to data/batches/<name>.parquet and track it with DVC; return the file."""
    path = PATHS.batches / f"{name}.parquet"
    if (PROJECT_ROOT / path).exists():
        raise ScoringInputError(f"{path} exists: a batch of that name was added before; rename the file")
    write_table(batch, PROJECT_ROOT / path)
    added = dvc("add", "--quiet", str(path), quiet=True)
    if added.returncode:
        (PROJECT_ROOT / path).unlink(missing_ok=True)
        raise RuntimeError(f"dvc add {path} failed: {(added.stderr.strip() or 'no message').splitlines()[-1]}")
    git("add", f"{path}.dvc", str(PATHS.batches / ".gitignore"))
    return path


def main(argv: list[str] | None = None) -> None:
    """`make retrain BATCH=...`."""
    parser = argparse.ArgumentParser(prog="python -m src.service.retrain", description=__doc__)
    parser.add_argument("--batch", type=Path, required=True, help="the new labelled batch, CSV or Parquet")
    arguments, config = parse_config(parser, argv)
    target = config.data_load.target
    name = config.registry.model_name
    mlflow = import_mlflow()
    client = mlflow.MlflowClient()
    import mlflow.sklearn

    from src.ml.sources import read_any

    try:
        current = champion_version(client, name)
        if current is None:
            fail(f"{name} has no champion to retrain from; run `make pipeline` and `make promote` first")
        champion_uri = f"models:/{name}/{current.version}"
        champion = mlflow.sklearn.load_model(champion_uri)
        interface = interface_of(champion_uri)
        expected = input_columns(mlflow.pyfunc.load_model(champion_uri))
        batch = validate_batch(
            read_any(arguments.batch), expected, target, interface, str(arguments.batch), config.data_load.id_columns
        )
        check = score_model(champion, batch, target, interface.task)
        check_run = log_production_check(client, config, current, arguments.batch, check)
        metric = main_metric(config.evaluate.main_metric, interface.task)
        logger.info(
            "production check: %s scores %s %.4f on %s (run %s)",
            champion_uri,
            metric.name,
            check[metric.name],
            arguments.batch,
            check_run,
        )
        stored = version_batch(batch, arguments.batch.stem)
        set_init_from(Path(arguments.config), champion_uri)
    except (ValueError, FileNotFoundError) as error:  # a bad batch: ScoringInputError, an unreadable file
        fail(str(error))
    except Exception as error:
        fail(f"retrain: {describe_tracking_error(error)}")
    logger.info("versioned the batch as %s; training from %s", stored, champion_uri)
    try:  # params.yaml now starts from the champion: the pipeline runs on it as `make pipeline FORCE=1` would
        config = load_config(arguments.config)
        tags = {
            "retrain.champion": champion_uri,
            "retrain.batch": str(stored),
            "retrain.production_check_run": check_run,
        }
        params_text = Path(arguments.config).read_text(encoding="utf-8")
        result = run_pipeline(config, params_text, f"retrain-{arguments.batch.stem}", force=True, tags=tags)
    except (ConfigError, PipelineError) as error:
        fail(f"the retraining pipeline cannot run: {error}; the champion stays {champion_uri}")
    run_id = result.run_id
    if result.exit_code:
        fail(
            f"the retraining pipeline ended {result.status} (run {run_id}); the champion stays {champion_uri}"
            + (f"; {result.left}" if result.left else ""),
            result.exit_code if result.status == "KILLED" else EXIT_FAILED,
        )
    run = client.get_run(run_id)
    candidate = Candidate(run, logged_model_uri(client, run))
    try:
        promotion = promote(client, name, candidate, metric, config.registry.min_improvement, False, target)
    except RegistryError as error:
        fail(f"retrained in run {run_id}, but {error}")
    except Exception as error:
        refused = f"change registered model {name!r}"
        fail(f"retrained in run {run_id}, but cannot promote: {describe_tracking_error(error, refused)}")
    if promotion.champion_metric is not None:
        client.log_metric(run_id, f"champion.{metric.name}", promotion.champion_metric)
    sys.stdout.write(f"{promotion.message}; the held-out rows include part of the batch\n")


if __name__ == "__main__":
    main()
