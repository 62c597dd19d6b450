"""`make tag`: pin the current data version as an annotated git tag, its data pushed first."""

from __future__ import annotations

import logging
from pathlib import Path

from src.cli import Interrupted, signals_deferred
from src.lockfile import LOCK_FILE
from src.versions.runner import GitError, commit_trailer, dvc, dvc_error, git, tag_exists
from src.versions.verify import verify
from src.versions.workspace import (
    VersionError,
    default_remote,
    managed_gitignores,
    pipeline_changes,
    tracked_data_files,
)

logger = logging.getLogger(__name__)


# What `make tag` commits: the pipeline, its hashes and knobs, and where the data is (in team mode the
# S3 remote in .dvc/config, so other projects can `dvc import` it; never the keys, in .dvc/config.local).
PIPELINE_RECORDS = (Path("dvc.yaml"), LOCK_FILE, Path("params.yaml"), Path(".dvc/config"))

# The trailer `make tag` writes in the commit of the records, so a later `make tag` knows the commit it left untagged.
VERSION_TRAILER = "Data-version"

# How to finish a `make tag PUSH=1` whose tag could not be pushed.
RETRY_PUSH = "run the same make tag again, or `git push origin refs/tags/{name}`"


def record_paths() -> list[str]:
    """Return the pipeline records `make tag` commits: dvc.yaml, dvc.lock, params.yaml, .dvc and .gitignore files."""
    return [str(path) for path in (*PIPELINE_RECORDS, *managed_gitignores(), *tracked_data_files())]


def push_data(remote: str) -> None:
    """Push the data the workspace's dvc.lock and .dvc files reference to the default DVC remote.

    Args:
        remote: The remote's URL, for the messages.

    Raises:
        VersionError: If dvc push fails; the message names the remote and DVC's reason.
    """
    pushed = dvc("push", quiet=True)
    if pushed.returncode != 0:
        raise VersionError(
            f"dvc push to the DVC remote {remote} failed: {dvc_error(pushed)}; nothing was committed or tagged: "
            "fix the remote (DVC_REMOTE_URL, or team.env) and run the same make tag again"
        )
    summary = (pushed.stdout.strip().splitlines() or ["done"])[-1]
    logger.info("pushed the data to the DVC remote %s: %s", remote, summary.rstrip("."))


def tag_matches(name: str, message: str, records: list[str]) -> bool:
    """Whether the tag `name` already is what `make tag` would make now.

    That is: it points at HEAD, it has this message, and the pipeline records
    have no change to commit; a `make tag` that was interrupted after it tagged
    left it so.
    """
    tagged = git("rev-parse", f"refs/tags/{name}^{{commit}}")
    said = git("for-each-ref", f"refs/tags/{name}", "--format=%(contents)")
    unchanged = not git("status", "--porcelain", "--", *records)
    return tagged == git("rev-parse", "HEAD") and said.strip() == message.strip() and unchanged


def commit_and_tag(name: str, message: str, records: list[str]) -> str:
    """Commit the pipeline records (if they changed) and tag the commit; return its short hash.

    Call it with signals deferred (`signals_deferred`): git then runs out of
    reach of the terminal's Ctrl-C, so the two happen both or neither. Only a
    hard kill (SIGKILL, a power cut) can fall between them: it leaves the commit,
    marked with the trailer `Data-version: <name>`, and the same `make tag` run
    again finds it and tags it.

    Raises:
        VersionError: If git fails; the message says what was left.
    """
    git("add", "--", *records)
    if git("diff", "--cached", "--name-only", "--", *records):
        trailer = f"{VERSION_TRAILER}: {name}"
        git("commit", "--quiet", "--message", message, "--trailer", trailer, "--", *records)
        logger.info("committed the pipeline records: %s", ", ".join(records))
    commit = git("rev-parse", "--short", "HEAD")
    try:
        git("tag", "--annotate", name, "--message", message)
    except GitError as error:
        raise VersionError(
            f"{error}; the records are committed in {commit} but not tagged: run the same make tag again"
        ) from None
    return commit


