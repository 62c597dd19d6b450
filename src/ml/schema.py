"""A table's columns against a model's signature: what is missing, what must be cast."""

from __future__ import annotations

import numpy as np
import pandas as pd

EXACT_FLOAT_INTEGERS = 2**53  # the largest integer range a float64 holds exactly

FLOAT_TYPES = ("double", "float")

INTEGER_TYPES = ("long", "integer")


class ScoringInputError(ValueError):
    """An input file does not fit the model; the message names the file and the column."""


def check_columns(columns: dict[str, str], expected: dict[str, str], source: str) -> list[str]:
    """Check a file's columns (name -> pandas/arrow dtype) against the model's; return the columns to cast to float.

    Raises:
        ScoringInputError: A column is missing, or holds values the model cannot take.
    """
    missing = [name for name in expected if name not in columns]
    if missing:
        raise ScoringInputError(
            f"{source}: column {missing[0]!r} is missing"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + f"; the model needs {', '.join(expected)}"
        )
    casts = []
    for name, model_type in expected.items():
        dtype = str(columns[name]).lower()
        numeric = dtype.startswith(("int", "uint", "float", "double"))
        if model_type in FLOAT_TYPES and dtype.startswith(("int", "uint")):
            casts.append(name)
        elif model_type in (*FLOAT_TYPES, *INTEGER_TYPES) and not numeric:
            raise ScoringInputError(
                f"{source}: column {name!r} holds {dtype} values; the model needs numbers ({model_type})"
            )
    return casts


def column_problem(values: pd.Series, row: str = "row") -> tuple[str, str] | None:
    """What keeps a column from being a feature: not numbers, empty values or infinite ones (None if nothing).

    Args:
        values: The column.
        row: What a row is called in the message (`data row` for a file under its header).

    Returns:
        The kind of problem (`type`, `empty` or `infinite`) and a clause naming it and
        the first row it is in (counted from 1), e.g. `has 2 empty values (first in row 5)`.
    """
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        example = values.dropna().iloc[0] if values.notna().any() else None
        return "type", f"holds {values.dtype} values such as {example!r}"
    for kind, bad in (
        ("empty", values.isna().to_numpy()),
        ("infinite", np.isinf(values.to_numpy(dtype="float64", na_value=0.0))),
    ):
        if bad.any():
            return kind, f"has {int(bad.sum())} {kind} values (first in {row} {int(bad.nonzero()[0][0]) + 1})"
    return None
