"""The few git questions the pipeline asks, answered by the git command line."""

from __future__ import annotations

import subprocess

from src.config import PROJECT_ROOT


class GitError(RuntimeError):
    """A git command failed; the message is git's own first line."""


def git(*arguments: str) -> str:
    """Run git at the project root and return its stdout, stripped.

    Raises:
        GitError: If git exits non-zero.
    """
    completed = subprocess.run(["git", *arguments], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        reason = (completed.stderr.strip().splitlines() or ["failed"])[0]
        raise GitError(f"git {arguments[0]}: {reason.removeprefix('fatal: ').removeprefix('error: ')}")
    return completed.stdout.strip()


def git_state() -> tuple[str, bool]:
    """Return the commit checked out and whether tracked files differ from it.

    Returns:
        The full commit hash (empty outside a git repository or before the
        first commit) and True when the tree is dirty: tracked files changed
        or untracked, unignored files present.
    """
    try:
        commit = git("rev-parse", "HEAD")
    except GitError:
        return "", False
    return commit, bool(git("status", "--porcelain"))


def tags_at(commit: str) -> list[str]:
    """Return the tags that point at `commit`, newest first."""
    if not commit:
        return []
    return git("tag", "--points-at", commit, "--sort=-creatordate").split()


def tag_exists(name: str) -> bool:
    """Whether the tag `name` exists."""
    try:
        git("rev-parse", "--quiet", "--verify", f"refs/tags/{name}")
    except GitError:
        return False
    return True


def tracked_changes() -> list[str]:
    """Return the tracked files with uncommitted changes (staged or not)."""
    return git("diff", "--name-only", "HEAD").splitlines()
