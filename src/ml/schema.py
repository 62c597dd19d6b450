"""A table's columns against a model's signature: what is missing, what holds the wrong kind, what must be cast."""

from __future__ import annotations

EXACT_FLOAT_INTEGERS = 2**53  # the largest integer range a float64 holds exactly

NUMBER_TYPES = ("double", "float", "long", "integer")
"""A model's (MLflow's) column types that take numbers."""

DATE_TYPES = ("datetime",)
"""A model's column types that take dates (or ISO 8601 text)."""

TEXT_TYPES = ("string",)
"""A model's column types that take text (a number sent there is its text)."""


PLURALS = {"number": "numbers", "boolean": "booleans", "date": "dates", "text": "text", "empty": "no value"}
"""What a message says a column of each kind holds."""


class ScoringInputError(ValueError):
    """An input file does not fit the model; the message names the file and the column."""


def file_kind(dtype: str) -> str:
    """What a file's column holds by its pandas or Arrow type: number, boolean, date, text or empty (no value)."""
    dtype = dtype.lower()
    if dtype in ("null", "na"):
        return "empty"
    if dtype.startswith("bool"):
        return "boolean"
    if dtype.startswith(("int", "uint", "float", "double", "decimal", "halffloat")):
        return "number"
    if dtype.startswith(("timestamp", "date", "datetime")):
        return "date"
    return "text"


def check_columns(columns: dict[str, str], expected: dict[str, str], source: str) -> list[str]:
    """Check a file's columns (name -> pandas/Arrow type) against the model's; return the number columns to cast.

    A number column takes numbers, booleans (1 and 0) and empty columns; a date
    column dates and text (each value is parsed as it is scored); a text column
    anything (a number is its text). A new category or word is fine: the model
    scores what it never saw.

    Returns:
        The columns that hold integers where the model takes floats (cast, exact up to 2**53).

    Raises:
        ScoringInputError: A column is missing, or holds a kind its model column cannot take
            (text where numbers were, numbers where dates were).
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
        kind = file_kind(str(columns[name]))
        if model_type in NUMBER_TYPES and kind in ("text", "date"):
            raise ScoringInputError(
                f"{source}: column {name!r} holds {PLURALS[kind]} where the model takes numbers ({model_type}); "
                "was it changed? one cell that is not a number makes a whole column text"
            )
        if model_type in DATE_TYPES and kind in ("number", "boolean"):
            raise ScoringInputError(
                f"{source}: column {name!r} holds {PLURALS[kind]} where the model takes dates; "
                "send ISO 8601 dates (2024-03-01)"
            )
        if model_type in NUMBER_TYPES and str(columns[name]).lower().startswith(("int", "uint")):
            casts.append(name)
    return casts
