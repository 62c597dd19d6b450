"""Data-version logic in-process, in a temporary git and DVC repository: commit and tag, verify, refusals."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from src.versions.checkout import checkout
from src.versions.history import history
from src.versions.runner import commit_trailer, git
from src.versions.tag import VERSION_TRAILER, commit_and_tag, tag_matches
from src.versions.verify import verify
from src.versions.workspace import VersionError

IDENTITY = {"GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "Test"}


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A git repository with DVC in it, made the project root of every module of src/ for the test."""
    root = tmp_path / "repo"
    root.mkdir()
    for key, value in (IDENTITY | {"GIT_COMMITTER_EMAIL": "t@example.com"}).items():
        monkeypatch.setenv(key, value)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (root / "params.yaml").write_text("train:\n  C: 1.0\n")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "start"], cwd=root, check=True)
    for name, module in list(sys.modules.items()):
        if name.startswith("src") and hasattr(module, "PROJECT_ROOT"):
            monkeypatch.setattr(module, "PROJECT_ROOT", root)
    return root


def test_the_records_are_committed_and_tagged_together_and_a_second_call_finds_the_tag(repo):
    (repo / "params.yaml").write_text("train:\n  C: 0.5\n")
    records = ["dvc.lock", "params.yaml"]
    commit = commit_and_tag("v1", "C halved", records)
    assert git("rev-parse", "--short", "v1^{commit}") == commit
    assert commit_trailer("HEAD", VERSION_TRAILER) == "v1"  # a hard kill before the tag leaves this mark
    assert git("log", "-1", "--format=%s") == "C halved"
    assert tag_matches("v1", "C halved", records)
    assert not tag_matches("v1", "another message", records)


def test_verify_names_a_cache_object_whose_bytes_no_longer_match_its_hash(repo):
    good, bad = b"the raw table", b"the model"
    lock = {"schema": "2.0", "stages": {"s": {"outs": [
        {"path": "raw.bin", "md5": hashlib.md5(good).hexdigest()},
        {"path": "model.bin", "md5": hashlib.md5(bad).hexdigest()},
    ]}}}  # fmt: skip
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock))
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    for content in (good, bad):
        md5 = hashlib.md5(content).hexdigest()
        (cache / md5[:2]).mkdir(parents=True, exist_ok=True)
        (cache / md5[:2] / md5[2:]).write_bytes(content)
    verify()  # every object matches its hash
    flipped = hashlib.md5(bad).hexdigest()
    (cache / flipped[:2] / flipped[2:]).write_bytes(b"the modeL")
    with pytest.raises(VersionError, match=r"1 corrupted DVC cache object\(s\): model.bin \(cache file .* hashes to"):
        verify()


def test_checkout_refuses_uncommitted_changes_and_history_says_when_there_is_no_tag(repo):
    (repo / "params.yaml").write_text("train:\n  C: 2.0\n")
    with pytest.raises(VersionError, match=r"uncommitted changes in params.yaml; commit or stash them before"):
        checkout("0" * 32)
    assert history() == 'No data versions yet: pin one with `make tag TAG=v1 MSG="..."`.\n'
