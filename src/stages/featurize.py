"""Stage featurize: add engineered features to the raw table; images become scaled, pooled pixels."""

from __future__ import annotations

from itertools import combinations

import pandas as pd

from src.config import PATHS, Config, FeaturizeParams
from src.utils.cli import run_stage
from src.utils.images import as_images, image_shape, pixel_columns, pixel_names
from src.utils.io import read_table, write_table
from src.utils.mlflow_run import StageResult, mlflow_stage

MAX_PRODUCTS = 500


def pool_pixels(features: pd.DataFrame, size: int) -> pd.DataFrame:
    """Average each `size` x `size` block of an image's pixels into one pixel.

    Args:
        features: A table whose pixel columns form an image (see `src.utils.images`).
        size: The block's side; it must divide the image's height and width.

    Returns:
        The pooled pixel columns (named for the smaller image), then the other columns.

    Raises:
        ValueError: If the pixel columns form no image, or `size` does not divide it.
    """
    shape = image_shape(features.columns)
    if shape is None:
        raise ValueError(
            f"featurize.pixel_pooling is {size}, but the data has no complete image (pixel_<row>_<column> columns); "
            "set it to 1"
        )
    height, width, channels = shape
    if height % size or width % size:
        divisors = [k for k in range(1, min(height, width) + 1) if height % k == 0 and width % k == 0]
        raise ValueError(
            f"featurize.pixel_pooling is {size}, which does not divide the {width}x{height} images; "
            f"use one of {', '.join(map(str, divisors))}"
        )
    images = as_images(features, shape).astype("float64")
    blocks = images.reshape(len(features), height // size, size, width // size, size, *images.shape[3:])
    pooled = blocks.mean(axis=(2, 4)).reshape(len(features), -1)
    names = pixel_names(height // size, width // size, channels)
    others = features.drop(columns=pixel_columns(features.columns))
    return pd.concat([pd.DataFrame(pooled, columns=names, index=features.index), others], axis=1)


def featurize(raw: pd.DataFrame, params: FeaturizeParams, target: str, pixel_max: int = 255) -> pd.DataFrame:
    """Add the engineered features to the raw table.

    Args:
        raw: One row per sample, as written by the data_load stage.
        params: The `featurize` section of params.yaml.
        target: The label column, kept as it is and never used as a feature.
        pixel_max: The largest value a pixel takes (`DataLoadParams.pixel_max`).

    Returns:
        The raw features less `params.drop_columns`; pixels as floats, divided by
        `pixel_max` when `params.scale_pixels` is set and averaged over blocks of
        `params.pixel_pooling`; plus `<a>_x_<b>` for every pair of numeric
        features when `params.pairwise_products` is set; then the label column.

    Raises:
        ValueError: If `params.drop_columns` names a column that is not a feature,
            the pooling does not fit the images, or the products would be too many.
    """
    feature_names = [name for name in raw.columns if name != target]
    unknown = [name for name in params.drop_columns if name not in feature_names]
    if unknown:
        raise ValueError(
            f"featurize.drop_columns names {', '.join(unknown)}, which is not a feature; "
            f"features: {', '.join(feature_names)}"
        )
    features = raw[[name for name in feature_names if name not in params.drop_columns]]
    pixels = pixel_columns(features.columns)
    if pixels:
        scale = pixel_max if params.scale_pixels else 1
        features = features.assign(**{name: features[name].astype("float64") / scale for name in pixels})
    if params.pixel_pooling > 1:
        features = pool_pixels(features, params.pixel_pooling)
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
    features = featurize(raw, config.featurize, config.data_load.target, config.data_load.pixel_max)
    write_table(features, PATHS.features)
    return StageResult(
        metrics={"n_features": features.shape[1] - 1},
    )


if __name__ == "__main__":
    run_stage(main)
