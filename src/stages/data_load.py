"""Stage data_load: write the source dataset to data/raw as one table."""

from __future__ import annotations

import re

import pandas as pd

from src.config import PATHS, Config, DataLoadParams
from src.utils.cli import run_stage
from src.utils.io import write_table
from src.utils.mlflow_run import StageResult, mlflow_stage


def snake_case(name: str) -> str:
    """Turn a column name such as `sepal length (cm)` into `sepal_length_cm`."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def load_bundled(params: DataLoadParams) -> pd.DataFrame:
    """Return a scikit-learn bundled dataset as one table.

    Args:
        params: The `data_load` section of params.yaml.

    Returns:
        One row per sample: the features with snake_case names, then the label
        column `params.target` holding class names.

    Raises:
        ValueError: If the label column's name clashes with a feature's.
    """
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{params.dataset}")(as_frame=True)
    features = bunch.data.rename(columns=snake_case)
    if params.target in features.columns:
        raise ValueError(
            f"data_load.target is {params.target!r}, which is also a feature of {params.dataset}; choose another name"
        )
    class_names = pd.Categorical.from_codes(bunch.target.to_numpy(), categories=list(bunch.target_names))
    return features.assign(**{params.target: class_names.astype(str)})


def describe(table: pd.DataFrame, target: str) -> dict[str, float]:
    """Count the rows, feature columns and classes of a labelled table."""
    return {
        "n_rows": len(table),
        "n_features": table.shape[1] - 1,
        "n_classes": table[target].nunique(),
    }


@mlflow_stage("data_load")
def main(config: Config) -> StageResult:
    """Load the dataset named in params.yaml and write it to data/raw."""
    raw = load_bundled(config.data_load)
    write_table(raw, PATHS.raw)
    return StageResult(params=config.flat("data_load"), metrics=describe(raw, config.data_load.target))


if __name__ == "__main__":
    run_stage(main)
