"""Stage featurize: add engineered features to the raw table; images become scaled, pooled pixels.

The logic is `src.ml.features.Featurizer`, the same transformer the logged model
runs before its estimator.
"""

from __future__ import annotations

from src.cli import run_stage
from src.config import Config
from src.io import read_table, write_table
from src.ml.features import featurize
from src.paths import PATHS
from src.tracking.stage_runs import StageResult, mlflow_stage


@mlflow_stage("featurize")
def main(config: Config) -> StageResult:
    """Read data/raw, add the features and write data/processed/features.parquet."""
    raw = read_table(PATHS.raw, made_by="data_load")
    features = featurize(raw, config.featurize, config.data_load.target, config.data_load.pixel_max)
    write_table(features, PATHS.features)
    return StageResult(
        metrics={"n_features": features.shape[1] - 1},
    )


if __name__ == "__main__":
    run_stage(main)
