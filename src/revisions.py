"""A file of the project as it was at a git revision (a tag, a commit, a DVC experiment), through dvc.api."""

from __future__ import annotations

from pathlib import Path


def read_at_revision(path: str | Path, revision: str) -> bytes:
    """Read a file of the project as it was at a git revision (a tag, commit or experiment).

    Git-tracked files come from git; DVC-tracked ones from the DVC cache, or
    the remote when the cache lacks them, through `dvc.api`.

    Raises:
        FileNotFoundError: Naming the file and the revision, and what to check.
    """
    import dvc.api

    from src.paths import PROJECT_ROOT

    try:
        return dvc.api.read(str(path), repo=str(PROJECT_ROOT), rev=revision, mode="rb")
    except Exception as error:
        raise FileNotFoundError(
            f"cannot read {path} at {revision!r} ({type(error).__name__}: {error}); "
            "check the revision exists (`git tag`) and its data was pushed (`make tag`)"
        ) from None
