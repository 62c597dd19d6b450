"""dvc.lock, read: the hashes of every output, and the MLflow tags that tie a run to them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from src.paths import PATHS, PROJECT_ROOT

LOCK_FILE = Path("dvc.lock")

DATA_HASH_TAG = "data.md5"


def output_hashes(lock: dict[str, Any]) -> dict[str, str]:
    """Return `path -> md5` for every stage output recorded in a parsed dvc.lock."""
    hashes: dict[str, str] = {}
    for stage in (lock or {}).get("stages", {}).values():
        for output in stage.get("outs", []):
            hashes[output["path"]] = output.get("md5", "")
    return hashes


def output_tag(path: str | Path) -> str:
    """The MLflow tag that holds the hash of a DVC-tracked output, e.g. `dvc.out.models/model.joblib`."""
    return f"dvc.out.{Path(path).as_posix()}"


def lineage_tags(lock: dict[str, Any]) -> dict[str, str]:
    """MLflow tags that tie a run to its data: one `dvc.out.<path>` per output, and `data.md5`.

    `data.md5` is the hash of the raw table (data_load's output), the data
    version a run was trained on.

    Args:
        lock: dvc.lock, parsed.
    """
    hashes = output_hashes(lock)
    tags = {output_tag(path): md5 for path, md5 in hashes.items()}
    tags[DATA_HASH_TAG] = hashes.get(str(PATHS.raw), "")
    return tags


def read_lock() -> dict[str, Any]:
    """The working tree's dvc.lock, parsed (empty before the first run)."""
    path = PROJECT_ROOT / LOCK_FILE
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.exists() else {}
