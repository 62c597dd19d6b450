"""Reading and writing the files stages share; every write is atomic."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


class MissingInputError(FileNotFoundError):
    """A stage's input file does not exist; the message says which stage makes it."""


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` and move it onto `path` only on success.

    Readers never see a half-written file: if the block raises (or the process is
    interrupted), the temporary file is removed and `path` keeps its old content.

    Args:
        path: The file to write.

    Yields:
        A path in the same directory with the same suffix, to write to.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def require(path: Path, made_by: str) -> Path:
    """Return `path`, or raise MissingInputError naming the stage that writes it."""
    if not path.exists():
        raise MissingInputError(f"{path} is missing; it is written by the {made_by} stage (run `make pipeline`)")
    return path


ROWS_PER_BATCH = 250_000
"""Rows converted and written at a time: a large table is never held twice to write it."""


def read_table(path: Path, made_by: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a Parquet table written by the stage `made_by` (only `columns`, if given)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Without pre-buffering, Arrow does not hold a whole row group's bytes while it decodes them;
    # converted with self_destruct, each column's Arrow memory is freed as pandas takes it.
    table = pq.read_table(require(path, made_by), columns=columns, pre_buffer=False)
    frame = table.to_pandas(self_destruct=True, split_blocks=True)
    del table
    pa.default_memory_pool().release_unused()
    return frame


def parquet_writer(path: Path, schema: Any) -> Any:
    """A Parquet writer for tables of `schema`: dictionary encoding for every column but floats.

    Measured values rarely repeat, so a dictionary only adds a page to each
    float column (about a tenth of its size); labels and text gain from one.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    dictionary = [field.name for field in schema if not pa.types.is_floating(field.type)]
    return pq.ParquetWriter(path, schema, use_dictionary=dictionary)


def read_features(path: Path, made_by: str, target: str) -> tuple[pd.DataFrame, pd.Series]:
    """Read a table of features and its label column, with no copy of the table.

    When every feature is a number, the features come as a DataFrame over one
    C-ordered float64 array, filled a column at a time from the file; with text
    features, as a DataFrame of their own types. The label column `target` comes
    as a Series.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.ParquetFile(require(path, made_by), pre_buffer=False)
    names = [name for name in table.schema_arrow.names if name != target]
    labels = table.read(columns=[target]).column(0).to_pandas().rename(target)
    types = [table.schema_arrow.field(name).type for name in names]
    if not all(pa.types.is_floating(kind) or pa.types.is_integer(kind) for kind in types):
        return read_table(path, made_by, columns=names), labels
    matrix = np.empty((table.metadata.num_rows, len(names)), dtype="float64")
    for position, name in enumerate(names):  # a column at a time: the file's table is never in memory whole
        matrix[:, position] = table.read(columns=[name]).column(0).to_numpy()
    return pd.DataFrame(matrix, columns=names, copy=False), labels


@contextmanager
def table_writer(path: Path, schema: Any = None) -> Iterator[Callable[[pd.DataFrame], None]]:
    """Write a Parquet table to `path` in batches of rows, atomically.

    Args:
        path: The file to write.
        schema: The Arrow schema of the whole table; by default, that of the first rows.

    Yields:
        `append(rows)`: writes the next rows (a DataFrame with the same columns
        and types each time). The file appears, whole, only when the block ends
        without an error; at least one `append` (which may be empty) is needed.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path) as temporary:
        writer: pq.ParquetWriter | None = None

        def append(rows: pd.DataFrame) -> None:
            nonlocal writer
            batch = pa.Table.from_pandas(rows, preserve_index=False, schema=writer.schema if writer else schema)
            if writer is None:
                writer = parquet_writer(temporary, batch.schema)
            writer.write_table(batch)

        try:
            yield append
        finally:
            if writer is not None:
                writer.close()
        if writer is None:  # nothing appended: no table to publish (the empty temporary file is removed)
            raise ValueError(f"{path}: no rows were appended, not even an empty batch")


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Write `table` to `path` as Parquet, atomically, converting `ROWS_PER_BATCH` rows at a time."""
    import pyarrow as pa

    # The types of the whole table: a text column empty in the first rows is still text.
    schema = pa.Schema.from_pandas(table, preserve_index=False) if len(table) > ROWS_PER_BATCH else None
    with table_writer(path, schema) as append:
        for start in range(0, max(len(table), 1), ROWS_PER_BATCH):
            append(table.iloc[start : start + ROWS_PER_BATCH])


def write_rows_of(source: Path, positions: Any, path: Path) -> None:
    """Write the rows of the Parquet table `source` at `positions` (in that order) to `path`, atomically.

    The rows go from Arrow to Parquet `ROWS_PER_BATCH` at a time, never through
    pandas: the table in memory once, as Arrow holds it, and one batch.
    """
    import pyarrow.parquet as pq

    table = pq.read_table(source, pre_buffer=False)
    with atomic_path(path) as temporary, parquet_writer(temporary, table.schema) as writer:
        for start in range(0, max(len(positions), 1), ROWS_PER_BATCH):
            writer.write_table(table.take(positions[start : start + ROWS_PER_BATCH]))


def file_md5(path: Path) -> str:
    """The MD5 of a file's bytes, as DVC hashes files, read in chunks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def write_json(document: Any, path: Path) -> None:
    """Write `document` to `path` as indented JSON, atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def private_folder(folder: Path) -> Path:
    """Create `folder` (and its parents) for this account alone (0700), and tighten it if it exists; return it."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to a file created 0600: never readable by another account, not even for a moment."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    path.chmod(0o600)
