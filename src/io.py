"""Reading and writing the files stages share; every write is atomic."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
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


def read_table(path: Path, made_by: str) -> pd.DataFrame:
    """Read a Parquet table written by the stage `made_by`."""
    import pandas as pd

    return pd.read_parquet(require(path, made_by))


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Write `table` to `path` as Parquet, atomically."""
    with atomic_path(path) as temporary:
        table.to_parquet(temporary, index=False)


def write_json(document: Any, path: Path) -> None:
    """Write `document` to `path` as indented JSON, atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
