"""Stage featurize: add row-wise features to the raw table; dates become parts, images scaled, pooled pixels.

The logic is `src.ml.features.Featurizer`, the same transformer the logged model
runs before its encoder and estimator. It learns nothing from the data: what is
learned (category codes, imputation, scaling) is fitted by train, in each fold.
"""

from __future__ import annotations

from src.cli import run_stage
from src.config import Config
from src.io import ROWS_PER_BATCH, read_table, require, table_writer
from src.ml.features import featurize_in_batches
from src.ml.tables import TableSchema
from src.paths import PATHS
from src.tracking.stage_runs import StageResult, mlflow_stage


@mlflow_stage("featurize")
def main(config: Config) -> StageResult:
    """Read data/raw, add the features and write data/processed/features.parquet, a batch of rows at a time.

    Its metric `n_features_out` counts the columns it makes, what the encoder takes.
    """
    raw = read_table(PATHS.raw, made_by="data_load")
    schema = TableSchema.load(require(PATHS.schema, made_by="data_load"))
    with table_writer(PATHS.features) as append:
        for features in featurize_in_batches(
            raw, config.featurize, schema.target, config.data_load.pixel_max, tuple(schema.id_columns), ROWS_PER_BATCH
        ):
            append(features)
    return StageResult(
        metrics={"n_features_out": features.shape[1] - 1},
    )


if __name__ == "__main__":
    run_stage(main)
