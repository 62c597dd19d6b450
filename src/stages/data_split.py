"""Stage data_split: split the feature table into train and test tables."""

from __future__ import annotations

import pandas as pd

from src.config import PATHS, Config, DataSplitParams
from src.utils.cli import run_stage
from src.utils.io import read_table, write_table
from src.utils.mlflow_run import StageResult, mlflow_stage


def split(
    features: pd.DataFrame, params: DataSplitParams, target: str, random_state: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a labelled table into a train part and a test part.

    Args:
        features: The feature table, with the label column `target`.
        params: The `data_split` section of params.yaml.
        target: The label column, used to stratify when `params.stratify` is set.
        random_state: The seed of the shuffle.

    Returns:
        The train table and the test table, with the same columns as `features`.

    Raises:
        ValueError: If a stratified split is impossible (a class too small for
            `test_size`).
    """
    from sklearn.model_selection import train_test_split

    stratify = features[target] if params.stratify else None
    try:
        train, test = train_test_split(
            features, test_size=params.test_size, stratify=stratify, random_state=random_state
        )
    except ValueError as error:
        raise ValueError(
            f"cannot split with data_split.test_size={params.test_size}: {error}; "
            "change data_split.test_size or set data_split.stratify: false"
        ) from None
    return train.reset_index(drop=True), test.reset_index(drop=True)


@mlflow_stage("data_split")
def main(config: Config) -> StageResult:
    """Read the feature table and write the train and test tables."""
    features = read_table(PATHS.features, made_by="featurize")
    train, test = split(features, config.data_split, config.data_load.target, config.base.random_state)
    write_table(train, PATHS.train)
    write_table(test, PATHS.test)
    return StageResult(
        metrics={"n_train_rows": len(train), "n_test_rows": len(test)},
    )


if __name__ == "__main__":
    run_stage(main)
