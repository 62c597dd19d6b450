"""`make dvc-setup`: the default remote in .dvc/config.local, local folder or team mode's S3 bucket."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from src.versions.remote import RemoteError, configure_remote, main

S3_ENV = {
    "DVC_S3_ENDPOINT_URL": "http://127.0.0.1:5101",
    "AWS_ACCESS_KEY_ID": "key-id",
    "AWS_SECRET_ACCESS_KEY": "secret",
}


def dvc_config(repo: Path, *keys: str) -> list[str]:
    """What DVC itself reads from the repo's config, key by key."""
    return [
        subprocess.run(
            [sys.executable, "-m", "dvc", "config", key], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        for key in keys
    ]


def test_dvc_reads_the_s3_remote_then_the_local_one_again(tmp_path, monkeypatch):
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    config_file, shared_file = tmp_path / ".dvc" / "config.local", tmp_path / ".dvc" / "config"
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    assert configure_remote(config_file, "team", "s3://dvc-store/project", shared_file=shared_file)
    assert dvc_config(tmp_path, "core.remote", "remote.team.url", "remote.team.endpointurl") == [
        "team",
        "s3://dvc-store/project",
        "http://127.0.0.1:5101",
    ]
    # Where the data is goes into the committed config, for every clone and other projects; the keys never do.
    shared = shared_file.read_text()
    assert "url = s3://dvc-store/project" in shared and "endpointurl = http://127.0.0.1:5101" in shared
    assert "key-id" not in shared and "secret" not in shared
    assert "url" not in config_file.read_text() and "secret_access_key = secret" in config_file.read_text()
    assert config_file.stat().st_mode & 0o077 == 0  # the keys are for this user only
    assert not configure_remote(config_file, "team", "s3://dvc-store/project", shared_file=shared_file)

    folder = tmp_path / "remote"
    assert configure_remote(config_file, "local", str(folder), shared_file=shared_file)
    assert folder.is_dir()
    assert dvc_config(tmp_path, "core.remote", "remote.local.url") == ["local", str(folder)]
    assert str(folder) not in shared_file.read_text()  # a folder of this machine stays out of the committed config


def test_a_remote_switched_from_s3_to_a_folder_loses_its_keys(tmp_path, monkeypatch):
    config_file = tmp_path / "config.local"
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    configure_remote(config_file, "shared", "s3://bucket/path")
    assert "secret_access_key = secret" in config_file.read_text()
    configure_remote(config_file, "shared", str(tmp_path / "folder"))
    assert "secret" not in config_file.read_text()
    assert "endpointurl" not in config_file.read_text()


@pytest.mark.parametrize(
    ("where", "reason"),
    [("remote", "is a file, not a folder"), ("remote/sub", "cannot be created (Not a directory)")],
)
def test_a_remote_folder_that_cannot_be_made_is_one_line_naming_it(tmp_path, capsys, where, reason):
    (tmp_path / "remote").write_text("")
    url = tmp_path / where
    config_file = tmp_path / "config.local"
    with pytest.raises(RemoteError):
        configure_remote(config_file, "local", str(url))
    with pytest.raises(SystemExit) as exited:
        main(["--name", "local", "--url", str(url), "--config-file", str(config_file)])
    assert exited.value.code == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: the DVC remote {url} {reason}; set DVC_REMOTE_URL to a folder")
    assert not config_file.exists()
