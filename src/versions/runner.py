"""The one way the project runs dvc and git: at the project root, signals passed on, errors in one line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from src.cli import ChildRunner
from src.paths import PROJECT_ROOT
from src.tracking.parent import CodeVersion


def dvc(*arguments: str, quiet: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the dvc command line at the project root; `quiet` captures its output instead of showing it.

    `env` adds to this process's environment (e.g. `PIPELINE_DVC_SETTINGS`).

    A SIGINT, SIGTERM or SIGHUP to this process reaches dvc and whatever it
    runs, and no dvc process outlives the call (see `ChildRunner`).

    Raises:
        Interrupted: If this process was told to stop while dvc ran; raised once dvc has ended.
    """
    environment = {**os.environ, **env} if env else None
    return ChildRunner().run([sys.executable, "-m", "dvc", *arguments], PROJECT_ROOT, environment, capture=quiet)


def dvc_error(completed: subprocess.CompletedProcess) -> str:
    """Return the first `ERROR:` line dvc printed (without the prefix), or its last line of output."""
    output = f"{completed.stderr or ''}\n{completed.stdout or ''}"
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    return (errors or lines[-1:] or [f"exit code {completed.returncode}"])[0]


class GitError(RuntimeError):
    """A git command failed; the message is git's own first line."""


def git(*arguments: str) -> str:
    """Run git at the project root and return its stdout, stripped.

    A SIGINT, SIGTERM or SIGHUP to this process reaches git and whatever it runs
    (a remote helper, a hook), and git ends before `Interrupted` is raised; with
    signals deferred, git runs out of their reach instead (see `ChildRunner`).

    Raises:
        GitError: If git exits non-zero.
        Interrupted: If this process was told to stop while git ran.
    """
    completed = ChildRunner().run(["git", *arguments], PROJECT_ROOT, capture=True)
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


def code_version() -> CodeVersion:
    """The commit checked out, whether the tree is dirty, and the data versions (tags) at that commit."""
    commit, dirty = git_state()
    return CodeVersion(commit, dirty, tags_at(commit))


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


def commit_trailer(revision: str, key: str) -> str:
    """Return the value of the trailer `key` (e.g. `Data-version: v1`) in the message of `revision`, or ""."""
    return git("log", "-1", f"--format=%(trailers:key={key},valueonly,separator=%x20)", revision)


def tracked_changes() -> list[str]:
    """Return the tracked files with uncommitted changes (staged or not)."""
    return git("diff", "--name-only", "HEAD").splitlines()


def copy_work_tree(
    destination: Path,
    skip: re.Pattern[str] | None = None,
    prepare: Callable[[Path], None] | None = None,
    message: str = "copy of the work tree",
) -> Path:
    """Copy the project's tracked and unignored files into a fresh git repository at `destination`.

    The copy is committed, so it starts as a clean checkout of the work tree as it
    is now (uncommitted changes included). Used to benchmark and to test the
    real pipeline without touching this checkout's runs and data, and by `make new`.

    Args:
        destination: The new repository's folder.
        skip: Paths (relative, with /) that match are left out.
        prepare: Called with `destination` after the copy, before the commit.
        message: The commit message.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = PROJECT_ROOT / name
        if source.is_file() and not (skip and skip.match(name)):
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    if prepare is not None:
        prepare(destination)
    for command in (["init", "-q", "-b", "main"], ["add", "-A"]):
        subprocess.run(["git", *command], cwd=destination, check=True, capture_output=True)
    # The user's git identity when there is one, else the template's.
    has_identity = subprocess.run(["git", "config", "user.email"], cwd=destination, capture_output=True).returncode == 0
    identity = [] if has_identity else ["-c", "user.name=ml-research-template", "-c", "user.email=template@localhost"]
    subprocess.run(["git", *identity, "commit", "-qm", message], cwd=destination, check=True, capture_output=True)
    return destination
