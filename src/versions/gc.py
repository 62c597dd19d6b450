"""`make gc`: free the local DVC cache of what no tag, branch, commit or the workspace uses; never the remote."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from src.cli import Interrupted
from src.paths import PROJECT_ROOT
from src.versions.runner import dvc, dvc_error
from src.versions.workspace import VersionError, cache_dir

logger = logging.getLogger(__name__)

# What `make gc` keeps: the data of the workspace and of every branch, tag, commit and experiment.
GC_SCOPE = ("--workspace", "--all-branches", "--all-tags", "--all-commits", "--all-experiments")


def cache_objects(cache: Path) -> tuple[int, int]:
    """Return how many objects the DVC cache `cache` holds and their bytes (the run cache left out)."""
    count = size = 0
    for path in cache.rglob("*"):
        if path.is_file() and path.relative_to(cache).parts[0] != "runs":
            count += 1
            size += path.stat().st_size
    return count, size


def human_bytes(size: int) -> str:
    """Return a byte count for a person: `812 B`, `14.2 KB`, `3.1 MB`, `2.0 GB`."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


@dataclass(frozen=True)
class CacheCollected:
    """What `collect_garbage` did to the DVC cache at `cache`: objects removed and kept, and their bytes."""

    cache: Path
    removed: int
    removed_bytes: int
    kept: int
    kept_bytes: int

    def describe(self) -> str:
        """One line for a person: what was removed, and what kept."""
        removed, kept = human_bytes(self.removed_bytes), human_bytes(self.kept_bytes)
        return (
            f"removed {self.removed} objects ({removed}) from the DVC cache {self.cache} that no tag, branch, "
            f"commit, experiment or the workspace uses; kept {self.kept} ({kept})"
        )


def collect_garbage(shared_cache_ok: bool = False) -> CacheCollected:
    """Remove from the local DVC cache every object that nothing in this repository uses.

    Keeps what the workspace and every branch, tag, commit and DVC experiment
    reference (`dvc gc` with `--workspace --all-branches --all-tags --all-commits
    --all-experiments --force`), and never touches a DVC remote: other clones may
    push to the same one, and `dvc gc --cloud` would delete their data. Refuses a
    cache that is not this clone's own `.dvc/cache` (DVC_CACHE_DIR shares one
    between clones), whose objects other clones' workspaces may need.

    Args:
        shared_cache_ok: Collect in a cache outside `.dvc/cache` all the same.

    Returns:
        What was removed and what kept.

    Raises:
        VersionError: If the cache is shared, or dvc gc fails.
    """
    cache = cache_dir()
    own = PROJECT_ROOT / ".dvc" / "cache"
    if not shared_cache_ok and cache.resolve() != own.resolve():
        raise VersionError(
            f"the DVC cache {cache} is not this clone's own (.dvc/cache): other clones that share it may need "
            "objects this one does not, and gc would delete them; run `make gc FORCE=1` if no other clone uses it"
        )
    before_count, before_size = cache_objects(cache)
    try:
        collected = dvc("gc", *GC_SCOPE, "--force", quiet=True)
    except Interrupted as interrupt:
        raise VersionError(
            "make gc interrupted: the DVC cache still holds everything in use (gc removes only unused objects); "
            "run make gc again to finish",
            interrupt.exit_code,
        ) from None
    if collected.returncode != 0:
        raise VersionError(f"dvc gc failed: {dvc_error(collected)}")
    after_count, after_size = cache_objects(cache)
    return CacheCollected(cache, before_count - after_count, before_size - after_size, after_count, after_size)
