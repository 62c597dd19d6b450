"""featurize's logic as a scikit-learn transformer: the raw columns in, the model's row-wise features out.

The featurize stage runs it on the raw table, and the logged model is this
transformer, then the encoder train fits, then the estimator, so the served
model, `make predict` and `mlflow.pyfunc.load_model` all take rows as data_load
wrote them (minus the label and the ids): what a caller sends goes through
exactly the code the model was trained behind. It learns nothing from the
values (only the input columns and their kinds), so fitting it on any rows of
the raw table gives the same transformer: a date becomes its parts, a boolean
stays 1 or 0, text stays text for the encoder, pixels are scaled and pooled.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from src.ml.catalog import MAX_PRODUCTS
from src.ml.images import as_images, image_shape, pixel_columns, pixel_names
from src.ml.tables import DATE, NUMBER, TEXT

if TYPE_CHECKING:
    from src.config import FeaturizeParams

DATE_PARTS = ("year", "month", "day", "weekday", "hour", "days")
"""What a date becomes: its year, month, day of the month, day of the week (Monday 0), hour and days since 1970."""


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


def column_kind(values: pd.Series) -> str:
    """The kind of a raw column by its type: number (booleans as 1 and 0 included), date or text."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return DATE
    if pd.api.types.is_numeric_dtype(values):
        return NUMBER
    return TEXT


def as_kind(values: pd.Series, kind: str, name: str) -> pd.Series:
    """A column of rows a caller sent, as the kind the model learnt it: numbers, dates or text.

    Numbers written as text (`"3.5"`) and booleans are numbers; ISO 8601 text is a
    date; anything is text. An empty value stays empty, in every kind (a blank
    text where a number or a date goes is empty too).

    Raises:
        ValueError: One line naming the column and the first row (counted from 1)
            holding a value the kind cannot take, or an infinite number.
    """
    if kind == TEXT:
        return values.astype("str")  # a number sent for a category is its text; empty stays empty
    if not pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_datetime64_any_dtype(values):
        values = values.mask(values.astype(str).str.strip() == "")  # a blank cell is an empty value
    if kind == DATE:
        if pd.api.types.is_datetime64_any_dtype(values):
            dates = values.dt.tz_convert("UTC").dt.tz_localize(None) if values.dt.tz is not None else values
            return dates.astype("datetime64[ns]")
        dates = pd.to_datetime(values.astype(object), format="ISO8601", errors="coerce", utc=True).dt.tz_localize(None)
        return _refuse_where(dates, values, name, "is not a date (send ISO 8601: 2024-03-01 or 2024-03-01 14:30)")
    if pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    numbers = pd.to_numeric(values, errors="coerce") if not pd.api.types.is_numeric_dtype(values) else values
    numbers = _refuse_where(numbers.astype("float64"), values, name, "is not a number")
    infinite = np.isinf(numbers.to_numpy())
    if infinite.any():
        row = int(infinite.nonzero()[0][0])
        raise ValueError(f"column {name!r} holds an infinite number in row {row + 1}; the model takes finite numbers")
    return numbers


def _refuse_where(converted: pd.Series, values: pd.Series, name: str, problem: str) -> pd.Series:
    """`converted`, unless a value that was there became empty in the conversion: then one line naming it."""
    lost = converted.isna().to_numpy() & values.notna().to_numpy()
    if lost.any():
        row = int(lost.nonzero()[0][0])
        raise ValueError(f"column {name!r}: {values.iloc[row]!r} in row {row + 1} {problem}")
    return converted


