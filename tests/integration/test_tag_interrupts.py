"""`make tag` stopped at each moment: a remote that cannot be written, Ctrl-C, SIGTERM, a hard kill, origin failing.

Whatever stops it, `make tag` prints one `error:` line saying what is left (nothing
committed or tagged, or a tag the same command completes), leaves no dvc or git
process behind, and the same `make tag` run again completes the data version: a
tag on a commit holding the pipeline records, with its data in the DVC remote.

The tests share one copy, which has run the pipeline once with a changed param,
so its records differ from the commit; each test adds a change of its own to
params.yaml (a comment: the pipeline stays up to date) for `make tag` to commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.integration.conftest import Project, error_lines, new_project

pytestmark = pytest.mark.slow

INTERRUPTS = pytest.mark.parametrize(
    ("signum", "to_group"),
    [(signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["ctrl-c to the process group", "sigterm to make"],
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    base = tmp_path_factory.mktemp("tagging")
    project = new_project(base / "repo", base / "remote")
    project.set_param("train", "linear.C", 0.5)
    result = project.make("pipeline")
    assert result.returncode == 0, result.stderr
    return project


@contextlib.contextmanager
def hanging_server() -> Iterator[tuple[str, threading.Event]]:
    """An HTTP address that accepts connections and never answers; the event is set at the first one.

    A DVC remote or a git origin there blocks whoever talks to it until it is stopped.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    asked = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(listener.accept()[0])
                asked.set()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", asked
    finally:
        listener.close()
        for connection in held:
            connection.close()


@contextlib.contextmanager
def blocking_post_commit(project: Project) -> Iterator[tuple[Path, Path]]:
    """A post-commit hook that marks that the commit is made, then waits until the release file exists."""
    committed, release = project.root.parent / "committed", project.root.parent / "release"
    committed.unlink(missing_ok=True)
    release.unlink(missing_ok=True)
    hook = project.root / ".git" / "hooks" / "post-commit"
    hook.write_text(f"#!/bin/sh\ntouch '{committed}'\nwhile [ ! -e '{release}' ]; do sleep 0.1; done\n")
    hook.chmod(0o755)
    try:
        yield committed, release
    finally:
        release.touch()
        hook.unlink()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)


def processes_in(root: Path) -> list[str]:
    """The command lines of the processes still running in the copy (a dvc push, a git push, a hook)."""
    found = []
    for process in psutil.process_iter(["cwd", "cmdline"]):
        cwd = process.info["cwd"]
        if cwd and Path(cwd).is_relative_to(root) and process.pid != os.getpid():
            found.append(" ".join(process.info["cmdline"] or []))
    return found


def pending_change(project: Project, note: str) -> None:
    """Change params.yaml by a comment: a record to commit, with the pipeline still up to date."""
    with (project.root / "params.yaml").open("a") as handle:
        handle.write(f"# {note}\n")


def history(project: Project) -> tuple[str, str]:
    """The commit checked out and the tags: what `make tag` may change."""
    return project.git("rev-parse", "HEAD"), project.git("tag")


def short_head(project: Project) -> str:
    return project.git("rev-parse", "--short", "HEAD").strip()


def stop(process: subprocess.Popen, signum: int, to_group: bool) -> None:
    """Ctrl-C in a terminal signals the whole process group; `kill` signals make alone."""
    if to_group:
        os.killpg(process.pid, signum)
    else:
        os.kill(process.pid, signum)


def assert_stopped_cleanly(project: Project, process: subprocess.Popen, stderr: str, signum: int) -> list[str]:
    """make was ended by the signal, the command exited 130 or 143 with one error line, and nothing runs on."""
    assert process.returncode == -signum  # make re-raises the signal once its child has ended
    assert f"] Error {128 + signum}" in stderr  # what make says the command exited with: 130 or 143
    assert "Traceback" not in stderr
    assert processes_in(project.root) == []
    return error_lines(subprocess.CompletedProcess([], 0, "", stderr))


