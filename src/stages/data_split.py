"""Stage data_split: split the rows into a train table of features and a test table of raw rows.

The train table holds featurize's output, what the estimator learns from. The
test table holds the same rows' raw columns, as data_load wrote them: evaluate,
`make promote` and `make retrain` score the logged model (featurize and
estimator together) on exactly what a caller of the model sends.
"""

from __future__ import annotations

from src.cli import run_stage
from src.config import Config
from src.io import read_table, require, write_rows_of, write_table
from src.ml.catalog import CLASSIFICATION
from src.ml.features import Featurizer
from src.ml.split import add_batches, split_positions
from src.ml.tables import TableSchema
from src.paths import PATHS
from src.tracking.stage_runs import StageResult, mlflow_stage


@mlflow_stage("data_split")
def main(config: Config) -> StageResult:
    """Split the feature table into train features and test rows, and add any labelled batches.

    A classification's split keeps the class proportions when `data_split.stratify` is set.
    """
    import pyarrow.parquet as pq

    schema = TableSchema.load(require(PATHS.schema, made_by="data_load"))
    target = schema.target
    raw_rows = pq.ParquetFile(require(PATHS.raw, made_by="data_load")).metadata.num_rows
    labels = read_table(PATHS.features, made_by="featurize", columns=[target])[target]
    if raw_rows != len(labels):
        raise ValueError(f"{PATHS.raw} has {raw_rows} rows but {PATHS.features} {len(labels)}; run `make pipeline`")
    stratify = config.data_split.stratify and schema.task == CLASSIFICATION
    train_rows, test_rows = split_positions(labels, config.data_split, config.base.random_state, stratify)
    del labels
    batch_files = sorted(PATHS.batches.glob("*.parquet"))
    if batch_files:
        raw = read_table(PATHS.raw, made_by="data_load")
        test = raw.iloc[test_rows].reset_index(drop=True)
        train = read_table(PATHS.features, made_by="featurize").iloc[train_rows].reset_index(drop=True)
        featurizer = Featurizer.from_params(config.featurize, config.data_load.pixel_max, schema.id_columns)
        featurizer.fit(raw.drop(columns=[target]).head(1))
        batches = [read_table(path, made_by="make retrain") for path in batch_files]
        train, test = add_batches(
            train,
            test,
            batches,
            config.data_split.batch_holdout,
            config.base.random_state,
            featurizer,
            target,
            schema.id_columns,
        )
        write_table(train, PATHS.train)
        write_table(test, PATHS.test)
        train_count, test_count = len(train), len(test)
    else:  # the common case, and the large one: the rows go from file to file without pandas, one table at a time
        write_rows_of(PATHS.features, train_rows, PATHS.train)
        write_rows_of(PATHS.raw, test_rows, PATHS.test)
        train_count, test_count = len(train_rows), len(test_rows)
    return StageResult(
        metrics={"n_train_rows": train_count, "n_test_rows": test_count, "n_batches": len(batch_files)},
        tags={"data.batches": ",".join(path.name for path in batch_files)} if batch_files else {},
    )


if __name__ == "__main__":
    run_stage(main)
