"""Stage data_load: write the source data to data/raw as one labelled table, and what it found in it.

The source is a dataset made in code (bundled with scikit-learn, or generated;
see SOURCES in `src/ml/catalog.py`), a user's CSV or Parquet file under
data/external/, or a user's folder of PNG images there, one folder per class
(files and folders tracked with DVC). With `data_load.rev` set, the data is
read as it was at that git tag or commit, through `dvc.api`, from the DVC cache
or the remote. Every table then goes through `src.ml.tables.prepare_table`: the
kinds of its columns, the ids, the rows without a label and the task, written
to data/raw/schema.json beside the table.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pandas as pd

from src.cli import run_stage
from src.config import Config, DataLoadParams
from src.io import atomic_path, file_md5, write_table
from src.ml.catalog import SOURCES
from src.ml.sources import load_image_folder, parse_table
from src.ml.tables import describe, prepare_table
from src.paths import PATHS, PROJECT_ROOT
from src.revisions import read_at_revision
from src.tracking.stage_runs import StageResult, mlflow_stage
from src.tracking.tags import TASK_REASON_TAG, TASK_TAG

logger = logging.getLogger(__name__)


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


def load_source(params: DataLoadParams, random_state: int) -> tuple[pd.DataFrame, str, dict[str, str]]:
    """Read the source named in params.yaml, at `params.rev` if set.

    Args:
        params: The `data_load` section of params.yaml.
        random_state: The seed of a synthetic source.

    Returns:
        The labelled table as read, what the messages call it (the file, `<file>@<rev>`
        or the dataset's name), and where it came from: `data.source`, `data.rev`,
        `data.path` and `data.md5` (the MD5 of the bytes read, as DVC hashes files;
        for an image folder, DVC's hash of the folder). At a revision, a dataset
        made in code or an image folder is read as the raw table the pipeline wrote then.
    """
    origin = {"data.source": params.source, "data.rev": params.rev}
    if params.generated and not params.rev:
        return SOURCES[params.source].load(params, random_state), params.source, origin
    if params.image_folder and not params.rev:
        table, md5 = load_image_folder(params.source, params.target)
        return table, params.source, {**origin, "data.path": params.source, "data.md5": md5}
    path = str(PATHS.raw) if params.generated or params.image_folder else params.source
    source, md5 = source_file(path, params.rev)
    name = f"{path}@{params.rev}" if params.rev else path
    return parse_table(source, path), name, {**origin, "data.path": path, "data.md5": md5}


@mlflow_stage("data_load")
def main(config: Config) -> StageResult:
    """Load the source named in params.yaml, prepare it and write it to data/raw with its schema.

    Each note on the table (rows without a label, a column left out, one that
    looks like an id) is printed as a warning and kept in the run's `data.notes` tag.
    """
    params = config.data_load
    table, name, origin = load_source(params, config.base.random_state)
    raw, schema = prepare_table(table, params.target, params.id_columns, config.base.task, name)
    del table
    for note in schema.notes:
        logger.warning(note)
    write_table(raw, PATHS.raw)
    with atomic_path(PATHS.schema) as temporary:
        schema.save(temporary)
    origin.setdefault("data.path", str(PATHS.raw))
    origin.setdefault("data.md5", file_md5(PATHS.raw))
    tags = {**origin, TASK_TAG: schema.task, TASK_REASON_TAG: schema.reason}
    if schema.notes:
        tags["data.notes"] = "\n".join(schema.notes)
    return StageResult(metrics=describe(raw, schema), tags=tags)


if __name__ == "__main__":
    run_stage(main)
