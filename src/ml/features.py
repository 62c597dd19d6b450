"""featurize's logic as a scikit-learn transformer: the raw columns in, the model's features out.

The featurize stage runs it on the raw table, and the logged model is this
transformer followed by the estimator, so the served model, `make predict` and
`mlflow.pyfunc.load_model` all take rows as data_load wrote them (minus the
label): what a caller sends goes through exactly the code the model was trained
behind. It learns nothing from the values (only the input columns), so fitting it
on any rows of the raw table gives the same transformer.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from src.config import MAX_PRODUCTS, FeaturizeParams
from src.ml.images import as_images, image_shape, pixel_columns, pixel_names
from src.ml.schema import column_problem


def product_count(features: int) -> int:
    """How many `<a>_x_<b>` columns the pairwise products add for this many numeric features."""
    return features * (features - 1) // 2


def pool_pixels(features: pd.DataFrame, size: int) -> pd.DataFrame:
    """Average each `size` x `size` block of an image's pixels into one pixel.

    Args:
        features: A table whose pixel columns form an image (see `src.ml.images`).
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


def check_inputs(raw: pd.DataFrame, columns: list[str]) -> None:
    """Check rows against the input columns: every column there, numeric, with a finite value in every row.

    Raises:
        ValueError: One line naming the first bad column and the first bad row (counted from 1).
    """
    missing = [name for name in columns if name not in raw.columns]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"column {missing[0]!r} is missing{more}; the model takes {', '.join(columns)}")
    for name in columns:
        problem = column_problem(raw[name])
        if problem is not None:
            raise ValueError(f"column {name!r} {problem[1]}; the model takes a finite number in every column")


class Featurizer(TransformerMixin, BaseEstimator):
    """The `featurize` section of params.yaml as a transformer: raw feature columns in, model features out.

    Args:
        pairwise_products: Add `<a>_x_<b>` for every pair of numeric features that are not image pixels.
        drop_columns: Raw feature columns to leave out.
        scale_pixels: Divide image pixels by `pixel_max`, so that they lie between 0 and 1.
        pixel_pooling: Average each k x k block of pixels into one feature (1: every pixel).
        pixel_max: The largest value a pixel takes (`DataLoadParams.pixel_max`).
    """

    def __init__(
        self,
        pairwise_products: bool = True,
        drop_columns: tuple[str, ...] = (),
        scale_pixels: bool = True,
        pixel_pooling: int = 1,
        pixel_max: int = 255,
    ) -> None:
        self.pairwise_products = pairwise_products
        self.drop_columns = drop_columns
        self.scale_pixels = scale_pixels
        self.pixel_pooling = pixel_pooling
        self.pixel_max = pixel_max

    @classmethod
    def from_params(cls, params: Any, pixel_max: int) -> Featurizer:
        """The transformer params.yaml's `featurize` section describes (`pixel_max` from `data_load`)."""
        return cls(
            pairwise_products=params.pairwise_products,
            drop_columns=tuple(params.drop_columns),
            scale_pixels=params.scale_pixels,
            pixel_pooling=params.pixel_pooling,
            pixel_max=pixel_max,
        )

    def fit(self, raw: pd.DataFrame, y: Any = None) -> Featurizer:
        """Learn the input columns from raw rows (the label left out) and check the params fit them.

        Raises:
            ValueError: `drop_columns` names a column that is not there, the pooling
                does not fit the images, or the products would be too many.
        """
        columns = [str(name) for name in raw.columns]
        unknown = [name for name in self.drop_columns if name not in columns]
        if unknown:
            raise ValueError(
                f"featurize.drop_columns names {', '.join(unknown)}, which is not a feature; "
                f"features: {', '.join(columns)}"
            )
        self.feature_names_in_ = np.array(columns, dtype=object)
        self.n_features_in_ = len(columns)
        self.feature_names_out_ = np.array(list(self._features(raw.head(1)).columns), dtype=object)
        return self

    def transform(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Turn raw rows into the model's features, after checking them.

        Raises:
            ValueError: One line naming the column: missing, not numeric, or with a
                null or infinite value (and the first such row).
        """
        check_is_fitted(self, "feature_names_in_")
        columns = list(self.feature_names_in_)
        check_inputs(raw, columns)
        return self._features(raw[columns])

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The names of the features `transform` returns."""
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_

    def _features(self, raw: pd.DataFrame) -> pd.DataFrame:
        features = raw.drop(columns=list(self.drop_columns))
        pixels = pixel_columns(features.columns)
        if pixels:
            scale = self.pixel_max if self.scale_pixels else 1
            features = features.assign(**{name: features[name].astype("float64") / scale for name in pixels})
        if self.pixel_pooling > 1:
            features = pool_pixels(features, self.pixel_pooling)
        if self.pairwise_products:
            pixels = set(pixel_columns(features.columns))
            numeric = [name for name in features.select_dtypes("number").columns if name not in pixels]
            if product_count(len(numeric)) > MAX_PRODUCTS:
                raise ValueError(
                    f"featurize.pairwise_products would add {product_count(len(numeric))} columns for "
                    f"{len(numeric)} features (at most {MAX_PRODUCTS}); set it to false for wide data"
                )
            products = {f"{a}_x_{b}": features[a] * features[b] for a, b in combinations(numeric, 2)}
            features = pd.concat([features, pd.DataFrame(products, index=features.index)], axis=1)
        return features


def with_features(featurizer: Featurizer, estimator: Any) -> Any:
    """The model to log and serve: the fitted featurizer, then the estimator fitted on its features.

    Raises:
        ValueError: If the estimator learnt other columns than the featurizer makes.
    """
    from sklearn.pipeline import Pipeline

    learnt = [str(name) for name in getattr(estimator, "feature_names_in_", [])]
    made = [str(name) for name in featurizer.get_feature_names_out()]
    if learnt != made:
        raise ValueError(f"the estimator learnt the features {learnt[:5]}..., featurize makes {made[:5]}...")
    return Pipeline([("featurize", featurizer), ("estimate", estimator)])


def features_of(model: Any, raw: pd.DataFrame) -> pd.DataFrame:
    """What `model` sees of raw rows: its featurize step's output (the rows themselves for a bare estimator)."""
    steps = getattr(model, "steps", None)
    return steps[0][1].transform(raw) if steps and isinstance(steps[0][1], Featurizer) else raw


def estimator_of(model: Any) -> Any:
    """The estimator inside a logged model: the step after the Featurizer, or the model itself."""
    steps = getattr(model, "steps", None)
    if steps and isinstance(steps[0][1], Featurizer):
        return steps[-1][1] if len(steps) == 2 else model[1:]
    return model


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
    return next(featurize_in_batches(raw, params, target, pixel_max, rows=max(len(raw), 1)))


def featurize_in_batches(
    raw: pd.DataFrame, params: FeaturizeParams, target: str, pixel_max: int, rows: int
) -> Iterator[pd.DataFrame]:
    """`featurize`, `rows` rows at a time: the features of a large table are never all in memory.

    The transformer learns nothing from the values, so each batch's features are
    those the whole table would get. Raises as `featurize`, before the first batch.
    """
    featurizer = Featurizer.from_params(params, pixel_max).fit(raw.drop(columns=[target]).head(1))
    for start in range(0, max(len(raw), 1), rows):
        part = raw.iloc[start : start + rows]
        yield featurizer.transform(part.drop(columns=[target])).assign(**{target: part[target]})
