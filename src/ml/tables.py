"""A user's table as it comes: the kind of each column, the ids, the rows without a label, and the task.

data_load runs `prepare_table` on every source, and `make pipeline` runs it
before its parent run opens, so a table that cannot be used is one line and no
run. It changes no value a user gave: it reads types (booleans become 1 and 0,
ISO dates become dates), leaves out what cannot teach anything (a constant or
empty column, a row without a label), and says so in a note each time.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from src.ml.catalog import AUTO, CLASSIFICATION, REGRESSION
from src.ml.images import pixel_columns

NUMBER, BOOLEAN, DATE, TEXT, ID = "number", "boolean", "date", "text", "id"
"""The kinds of column a table may hold besides its label (see `TableSchema.columns`)."""

ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?")
"""A date or date and time as ISO 8601 writes it: 2024-03-01, 2024-03-01 14:30, 2024-03-01T14:30:00Z."""

SAMPLE_VALUES = 1000
"""Values of a text column looked at to tell its kind (the whole column is then checked)."""

FEW_CLASSES = 10
"""A label of whole numbers with at most this many values (and few per row) is classes."""

MIN_ID_ROWS = 20
"""A column unique in every row looks like an id only from this many rows on."""


class DataSchemaError(ValueError):
    """The table cannot be used; the message names the file and the column, and what to do."""


@dataclass
class TableSchema:
    """What data_load found in a table: the task, the kind of each column, and what it left out.

    Written beside the raw table (data/raw/schema.json): every later stage, the
    logged model and the after-training commands read the task and the ids from it.

    Attributes:
        target: The label column.
        task: `classification` or `regression`.
        reason: Why that task, in words (`target 'progression': numbers with fractions, 214 distinct values`).
        columns: Every column of the raw table but the label, and its kind: number, boolean
            (1 and 0), date, text or id (never a feature).
        dropped: The columns left out of the raw table, and why.
        unlabelled_rows: Rows left out because their label is empty.
        notes: What a user should know about the table, one line each (a column that looks
            like an id, text among numbers); the stage prints them and tags its run.
    """

    target: str
    task: str
    reason: str
    columns: dict[str, str]
    dropped: dict[str, str] = field(default_factory=dict)
    unlabelled_rows: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def id_columns(self) -> list[str]:
        """The columns that identify a row, in table order."""
        return [name for name, kind in self.columns.items() if kind == ID]

    @property
    def features(self) -> list[str]:
        """The columns the model takes, in table order."""
        return [name for name, kind in self.columns.items() if kind != ID]

    def save(self, path: Path) -> None:
        """Write the schema as JSON to `path` (the caller makes the write atomic)."""
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> TableSchema:
        """Read a schema written by `save`."""
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def task_line(task: str, reason: str) -> str:
    """The line a run prints about its task: `task: regression (target 'y': ...); set base.task to override`."""
    return f"task: {task} ({reason}); set base.task to override"


def infer_task(labels: pd.Series, target: str, name: str) -> tuple[str, str]:
    """Tell the task from the label column, as AutoGluon's `infer_problem_type` does, and say why.

    Text, booleans and labels of two values are classes; numbers with a fraction
    are a regression. Whole numbers are a regression when they are many for the
    rows (more than 10% of the rows, 5% from 1,000 rows on), and classes when
    at most 10 distinct values; in between the rule cannot tell.

    Args:
        labels: The label of every row, none missing.
        target: The label column, for the reason.
        name: The file, for the error.

    Returns:
        The task and the reason, e.g. `target 'progression': numbers with fractions, 214 distinct values`.

    Raises:
        DataSchemaError: When the rule cannot tell; the line asks to set `base.task`.
    """
    distinct = int(labels.nunique())
    about = f"target {target!r}"
    if pd.api.types.is_bool_dtype(labels) or not pd.api.types.is_numeric_dtype(labels):
        kind = "booleans" if pd.api.types.is_bool_dtype(labels) else "text"
        return CLASSIFICATION, f"{about}: {kind}, {distinct} distinct values"
    if distinct == 2:
        return CLASSIFICATION, f"{about}: numbers, 2 distinct values"
    values = labels.to_numpy(dtype="float64")
    if not np.array_equal(values, np.round(values)):
        return REGRESSION, f"{about}: numbers with fractions, {distinct} distinct values"
    rows = len(labels)
    share = 0.05 if rows > 1000 else 0.1
    if distinct > share * rows:
        return REGRESSION, f"{about}: {distinct} distinct whole numbers in {rows} rows"
    if distinct <= FEW_CLASSES:
        return CLASSIFICATION, f"{about}: {distinct} distinct whole numbers"
    raise DataSchemaError(
        f"{name}: column {target!r} holds whole numbers with {distinct} distinct values in {rows} rows, which may "
        "be classes or a quantity; set base.task to classification or regression"
    )


def prepare_table(
    table: pd.DataFrame, target: str, id_columns: list[str], task: str, name: str
) -> tuple[pd.DataFrame, TableSchema]:
    """Check a labelled table and read its columns' kinds; return the table as the pipeline keeps it.

    - Rows without a label are left out (counted, and noted).
    - Booleans become 1.0 and 0.0 (an empty one stays empty), ISO 8601 text dates
      become dates, other text stays text; empty values stay empty.
    - A column with one value in every row, or none at all, is left out (noted);
      image pixels are kept, an image is all of its pixels.
    - `id_columns` are kept, as they are, and never features; a column that looks
      like an id (unique in every row: whole numbers, or text without spaces) and
      is not listed is noted.
    - Classes become text (1.0 and 1 alike become "1"); a regression's target, numbers.

    Args:
        table: The table as read.
        target: The label column (`data_load.target`).
        id_columns: `data_load.id_columns`.
        task: `base.task`: auto, classification or regression.
        name: The file (or dataset), for the messages.

    Returns:
        The table (features and ids in their order, the label last) and its schema.

    Raises:
        DataSchemaError: One line naming the file, the column and what to do: no such
            label or id column, no feature, no row, one class, text labels for a
            regression, a date that does not parse, a type no model takes, infinite
            numbers, a task the rule cannot tell.
    """
    columns = [str(column) for column in table.columns]
    if target not in columns:
        raise DataSchemaError(f"{name}: no column {target!r} (data_load.target); columns: {', '.join(columns)}")
    unknown = [column for column in id_columns if column not in columns]
    if unknown:
        raise DataSchemaError(
            f"{name}: data_load.id_columns names {unknown[0]!r}, which is not a column; columns: {', '.join(columns)}"
        )
    if not [column for column in columns if column != target and column not in id_columns]:
        raise DataSchemaError(f"{name}: no feature columns besides {target!r} and the id columns")
    if table.empty:
        raise DataSchemaError(f"{name}: no data rows, only the header; add rows")
    labels = table[target]
    unlabelled = labels.isna()
    if pd.api.types.is_string_dtype(labels) or labels.dtype == object:  # a blank label is no label
        unlabelled |= labels.astype(str).str.strip() == ""
    notes = []
    if unlabelled.all():
        raise DataSchemaError(f"{name}: column {target!r} has no label in any row; label the rows")
    if unlabelled.any():
        table = table.loc[~unlabelled.to_numpy()].reset_index(drop=True)
        notes.append(
            f"{name}: {int(unlabelled.sum())} of {len(unlabelled)} rows have no label in {target!r}; they are left out"
        )
    labels = label_values(table[target])
    if labels.nunique() < 2:
        raise DataSchemaError(
            f"{name}: column {target!r} has one value ({_shown(labels.iloc[0])!r}) in every labelled row; "
            "a model needs two"
        )
    if task == AUTO:
        task, reason = infer_task(labels, target, name)
    else:
        reason = f"target {target!r}, set in base.task"
    if task == REGRESSION:
        if pd.api.types.is_bool_dtype(labels) or not pd.api.types.is_numeric_dtype(labels):
            example = _shown(labels.iloc[0])
            raise DataSchemaError(
                f"{name}: column {target!r} holds text such as {example!r}, but base.task is regression, which "
                "needs numbers; set base.task to classification or auto"
            )
        labels = labels.astype("float64")
    else:
        labels = labels.astype(str)
    # pandas copies on write: the prepared table shares the read table's columns, and only a column
    # read as another type (booleans, dates) is new memory.
    prepared = table.drop(columns=[target])
    kinds, dropped = {}, {}
    pixels = set(pixel_columns(columns))
    for column in columns:
        if column == target:
            continue
        if column in id_columns:
            kinds[column] = ID
            continue
        values, kind = _column_values(prepared[column], column, name)
        if not values.notna().any():
            dropped[column] = "no value in any row"
        elif column not in pixels and _the_same_in_every_row(values):
            dropped[column] = f"the same value ({_shown(values.iloc[0])!r}) in every row"
        else:
            if values is not prepared[column]:
                prepared[column] = values
            kinds[column] = kind
            note = _looks_like_an_id(values, kind) or _text_among_numbers(values, kind)
            if note:
                notes.append(f"{name}: column {column!r} {note}")
    if dropped:
        notes.append(
            f"{name}: left out {', '.join(f'{column!r} ({why})' for column, why in dropped.items())}: "
            "a column that does not vary cannot teach the model anything"
        )
    if not [kind for kind in kinds.values() if kind != ID]:
        raise DataSchemaError(f"{name}: no feature varies: {', '.join(dropped)}; add columns that do")
    prepared = prepared.drop(columns=list(dropped))
    prepared[target] = labels.array  # as it is: text stays pandas text, never Python objects
    schema = TableSchema(target, task, reason, kinds, dropped, int(unlabelled.sum()), notes)
    return prepared, schema


def _shown(value: object) -> object:
    """A value as a message shows it: a numpy scalar as the Python value it holds."""
    return value.item() if isinstance(value, np.generic) else value


def label_values(labels: pd.Series) -> pd.Series:
    """The labels as values to tell a task from: whole numbers read as floats (a CSV with gaps) become integers."""
    if pd.api.types.is_float_dtype(labels):
        values = labels.to_numpy(dtype="float64")
        if np.isfinite(values).all() and np.array_equal(values, np.round(values)):
            return labels.astype("int64")
    if labels.dtype == object and labels.map(type).eq(bool).all():
        return labels.astype(bool)
    return labels


def _column_values(values: pd.Series, column: str, name: str) -> tuple[pd.Series, str]:
    """A feature column as the pipeline keeps it, and its kind.

    Raises:
        DataSchemaError: Naming the column: infinite numbers, a date that does not
            parse, a type no model takes.
    """
    if pd.api.types.is_bool_dtype(values) or _all_booleans(values):
        return values.map({True: 1.0, False: 0.0}).astype("float64"), BOOLEAN
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_complex_dtype(values):
        whole = pd.api.types.is_integer_dtype(values) and not values.isna().any()
        numbers = values if whole else values.astype("float64")
        infinite = np.isinf(numbers.to_numpy(dtype="float64", na_value=0.0))
        if infinite.any():
            row = int(infinite.nonzero()[0][0]) + 1
            raise DataSchemaError(
                f"{name}: column {column!r} has {int(infinite.sum())} infinite values (first in data row {row}); "
                "replace them with numbers or leave them empty"
            )
        return numbers, NUMBER
    if pd.api.types.is_datetime64_any_dtype(values):
        if getattr(values.dt, "tz", None) is not None:
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        return values, DATE
    if isinstance(values.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(values) or values.dtype == object:
        if not isinstance(values.dtype, pd.StringDtype):  # a column of Python objects: text, and only text
            kinds = {type(value) for value in values.dropna().head(SAMPLE_VALUES)}
            if kinds - {str}:
                other = sorted(kind.__name__ for kind in kinds - {str})
                raise DataSchemaError(
                    f"{name}: column {column!r} holds {', '.join(other)} values beside text; keep one type per column"
                )
            values = values.astype("str")
        if _looks_like_dates(values):
            return _parse_dates(values, column, name), DATE
        return values, TEXT
    raise DataSchemaError(
        f"{name}: column {column!r} holds {values.dtype} values; a column holds numbers, text, booleans or dates"
    )


def _all_booleans(values: pd.Series) -> bool:
    """Whether an object column holds only True, False and empty values (a CSV's booleans with gaps)."""
    if values.dtype != object:
        return False
    present = values.dropna()
    return bool(len(present)) and present.map(type).eq(bool).all()


def _looks_like_dates(text: pd.Series) -> bool:
    """Whether at least half of a text column's first values are ISO 8601 dates."""
    sample = text.dropna().head(SAMPLE_VALUES)
    return bool(len(sample)) and sample.str.fullmatch(ISO_DATE).mean() >= 0.5


def _parse_dates(text: pd.Series, column: str, name: str) -> pd.Series:
    """ISO 8601 dates as dates (time zones converted to UTC, then dropped).

    Raises:
        DataSchemaError: Naming the first value that is not a date, and its row.
    """
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True).dt.tz_localize(None)
    bad = parsed.isna() & text.notna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataSchemaError(
            f"{name}: column {column!r} holds dates, but {text.iloc[row]!r} in data row {row + 1} is not one "
            "(dates are read as ISO 8601, 2024-03-01 or 2024-03-01 14:30); fix it or leave it empty"
        )
    return parsed