def dates_as_text(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with their dates as ISO 8601 text, as JSON and CSV carry them (an empty date stays empty).

    The logged model's signature is inferred from such rows: a date column takes
    text, which every caller can send (a pandas 3 text column, JSON, a CSV), and the
    featurize step parses it.
    """
    dates = [name for name in rows.columns if pd.api.types.is_datetime64_any_dtype(rows[name])]
    return rows.assign(**{name: rows[name].dt.strftime("%Y-%m-%dT%H:%M:%S").astype(object) for name in dates})


def date_parts(dates: pd.Series, name: str) -> dict[str, pd.Series]:
    """A date column as numbers, one per part of DATE_PARTS (`<name>_year`, ...); an empty date stays empty."""
    parts = {
        "year": dates.dt.year,
        "month": dates.dt.month,
        "day": dates.dt.day,
        "weekday": dates.dt.day_of_week,
        "hour": dates.dt.hour,
        "days": (dates - pd.Timestamp("1970-01-01")).dt.total_seconds() / 86_400,
    }
    return {f"{name}_{part}": parts[part].astype("float64") for part in DATE_PARTS}


class Featurizer(TransformerMixin, BaseEstimator):
    """The `featurize` section of params.yaml as a transformer: raw columns in, row-wise features out.

    Args:
        pairwise_products: Add `<a>_x_<b>` for every pair of numeric features (not pixels, not date parts).
        drop_columns: Raw feature columns to leave out.
        scale_pixels: Divide image pixels by `pixel_max`, so that they lie between 0 and 1.
        pixel_pooling: Average each k x k block of pixels into one feature (1: every pixel).
        pixel_max: The largest value a pixel takes (`DataLoadParams.pixel_max`).
        id_columns: Columns that identify a row (`data_load.id_columns`): never features, not needed.
    """

    def __init__(
        self,
        pairwise_products: bool = False,
        drop_columns: tuple[str, ...] = (),
        scale_pixels: bool = True,
        pixel_pooling: int = 1,
        pixel_max: int = 255,
        id_columns: tuple[str, ...] = (),
    ) -> None:
        self.pairwise_products = pairwise_products
        self.drop_columns = drop_columns
        self.scale_pixels = scale_pixels
        self.pixel_pooling = pixel_pooling
        self.pixel_max = pixel_max
        self.id_columns = id_columns

    @classmethod
    def from_params(cls, params: FeaturizeParams, pixel_max: int, id_columns: list[str]) -> Featurizer:
        """The transformer params.yaml's `featurize` section describes (`pixel_max`, `id_columns` from `data_load`)."""
        return cls(
            pairwise_products=params.pairwise_products,
            drop_columns=tuple(params.drop_columns),
            scale_pixels=params.scale_pixels,
            pixel_pooling=params.pixel_pooling,
            pixel_max=pixel_max,
            id_columns=tuple(id_columns),
        )

    def fit(self, raw: pd.DataFrame, y: Any = None) -> Featurizer:
        """Learn the input columns and their kinds from raw rows (the label left out) and check the params fit them.

        Raises:
            ValueError: `drop_columns` names a column that is not there, the pooling
                does not fit the images, or the products would be too many.
        """
        columns = [str(name) for name in raw.columns if str(name) not in self.id_columns]
        unknown = [name for name in self.drop_columns if name not in columns]
        if unknown:
            raise ValueError(
                f"featurize.drop_columns names {', '.join(unknown)}, which is not a feature; "
                f"features: {', '.join(columns)}"
            )
        self.feature_names_in_ = np.array(columns, dtype=object)
        self.n_features_in_ = len(columns)
        self.input_kinds_ = {name: column_kind(raw[name]) for name in columns}
        self.feature_names_out_ = np.array(list(self._features(raw[columns].head(1)).columns), dtype=object)
        return self

    def transform(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Turn raw rows into the model's features, each input column taken as the kind it was learnt as.

        Raises:
            ValueError: One line naming the column: missing, or holding a value its
                kind cannot take (text where numbers were, a date that does not parse,
                an infinite number), with the first such row.
        """
        check_is_fitted(self, "feature_names_in_")
        columns = list(self.feature_names_in_)
        missing = [name for name in columns if name not in raw.columns]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ValueError(f"column {missing[0]!r} is missing{more}; the model takes {', '.join(columns)}")
        kinds = getattr(self, "input_kinds_", dict.fromkeys(columns, NUMBER))
        taken = pd.DataFrame({name: as_kind(raw[name], kinds[name], name) for name in columns}, index=raw.index)
        return self._features(taken)

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
        dates = [name for name in features.columns if pd.api.types.is_datetime64_any_dtype(features[name])]
        parts = {}
        for name in dates:
            parts.update(date_parts(features[name], name))
        if dates:
            features = pd.concat([features.drop(columns=dates), pd.DataFrame(parts, index=features.index)], axis=1)
        if self.pairwise_products:
            excluded = set(pixel_columns(features.columns)) | set(parts)
            numeric = [
                name
                for name in features.columns
                if name not in excluded and pd.api.types.is_numeric_dtype(features[name])
            ]
            if product_count(len(numeric)) > MAX_PRODUCTS:
                raise ValueError(
                    f"featurize.pairwise_products would add {product_count(len(numeric))} columns for "
                    f"{len(numeric)} features (at most {MAX_PRODUCTS}); set it to false for wide data"
                )
            products = {f"{a}_x_{b}": features[a] * features[b] for a, b in combinations(numeric, 2)}
            features = pd.concat([features, pd.DataFrame(products, index=features.index)], axis=1)
        return features


def with_features(featurizer: Featurizer, model: Any) -> Any:
    """The model to log and serve: the fitted featurizer, then the model fitted on its features (encoder, estimator).

    Raises:
        ValueError: If the model learnt other columns than the featurizer makes.
    """
    from sklearn.pipeline import Pipeline

    steps = list(model.steps) if isinstance(model, Pipeline) else [("estimate", model)]
    learnt = [str(name) for name in getattr(steps[0][1], "feature_names_in_", [])]
    made = [str(name) for name in featurizer.get_feature_names_out()]
    if learnt != made:
        raise ValueError(f"the model learnt the features {learnt[:5]}..., featurize makes {made[:5]}...")
    return Pipeline([("featurize", featurizer), *steps])


def features_of(model: Any, raw: pd.DataFrame) -> pd.DataFrame:
    """What `model` sees of raw rows: its featurize step's output (the rows themselves for a bare estimator)."""
    steps = getattr(model, "steps", None)
    return steps[0][1].transform(raw) if steps and isinstance(steps[0][1], Featurizer) else raw


def estimator_of(model: Any) -> Any:
    """What follows the Featurizer in a logged model (the encoder and the estimator), or the model itself."""
    steps = getattr(model, "steps", None)
    if steps and isinstance(steps[0][1], Featurizer):
        return steps[-1][1] if len(steps) == 2 else model[1:]
    return model


def featurize(
    raw: pd.DataFrame, params: FeaturizeParams, target: str, pixel_max: int = 255, id_columns: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Add the engineered features to the raw table.

    Args:
        raw: One row per sample, as written by the data_load stage.
        params: The `featurize` section of params.yaml.
        target: The label column, kept as it is and never used as a feature.
        pixel_max: The largest value a pixel takes (`DataLoadParams.pixel_max`).
        id_columns: The columns that identify a row: left out.

    Returns:
        The features `Featurizer` makes of the raw feature columns, then the label column.

    Raises:
        ValueError: If `params.drop_columns` names a column that is not a feature,
            the pooling does not fit the images, or the products would be too many.
    """
    return next(featurize_in_batches(raw, params, target, pixel_max, id_columns, rows=max(len(raw), 1)))


def featurize_in_batches(
    raw: pd.DataFrame, params: FeaturizeParams, target: str, pixel_max: int, id_columns: tuple[str, ...], rows: int
) -> Iterator[pd.DataFrame]:
    """`featurize`, `rows` rows at a time: the features of a large table are never all in memory.

    The transformer learns nothing from the values, so each batch's features are
    those the whole table would get. Raises as `featurize`, before the first batch.
    """
    featurizer = Featurizer.from_params(params, pixel_max, list(id_columns)).fit(raw.drop(columns=[target]).head(1))
    for start in range(0, max(len(raw), 1), rows):
        part = raw.iloc[start : start + rows]
        yield featurizer.transform(part.drop(columns=[target])).assign(**{target: part[target]})
