"""Splitting the rows into train and test, and adding the labelled batches of `make retrain`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from src.ml.features import Featurizer
from src.paths import PATHS

if TYPE_CHECKING:
    from src.config import DataSplitParams


def split_positions(
    labels: pd.Series, params: DataSplitParams, random_state: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Choose which rows go to train and which to test.

    Args:
        labels: The label of every row, used to stratify when `stratify` is set.
        params: The `data_split` section of params.yaml.
        random_state: The seed of the shuffle.
        stratify: Keep the class proportions in both parts (a classification with `params.stratify`).

    Returns:
        The row positions of the train part and of the test part, each in shuffled order.

    Raises:
        ValueError: If a stratified split is impossible (a class too small for `test_size`).
    """
    from sklearn.model_selection import train_test_split

    counts = labels.value_counts()
    if stratify and counts.min() < 2:
        raise ValueError(
            f"class {counts.idxmin()!r} has {counts.min()} row; a stratified split needs at least 2 rows of "
            "every class: add rows, or set data_split.stratify: false"
        )
    try:
        train, test = train_test_split(
            np.arange(len(labels)),
            test_size=params.test_size,
            stratify=labels if stratify else None,
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
    train, test = split_positions(features[target], params, random_state, params.stratify)
    return features.iloc[train].reset_index(drop=True), features.iloc[test].reset_index(drop=True)


def add_batches(
    train: pd.DataFrame,
    test: pd.DataFrame,
    batches: list[pd.DataFrame],
    holdout: float,
    random_state: int,
    featurizer: Featurizer,
    target: str,
    id_columns: list[str] | tuple[str, ...] = (),
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
        id_columns: The columns that identify a row: a batch may lack them (they are left empty).

    Returns:
        The train and test tables with the batches' rows added.

    Raises:
        ValueError: If a batch's columns differ from the raw table's (ids aside).
    """
    for number, batch in enumerate(batches, start=1):
        lacking = [name for name in test.columns if name not in batch.columns and name not in id_columns]
        if lacking or set(batch.columns) - set(test.columns):
            raise ValueError(
                f"batch {number} in {PATHS.batches} has columns {list(batch.columns)}, not {list(test.columns)}"
            )
        batch = batch.reindex(columns=test.columns)
        held_out = batch.sample(frac=holdout, random_state=random_state)
        learnt = batch.drop(index=held_out.index)
        learnt_features = featurizer.transform(learnt.drop(columns=[target])).assign(**{target: learnt[target]})
        train = pd.concat([train, learnt_features], ignore_index=True)
        test = pd.concat([test, held_out], ignore_index=True)
    return train, test