def assert_tagged(project: Project, name: str) -> None:
    """`name` is an annotated tag on HEAD, whose commit holds the records as they are, and the data is in the remote."""
    assert project.git("cat-file", "-t", name).strip() == "tag"
    assert project.git("rev-parse", f"{name}^{{commit}}") == project.git("rev-parse", "HEAD")
    for record in ("params.yaml", "dvc.lock"):
        assert project.git("show", f"{name}:{record}") == (project.root / record).read_text()
    assert project.git("status", "--porcelain", "--", "params.yaml", "dvc.lock") == ""
    in_remote = project.run(project.env()["VENV"] + "/bin/dvc", "status", "--cloud", "--json")
    assert json.loads(in_remote.stdout) == {}, in_remote.stdout


def test_a_remote_that_cannot_be_written_leaves_no_commit_and_no_tag(project, tmp_path):
    pending_change(project, "unwritable remotes")
    before = history(project)
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    result = project.make("tag", TAG="v1", MSG="first", DVC_REMOTE_URL=str(a_file))
    assert error_lines(result) == [
        f"error: the DVC remote {a_file} is a file, not a folder; set DVC_REMOTE_URL to a folder"
    ]
    # /proc takes no new folders, even for root
    result = project.make("tag", TAG="v1", MSG="first", DVC_REMOTE_URL="/proc/dvc-remote")
    assert error_lines(result) == [
        "error: the DVC remote /proc/dvc-remote cannot be created (No such file or directory); "
        "set DVC_REMOTE_URL to a folder you can write"
    ]
    # A folder DVC cannot write its objects into: `files` is a file.
    broken = tmp_path / "broken-remote"
    broken.mkdir()
    (broken / "files").write_text("")
    result = project.make("tag", TAG="v1", MSG="first", DVC_REMOTE_URL=str(broken))
    [line] = error_lines(result)
    assert line.startswith(f"error: dvc push to the DVC remote {broken} failed: ")
    assert "Not a directory" in line
    assert line.endswith(
        "; nothing was committed or tagged: fix the remote (DVC_REMOTE_URL, or team.env) "
        "and run the same make tag again"
    )
    assert "Traceback" not in result.stderr
    assert history(project) == before

    result = project.make("tag", TAG="v1", MSG="first")
    assert result.returncode == 0, result.stderr
    assert_tagged(project, "v1")


@INTERRUPTS
def test_an_interrupt_while_dvc_push_runs_leaves_nothing_and_the_same_make_tag_completes(project, signum, to_group):
    name = f"pushing-{signum.name}"
    pending_change(project, name)
    before = history(project)
    with hanging_server() as (address, asked):
        remote = f"{address}/remote"
        process = project.spawn("tag", f"TAG={name}", "MSG=interrupted push", DVC_REMOTE_URL=remote)
        assert asked.wait(180), "dvc push never reached the remote"
        stop(process, signum, to_group)
        _, stderr = process.communicate(timeout=60)
    assert assert_stopped_cleanly(project, process, stderr, signum) == [
        f"error: make tag interrupted while pushing the data to the DVC remote {remote}: "
        "nothing was committed or tagged; run the same make tag again"
    ]
    assert history(project) == before

    result = project.make("tag", TAG=name, MSG="interrupted push")
    assert result.returncode == 0, result.stderr
    assert_tagged(project, name)
    assert project.git("rev-parse", "HEAD~1") == before[0]


