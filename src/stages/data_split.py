"""Stage data_split: split the rows into a train table of features and a test table of raw rows.

The train table holds featurize's output, what the estimator learns from. The
test table holds the same rows' raw columns, as data_load wrote them: evaluate,
`make promote` and `make retrain` score the logged model (featurize and
estimator together) on exactly what a caller of the model sends.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from src.config import PATHS, Config, DataSplitParams
from src.ml.features import Featurizer
from src.utils.cli import run_stage
from src.utils.io import read_table, write_table
from src.utils.mlflow_run import StageResult, mlflow_stage


def split_positions(labels: pd.Series, params: DataSplitParams, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """Choose which rows go to train and which to test.

    Args:
        labels: The label of every row, used to stratify when `params.stratify` is set.
        params: The `data_split` section of params.yaml.
        random_state: The seed of the shuffle.

    Returns:
        The row positions of the train part and of the test part, each in shuffled order.

    Raises:
        ValueError: If a stratified split is impossible (a class too small for `test_size`).
    """
    from sklearn.model_selection import train_test_split

    counts = labels.value_counts()
    if params.stratify and counts.min() < 2:
        raise ValueError(
            f"class {counts.idxmin()!r} has {counts.min()} row; a stratified split needs at least 2 rows of "
            "every class: add rows, or set data_split.stratify: false"
        )
    try:
        train, test = train_test_split(
            np.arange(len(labels)),
            test_size=params.test_size,
            stratify=labels if params.stratify else None,
            random_state=random_state,
        )
    except ValueError as error:
        raise ValueError(
            f"cannot split {len(labels)} rows with data_split.test_size={params.test_size}: {error}; "
            "change data_split.test_size or set data_split.stratify: false"
        ) from None
    return train, test


def split(
    features: pd.DataFrame, params: DataSplitParams, target: str, random_state: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a labelled table into a train part and a test part.

    Args:
        features: A table with the label column `target`.
        params: The `data_split` section of params.yaml.
        target: The label column, used to stratify when `params.stratify` is set.
        random_state: The seed of the shuffle.

    Returns:
        The train table and the test table, with the same columns as `features`.

    Raises:
        ValueError: If a stratified split is impossible (a class too small for `test_size`).
    """
    train, test = split_positions(features[target], params, random_state)
    return features.iloc[train].reset_index(drop=True), features.iloc[test].reset_index(drop=True)


def add_batches(
    train: pd.DataFrame,
    test: pd.DataFrame,
    batches: list[pd.DataFrame],
    holdout: float,
    random_state: int,
    featurizer: Featurizer,
    target: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add labelled batches of raw rows: `holdout` of each batch to test as they are, the rest featurized to train.

    Args:
        train: The train table of the base data (features and the label).
        test: The test table of the base data (raw columns and the label).
        batches: Labelled batches with the raw table's columns (see `make retrain`).
        holdout: The fraction of each batch held out for test.
        random_state: The seed of the draw.
        featurizer: The fitted Featurizer that made the train table's features.
        target: The label column.

    Returns:
        The train and test tables with the batches' rows added.

    Raises:
        ValueError: If a batch's columns differ from the raw table's.
    """
    for number, batch in enumerate(batches, start=1):
        if list(batch.columns) != list(test.columns):
            raise ValueError(
                f"batch {number} in {PATHS.batches} has columns {list(batch.columns)}, not {list(test.columns)}"
            )
        held_out = batch.sample(frac=holdout, random_state=random_state)
        learnt = batch.drop(index=held_out.index)
        learnt_features = featurizer.transform(learnt.drop(columns=[target])).assign(**{target: learnt[target]})
        train = pd.concat([train, learnt_features], ignore_index=True)
        test = pd.concat([test, held_out], ignore_index=True)
    return train, test


@mlflow_stage("data_split")
def main(config: Config) -> StageResult:
    """Split the feature table into train features and test rows, and add any labelled batches."""
    target = config.data_load.target
    raw = read_table(PATHS.raw, made_by="data_load")
    features = read_table(PATHS.features, made_by="featurize")
    if len(raw) != len(features):
        raise ValueError(f"{PATHS.raw} has {len(raw)} rows but {PATHS.features} {len(features)}; run `make pipeline`")
    train_rows, test_rows = split_positions(features[target], config.data_split, config.base.random_state)
    train = features.iloc[train_rows].reset_index(drop=True)
    test = raw.iloc[test_rows].reset_index(drop=True)
    batch_files = sorted(PATHS.batches.glob("*.parquet"))
    if batch_files:
        featurizer = Featurizer.from_params(config.featurize, config.data_load.pixel_max)
        featurizer.fit(raw.drop(columns=[target]).head(1))
        batches = [read_table(path, made_by="make retrain") for path in batch_files]
        train, test = add_batches(
            train, test, batches, config.data_split.batch_holdout, config.base.random_state, featurizer, target
        )
    write_table(train, PATHS.train)
    write_table(test, PATHS.test)
    return StageResult(
        metrics={"n_train_rows": len(train), "n_test_rows": len(test), "n_batches": len(batch_files)},
        tags={"data.batches": ",".join(path.name for path in batch_files)} if batch_files else {},
    )


if __name__ == "__main__":
    run_stage(main)
