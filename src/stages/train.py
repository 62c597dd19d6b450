"""Stage train: cross-validate and fit the model (the encoder and the estimator), save it to models/."""

from __future__ import annotations

import pandas as pd

from src.cli import run_stage
from src.cluster import parallel_work
from src.config import Config
from src.io import atomic_path, read_features, require
from src.ml.catalog import ESTIMATORS, main_metric
from src.ml.features import Featurizer, dates_as_text, with_features
from src.ml.models import CURVE_COLUMNS, INPUT_EXAMPLE_ROWS, fit
from src.ml.tables import TableSchema
from src.paths import PATHS
from src.tracking.registry import load_source_model
from src.tracking.stage_runs import StageResult, mlflow_stage, report_progress
from src.tracking.tags import PARALLEL_WORK_TAG, TASK_TAG


def raw_example(rows: int = INPUT_EXAMPLE_ROWS) -> pd.DataFrame:
    """The first rows of the raw table, read without reading the rest: the model's input example."""
    import pyarrow.parquet as pq

    batch = next(pq.ParquetFile(require(PATHS.raw, made_by="data_load")).iter_batches(batch_size=rows))
    return batch.to_pandas()


@mlflow_stage("train")
def main(config: Config) -> StageResult:
    """Fit the model on the train table and write models/model.joblib; the CV scores on the main metric are its metrics.

    The model written and logged is featurize's transformer, then the encoder
    and the estimator of `train.estimator` for the run's task (data/raw/schema.json),
    so it takes the raw columns data_load writes, ids aside (its signature and input
    example are raw rows). The encoder is fitted inside each fold. With
    `train.init_from` and `init_mode: warm_start` the estimator continues from that
    model as its declaration says. An estimator trained in epochs (mlp): its loss
    and validation score per epoch become the run's metric history and
    reports/learning_curve.csv (a DVC plot; only the header for other estimators).
    With `DASK_SCHEDULER` set, the folds and a forest's trees are computed on that
    Dask cluster, with the same scores; the run's `train.parallel_work` tag says
    where they were computed.
    """
    import joblib

    schema = TableSchema.load(require(PATHS.schema, made_by="data_load"))
    target = schema.target
    metric = main_metric(config.evaluate.main_metric, schema.task)
    features, labels = read_features(PATHS.train, made_by="data_split", target=target)
    example = raw_example().drop(columns=[target, *schema.id_columns])
    featurizer = Featurizer.from_params(config.featurize, config.data_load.pixel_max, schema.id_columns).fit(example)
    source, tags = None, {TASK_TAG: schema.task}
    if config.train.init_from:
        source, source_uri = load_source_model(config.train.init_from, config.registry.model_name)
        tags |= {"init_from": config.train.init_from, "init_from.model_uri": source_uri}
        tags["init_mode"] = config.train.init_mode
    declared = ESTIMATORS[config.train.estimator]
    epochs = declared.epochs(config.train.knobs) if declared.epochs is not None else None

    def progress(epoch: int, metrics: dict[str, float]) -> None:
        report_progress(metrics, step=epoch, total=epochs)

    with parallel_work() as cluster:  # DASK_SCHEDULER set: the folds and a forest's trees go to the cluster
        fitted, scores, curve = fit(
            features, labels, config.train, schema.task, metric.name, config.base.random_state, source, progress
        )
    tags[PARALLEL_WORK_TAG] = cluster or "this machine"
    model = with_features(featurizer, fitted)
    with atomic_path(PATHS.model) as temporary:
        joblib.dump(model, temporary)
    with atomic_path(PATHS.learning_curve) as temporary:
        curve.to_csv(temporary, index=False)
    return StageResult(
        metrics=scores,
        model=model,
        # Each column as data_load wrote it (whole numbers without a gap as integers), dates as ISO text.
        model_input_example=dates_as_text(example),
        tags=tags,
        history={name: curve[name].tolist() for name in CURVE_COLUMNS[1:]} if len(curve) else {},
    )


if __name__ == "__main__":
    run_stage(main)
