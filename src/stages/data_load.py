"""Stage data_load: write the source data to data/raw as one labelled table.

The source is a dataset bundled with scikit-learn, a synthetic table generated
deterministically (for benchmarks at scale), a user's CSV or Parquet file under
data/external/, or a user's folder of PNG images there, one folder per class
(files and folders tracked with DVC). With `data_load.rev` set, the data is
read as it was at that git tag or commit, through `dvc.api`, from the DVC cache
or the remote.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from src.cli import run_stage
from src.config import SYNTHETIC, Config, DataLoadParams
from src.io import file_md5, write_table
from src.ml.sources import check_schema, describe, load_bundled, load_image_folder, make_synthetic, parse_table
from src.paths import PATHS, PROJECT_ROOT
from src.revisions import read_at_revision
from src.tracking.stage_runs import StageResult, mlflow_stage


def source_file(path: str, rev: str) -> tuple[bytes | Path, str]:
    """A file of the project at git revision `rev` (its bytes), or in the working tree if `rev` is empty (its path).

    Returns:
        The bytes or the path, and the MD5 of the file (as DVC hashes it).

    Raises:
        FileNotFoundError: With a message naming the file and what to do.
    """
    if rev:
        content = read_at_revision(path, rev)
        return content, hashlib.md5(content).hexdigest()
    file = PROJECT_ROOT / path
    if not file.is_file():
        raise FileNotFoundError(f"{path} not found; put the file there and track it with `dvc add {path}`")
    return file, file_md5(file)


def load_source(params: DataLoadParams, random_state: int) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read the source named in params.yaml, at `params.rev` if set.

    Args:
        params: The `data_load` section of params.yaml.
        random_state: The seed of a synthetic source.

    Returns:
        The labelled table and where it came from: `data.source`, `data.rev`,
        `data.path` and `data.md5` (the MD5 of the bytes read, as DVC hashes files;
        for an image folder, DVC's hash of the folder). At a revision, a bundled
        dataset or an image folder is read as the raw table the pipeline wrote then.
    """
    origin = {"data.source": params.source, "data.rev": params.rev}
    if params.source == SYNTHETIC and not params.rev:
        table = make_synthetic(params.synthetic_rows, params.synthetic_features, params.target, random_state)
        return table, origin
    if params.generated and not params.rev:
        return load_bundled(params.source, params.target), origin
    if params.image_folder and not params.rev:
        table, md5 = load_image_folder(params.source, params.target)
        return table, {**origin, "data.path": params.source, "data.md5": md5}
    path = str(PATHS.raw) if params.generated or params.image_folder else params.source
    source, md5 = source_file(path, params.rev)
    name = f"{path}@{params.rev}" if params.rev else path
    table = check_schema(parse_table(source, path), params.target, name)
    return table, {**origin, "data.path": path, "data.md5": md5}


@mlflow_stage("data_load")
def main(config: Config) -> StageResult:
    """Load the source named in params.yaml and write it to data/raw."""
    raw, origin = load_source(config.data_load, config.base.random_state)
    write_table(raw, PATHS.raw)
    origin.setdefault("data.path", str(PATHS.raw))
    origin.setdefault("data.md5", file_md5(PATHS.raw))
    return StageResult(
        metrics=describe(raw, config.data_load.target),
        tags=origin,
    )


if __name__ == "__main__":
    run_stage(main)
