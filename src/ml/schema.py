"""A table's columns against a model's signature: what is missing, what must be cast."""

from __future__ import annotations

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
