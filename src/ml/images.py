"""Images as table rows: one column per pixel, named by its position.

A grayscale image of height h and width w is the columns `pixel_<row>_<column>`
(the names scikit-learn's digits have); an RGB image adds the channel,
`pixel_<row>_<column>_<r|g|b>`. data_load writes these columns, featurize scales
and pools them, and evaluate draws sample images back from them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


PIXEL_COLUMN = re.compile(r"pixel_(\d+)_(\d+)(?:_([rgb]))?")

CHANNELS = ("r", "g", "b")


def pixel_names(height: int, width: int, channels: int = 1) -> list[str]:
    """Name the pixel columns of an image of `height` x `width` with 1 (grayscale) or 3 (RGB) channels, row by row."""
    suffixes = [""] if channels == 1 else [f"_{channel}" for channel in CHANNELS]
    return [f"pixel_{row}_{column}{suffix}" for row in range(height) for column in range(width) for suffix in suffixes]


def pixel_columns(columns: Iterable[str]) -> list[str]:
    """Return the pixel columns among `columns`, in their order."""
    return [str(name) for name in columns if PIXEL_COLUMN.fullmatch(str(name))]


def image_shape(columns: Iterable[str]) -> tuple[int, int, int] | None:
    """Return the (height, width, channels) that a table's pixel columns form, or None if they form no image.

    The pixel columns must be exactly `pixel_names(height, width, channels)`, in that order.
    """
    names = pixel_columns(columns)
    if not names:
        return None
    last = PIXEL_COLUMN.fullmatch(names[-1])
    height, width = int(last.group(1)) + 1, int(last.group(2)) + 1
    channels = 3 if last.group(3) else 1
    return (height, width, channels) if names == pixel_names(height, width, channels) else None


def as_images(table: pd.DataFrame, shape: tuple[int, int, int]) -> np.ndarray:
    """Return the images of a table's rows: an array of (rows, height, width) or (rows, height, width, 3)."""
    height, width, channels = shape
    values = table[pixel_names(height, width, channels)].to_numpy()
    return values.reshape(len(table), height, width) if channels == 1 else values.reshape(len(table), height, width, 3)