@INTERRUPTS
def test_an_interrupt_while_committing_and_tagging_is_held_until_both_are_done(project, signum, to_group):
    name = f"committing-{signum.name}"
    pending_change(project, name)
    before = history(project)
    with blocking_post_commit(project) as (committed, release):
        process = project.spawn("tag", f"TAG={name}", "MSG=interrupted commit")
        wait_for(committed.exists, "the commit")
        stop(process, signum, to_group)
        time.sleep(1.5)
        assert process.poll() is None, "make tag stopped between the commit and the tag"
        release.touch()
        _, stderr = process.communicate(timeout=60)
    commit = short_head(project)
    assert assert_stopped_cleanly(project, process, stderr, signum) == [
        f"error: make tag interrupted while committing and tagging: tag {name} is made on {commit}, "
        "with its data in the DVC remote; nothing is left to do"
    ]
    assert project.git("rev-parse", "HEAD~1") == before[0]
    assert_tagged(project, name)

    result = project.make("tag", TAG=name, MSG="interrupted commit")
    assert result.returncode == 0, result.stderr
    assert f"tag {name} was already made on {commit} by an earlier make tag with this message" in result.stderr
    assert project.git("rev-parse", "HEAD~1") == before[0]


def test_a_hard_kill_between_commit_and_tag_is_completed_by_the_same_make_tag(project):
    name = "killed"
    pending_change(project, name)
    before = history(project)
    with blocking_post_commit(project) as (committed, release):
        process = project.spawn("tag", f"TAG={name}", "MSG=killed")
        wait_for(committed.exists, "the commit")
        os.killpg(process.pid, signal.SIGKILL)  # make and python die at once; git, in its own session, goes on
        process.wait(timeout=30)
        release.touch()
        wait_for(lambda: processes_in(project.root) == [], "the end of git commit")
    assert project.git("rev-parse", "HEAD~1") == before[0]
    assert project.git("log", "-1", "--format=%(trailers:key=Data-version,valueonly)").strip() == name
    assert name not in project.git("tag").split()

    result = project.make("tag", TAG=name, MSG="killed")
    assert result.returncode == 0, result.stderr
    commit = short_head(project)
    assert f"completing tag {name} on commit {commit}, committed by an interrupted make tag" in result.stderr
    assert project.git("rev-parse", "HEAD~1") == before[0]
    assert_tagged(project, name)


def test_push_says_what_is_left_when_origin_fails_and_the_same_make_tag_pushes_the_tag(project, tmp_path):
    name = "shared"
    pending_change(project, name)
    result = project.make("tag", TAG=name, MSG="for the team", PUSH="1")
    commit = short_head(project)
    retry = f"run the same make tag again, or `git push origin refs/tags/{name}`"
    assert error_lines(result) == [
        f"error: tag {name} is made on {commit} with its data in the DVC remote, but this repository has no git "
        f"remote origin to push it to: add one (`git remote add origin <url>`), then {retry}"
    ]
    assert_tagged(project, name)

    missing = tmp_path / "missing.git"
    project.run("git", "remote", "add", "origin", str(missing), check=True)
    result = project.make("tag", TAG=name, MSG="for the team", PUSH="1")
    assert error_lines(result) == [
        f"error: tag {name} is made on {commit} with its data in the DVC remote, but pushing it to origin failed "
        f"(git push: '{missing}' does not appear to be a git repository); {retry}"
    ]

    with hanging_server() as (address, asked):
        project.run("git", "remote", "set-url", "origin", f"{address}/origin.git", check=True)
        process = project.spawn("tag", f"TAG={name}", "MSG=for the team", "PUSH=1")
        assert asked.wait(180), "git push never reached origin"
        stop(process, signal.SIGINT, to_group=True)
        _, stderr = process.communicate(timeout=60)
    assert assert_stopped_cleanly(project, process, stderr, signal.SIGINT) == [
        f"error: make tag interrupted while pushing tag {name} to origin: tag {name} is made on {commit}; "
        f"it is not on origin yet: {retry}"
    ]

    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    project.run("git", "remote", "set-url", "origin", str(origin), check=True)
    result = project.make("tag", TAG=name, MSG="for the team", PUSH="1")
    assert result.returncode == 0, result.stderr
    assert f"pushed tag {name} to origin" in result.stderr
    tagged = subprocess.run(["git", "rev-parse", f"{name}^{{commit}}"], cwd=origin, capture_output=True, text=True)
    assert tagged.stdout == project.git("rev-parse", "HEAD")
    assert_tagged(project, name)
