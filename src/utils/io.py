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


class OverwriteError(ValueError):
    """An output path would overwrite a file the user gave as input, or one the project tracks."""


def check_output_path(
    output: Path, inputs: dict[str, Path], name: str = "OUTPUT", advice: str = "write to another file"
) -> None:
    """Refuse an output that would destroy something: an input of the same command or a tracked file.

    Args:
        output: The file the command is about to write.
        inputs: The command's input files by the name the user gave them (`INPUT`).
        name: The output's name for the user (`OUTPUT`).
        advice: What the user can do instead, ending the message.

    Raises:
        OverwriteError: One line: the output is an input (the same path, a symlink or a hard
            link to it), a file the pipeline writes (dvc.yaml's outputs), a file tracked with
            `dvc add`, or a file tracked by git.
    """
    from src.config import PROJECT_ROOT, pipeline_stages, stage_outputs

    for input_name, source in inputs.items():
        same = output.resolve() == source.resolve() or (
            output.exists() and source.exists() and os.path.samefile(output, source)
        )
        if same:
            raise OverwriteError(f"{name} {output} is the {input_name} file {source}; {advice}")
    resolved = output.resolve()
    if PROJECT_ROOT not in resolved.parents:
        return
    relative = resolved.relative_to(PROJECT_ROOT)
    pipeline_outputs = {Path(path) for stage in pipeline_stages().values() for path in stage_outputs(stage)}
    tracked_folders = [path.with_suffix("") for path in PROJECT_ROOT.glob("data/**/*.dvc")]
    if relative in pipeline_outputs or any(folder in (resolved, *resolved.parents) for folder in tracked_folders):
        raise OverwriteError(f"{name} {output} is data DVC tracks for the pipeline; write to another file")
    import subprocess

    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", str(relative)], cwd=PROJECT_ROOT, capture_output=True, check=False
    )
    if tracked.returncode == 0:
        raise OverwriteError(f"{name} {output} is a file git tracks in this project; write to another file")


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


def read_at_revision(path: str | Path, revision: str) -> bytes:
    """Read a file of the project as it was at a git revision (a tag, commit or experiment).

    Git-tracked files come from git; DVC-tracked ones from the DVC cache, or
    the remote when the cache lacks them, through `dvc.api`.

    Raises:
        FileNotFoundError: Naming the file and the revision, and what to check.
    """
    import dvc.api

    from src.config import PROJECT_ROOT

    try:
        return dvc.api.read(str(path), repo=str(PROJECT_ROOT), rev=revision, mode="rb")
    except Exception as error:
        raise FileNotFoundError(
            f"cannot read {path} at {revision!r} ({type(error).__name__}: {error}); "
            "check the revision exists (`git tag`) and its data was pushed (`make tag`)"
        ) from None