def describe_head(name: str) -> None:
    """Log which commit `make tag` tags when the pipeline records have nothing to commit."""
    head = git("rev-parse", "--short", "HEAD")
    if commit_trailer("HEAD", VERSION_TRAILER) == name:
        logger.info("completing tag %s on commit %s, committed by an interrupted make tag", name, head)
    else:
        logger.info("the pipeline records are already committed: tagging commit %s", head)


def push_tag_to_origin(name: str, commit: str) -> None:
    """Push the tag `name` to the git remote `origin`.

    Raises:
        VersionError: If there is no origin or the push fails; the tag stays, and the message says how to push it.
    """
    by_hand = RETRY_PUSH.format(name=name)
    if "origin" not in git("remote").split():
        raise VersionError(
            f"tag {name} is made on {commit} with its data in the DVC remote, but this repository has no git "
            f"remote origin to push it to: add one (`git remote add origin <url>`), then {by_hand}"
        )
    try:
        git("push", "--quiet", "origin", f"refs/tags/{name}")
    except GitError as error:
        raise VersionError(
            f"tag {name} is made on {commit} with its data in the DVC remote, but pushing it to origin failed "
            f"({error}); {by_hand}"
        ) from None
    logger.info("pushed tag %s to origin", name)


def tag(name: str, message: str, push_tag: bool) -> None:
    """Pin the current data version as the annotated tag `name`.

    Refuses when the tag exists, the pipeline is not up to date, or a cache
    object the data version references is corrupted (see `verify`). Pushes the
    data to the default DVC remote first (dvc push needs no commit: it pushes
    what the workspace's dvc.lock and .dvc files reference), then commits only
    the pipeline records (dvc.yaml, dvc.lock, params.yaml, the .dvc files and the
    .gitignore files DVC manages) and tags that commit, with SIGINT, SIGTERM and
    SIGHUP deferred, so both happen or neither (see `commit_and_tag`). A failed
    or interrupted push leaves nothing behind, and whatever stops it, the same
    command run again completes it: a tag already made by it (at HEAD, with this
    message) is kept, and what was left (pushing the tag to origin) is done.

    Args:
        name: The tag, e.g. `v1`.
        message: The tag's message: what this data version is.
        push_tag: Also push the tag to the git remote `origin`.

    Raises:
        VersionError: If it refuses, fails or is interrupted; the message says
            what state is left, and `exit_code` is 130 or 143 after SIGINT or SIGTERM.
    """
    step, left = "checking the tag", "nothing was committed or tagged; run the same make tag again"
    not_on_origin = f"it is not on origin yet: {RETRY_PUSH.format(name=name)}"
    try:
        records = record_paths()
        already_made = tag_exists(name)
        if already_made and not tag_matches(name, message, records):
            raise VersionError(f"tag {name} already exists (see `git show {name}`); choose another TAG")
        remote = default_remote() or "(none set)"
        if already_made:
            commit = git("rev-parse", "--short", f"refs/tags/{name}^{{commit}}")
            left = f"tag {name} is made on {commit}; {not_on_origin if push_tag else 'run the same make tag again'}"
            logger.info("tag %s was already made on %s by an earlier make tag with this message", name, commit)
        else:
            step = "checking the DVC cache"
            verify()
            step = "checking that the pipeline is up to date"
            changed = pipeline_changes()
            if changed:
                raise VersionError(
                    f"the pipeline is not up to date (dvc status: {', '.join(changed)} changed); "
                    "run `make pipeline` first"
                )
        step = f"pushing the data to the DVC remote {remote}"
        push_data(remote)
        if not already_made:
            if not git("status", "--porcelain", "--", *records):
                describe_head(name)
            with signals_deferred() as received:
                commit = commit_and_tag(name, message, records)
                step = "committing and tagging"
                left = f"tag {name} is made on {commit}, with its data in the DVC remote; " + (
                    not_on_origin if push_tag else "nothing is left to do"
                )
            logger.info("tagged %s as %s; its data is in the DVC remote %s", commit, name, remote)
            if received:
                raise Interrupted(received[0])
        if push_tag:
            step = f"pushing tag {name} to origin"
            push_tag_to_origin(name, commit)
    except Interrupted as interrupt:
        raise VersionError(f"make tag interrupted while {step}: {left}", interrupt.exit_code) from None