def _the_same_in_every_row(values: pd.Series) -> bool:
    """Whether a column holds one value in every row, and no gap (compared with the first: no hash table)."""
    return not values.isna().any() and bool((values == values.iloc[0]).all())


def _looks_like_an_id(values: pd.Series, kind: str) -> str:
    """A note when a column not listed in `data_load.id_columns` looks like an id, else ""."""
    whole = kind == NUMBER and pd.api.types.is_integer_dtype(values)
    if not (whole or kind == TEXT) or len(values) < MIN_ID_ROWS or values.isna().any():
        return ""  # numbers with fractions, dates and booleans are never taken for ids
    if kind == TEXT and values.str.contains(r"\s", regex=True).any():
        return ""
    if values.nunique() != len(values):
        return ""
    return (
        "has a different value in every row, like an id; list it in data_load.id_columns to keep it out of "
        "the features (it is used as one now)"
    )


def _text_among_numbers(values: pd.Series, kind: str) -> str:
    """A note when a text column is mostly numbers, else ""."""
    if kind != TEXT:
        return ""
    sample = values.dropna().head(SAMPLE_VALUES)
    numbers = pd.to_numeric(sample, errors="coerce")
    if numbers.notna().mean() < 0.9:
        return ""
    example = sample[numbers.isna()].iloc[0]
    return (
        f"is mostly numbers, but holds text such as {example!r}, so it is taken as text categories; "
        "leave such cells empty to make it a number column"
    )


def describe(table: pd.DataFrame, schema: TableSchema) -> dict[str, float]:
    """Count what a prepared table holds: rows, features, classes (classification), what was left out."""
    counts = {
        "n_rows": len(table),
        "n_features": len(schema.features),
        "n_rows_without_label": schema.unlabelled_rows,
        "n_columns_left_out": len(schema.dropped),
    }
    if schema.task == CLASSIFICATION:
        counts["n_classes"] = table[schema.target].nunique()
    return counts
