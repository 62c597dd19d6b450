"""Stage featurize: add engineered features to the raw table."""

from __future__ import annotations

from itertools import combinations

import pandas as pd

from src.config import PATHS, Config, FeaturizeParams
from src.utils.cli import run_stage
from src.utils.io import read_table, write_table
from src.utils.mlflow_run import StageResult, mlflow_stage

MAX_PRODUCTS = 500


def featurize(raw: pd.DataFrame, params: FeaturizeParams, target: str) -> pd.DataFrame:
    """Add the engineered features to the raw table.

    Args:
        raw: One row per sample, as written by the data_load stage.
        params: The `featurize` section of params.yaml.
        target: The label column, kept as it is and never used as a feature.

    Returns:
        The raw features less `params.drop_columns`, plus `<a>_x_<b>` for every
        pair of numeric features when `params.pairwise_products` is set, then
        the label column.

    Raises:
        ValueError: If `params.drop_columns` names a column that is not a feature.
    """
    feature_names = [name for name in raw.columns if name != target]
    unknown = [name for name in params.drop_columns if name not in feature_names]
    if unknown:
        raise ValueError(
            f"featurize.drop_columns names {', '.join(unknown)}, which is not a feature; "
            f"features: {', '.join(feature_names)}"
        )
    features = raw[[name for name in feature_names if name not in params.drop_columns]]
    if params.pairwise_products:
        numeric = features.select_dtypes("number").columns
        pairs = len(numeric) * (len(numeric) - 1) // 2
        if pairs > MAX_PRODUCTS:
            raise ValueError(
                f"featurize.pairwise_products would add {pairs} columns for {len(numeric)} features; "
                "set it to false for wide data such as images (digits)"
            )
        products = {f"{a}_x_{b}": features[a] * features[b] for a, b in combinations(numeric, 2)}
        features = pd.concat([features, pd.DataFrame(products, index=features.index)], axis=1)
    return features.assign(**{target: raw[target]})


@mlflow_stage("featurize")
def main(config: Config) -> StageResult:
    """Read data/raw, add the features and write data/processed/features.parquet."""
    raw = read_table(PATHS.raw, made_by="data_load")
    features = featurize(raw, config.featurize, config.data_load.target)
    write_table(features, PATHS.features)
    return StageResult(
        metrics={"n_features": features.shape[1] - 1},
    )


if __name__ == "__main__":
    run_stage(main)
