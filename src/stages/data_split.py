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


def add_batches(
    train: pd.DataFrame, test: pd.DataFrame, batches: list[pd.DataFrame], holdout: float, random_state: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add labelled batches to the split: `holdout` of each batch to test, the rest to train.

    Args:
        train: The train table of the base data.
        test: The test table of the base data.
        batches: Labelled batches with the same columns (see `make retrain`).
        holdout: The fraction of each batch held out for test.
        random_state: The seed of the draw.

    Returns:
        The train and test tables with the batches' rows added.

    Raises:
        ValueError: If a batch's columns differ from the tables'.
    """
    for number, batch in enumerate(batches, start=1):
        if list(batch.columns) != list(train.columns):
            raise ValueError(
                f"batch {number} in {PATHS.batches} has columns {list(batch.columns)}, not {list(train.columns)}"
            )
        held_out = batch.sample(frac=holdout, random_state=random_state)
        train = pd.concat([train, batch.drop(index=held_out.index)], ignore_index=True)
        test = pd.concat([test, held_out], ignore_index=True)
    return train, test


@mlflow_stage("data_split")
def main(config: Config) -> StageResult:
    """Read the feature table and any labelled batches, and write the train and test tables."""
    features = read_table(PATHS.features, made_by="featurize")
    train, test = split(features, config.data_split, config.data_load.target, config.base.random_state)
    batch_files = sorted(PATHS.batches.glob("*.parquet"))
    batches = [read_table(path, made_by="make retrain") for path in batch_files]
    train, test = add_batches(train, test, batches, config.data_split.batch_holdout, config.base.random_state)
    write_table(train, PATHS.train)
    write_table(test, PATHS.test)
    return StageResult(
        metrics={"n_train_rows": len(train), "n_test_rows": len(test), "n_batches": len(batches)},
        tags={"data.batches": ",".join(path.name for path in batch_files)} if batch_files else {},
    )


if __name__ == "__main__":
    run_stage(main)
