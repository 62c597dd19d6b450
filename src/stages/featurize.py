"""Stage featurize: add engineered features to the raw table; images become scaled, pooled pixels.

The logic is `src.ml.features.Featurizer`, the same transformer the logged model
runs before its estimator.
"""

from __future__ import annotations

import pandas as pd

from src.config import PATHS, Config, FeaturizeParams
from src.ml.features import Featurizer
from src.utils.cli import run_stage
from src.utils.io import read_table, write_table
from src.utils.mlflow_run import StageResult, mlflow_stage


def featurize(raw: pd.DataFrame, params: FeaturizeParams, target: str, pixel_max: int = 255) -> pd.DataFrame:
    """Add the engineered features to the raw table.

    Args:
        raw: One row per sample, as written by the data_load stage.
        params: The `featurize` section of params.yaml.
        target: The label column, kept as it is and never used as a feature.
        pixel_max: The largest value a pixel takes (`DataLoadParams.pixel_max`).

    Returns:
        The features `Featurizer` makes of the raw feature columns, then the label column.

    Raises:
        ValueError: If `params.drop_columns` names a column that is not a feature,
            the pooling does not fit the images, or the products would be too many.
    """
    featurizer = Featurizer.from_params(params, pixel_max)
    features = featurizer.fit_transform(raw.drop(columns=[target]))
    return features.assign(**{target: raw[target]})


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
