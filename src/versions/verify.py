"""`make verify`: re-hash the DVC cache objects a dvc.lock references, to catch corrupted data."""

from __future__ import annotations

import json
import logging

from src.io import file_md5
from src.versions.workspace import VersionError, cache_dir, cache_file, recorded_outputs

logger = logging.getLogger(__name__)


def corrupted_objects(revision: str = "") -> tuple[list[str], int, list[str]]:
    """Re-hash the cache objects that a dvc.lock references.

    Args:
        revision: A git revision or tag; the working tree's dvc.lock when empty.

    Returns:
        One line per object whose content no longer matches its hash, the number
        of objects checked, and the outputs whose objects are not in the cache.
    """
    cache = cache_dir()
    corrupted, missing, checked = [], [], 0
    for path, md5 in sorted(recorded_outputs(revision).items()):
        objects = [(path, md5)]
        if md5.endswith(".dir") and cache_file(cache, md5).exists():
            manifest = json.loads(cache_file(cache, md5).read_text(encoding="utf-8"))
            objects += [(f"{path}/{entry['relpath']}", entry["md5"]) for entry in manifest]
        for name, expected in objects:
            stored = cache_file(cache, expected)
            if not stored.exists():
                missing.append(name)
                continue
            checked += 1
            actual = file_md5(stored)
            if actual != expected.removesuffix(".dir"):
                corrupted.append(f"{name} (cache file {stored} hashes to {actual}, not {expected})")
    return corrupted, checked, missing


def verify(revision: str = "") -> None:
    """Raise VersionError naming every corrupted DVC cache object that dvc.lock at `revision` references."""
    corrupted, checked, missing = corrupted_objects(revision)
    if corrupted:
        raise VersionError(
            f"{len(corrupted)} corrupted DVC cache object(s): {'; '.join(corrupted)}; "
            "delete the cache file and run `make pull` or `make pipeline FORCE=1` to restore it"
        )
    where = f"at {revision}" if revision else "in the working tree's dvc.lock"
    note = f" ({len(missing)} not in the local cache: {', '.join(missing)})" if missing else ""
    logger.info("verified %d DVC cache objects %s: every one matches its hash%s", checked, where, note)
