"""`make dvc-setup`: point DVC's default remote (and optionally its cache) where make says.

Writes DVC's config files directly, the way DVC does, and only when something
changed. By default the remote is a local folder, a fact of this machine, kept in
`.dvc/config.local` (never committed). In team mode it is an S3 bucket: its URL and
endpoint go into the committed `.dvc/config`, so any clone, and any other project
(`dvc import`, `dvc get`, `dvc.api.open`), finds the data with nothing but the
keys; the keys (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, read from the
environment so they never show in a process list) stay in `.dvc/config.local`.
Imports nothing heavy: make runs it before every pipeline.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from configobj import ConfigObj

from src.io import private_folder


class RemoteError(RuntimeError):
    """The remote cannot be set up; the message names it and says why."""


S3_ENDPOINT = ("endpointurl", "DVC_S3_ENDPOINT_URL")

S3_KEYS = {
    "access_key_id": "AWS_ACCESS_KEY_ID",
    "secret_access_key": "AWS_SECRET_ACCESS_KEY",
}


def _write_if_changed(config: ConfigObj, before: dict, mode: int) -> bool:
    if config.dict() == before:
        return False
    path = Path(config.filename)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=mode)
    config.write()
    return True


def configure_remote(
    config_file: Path, name: str, url: str, cache_dir: str = "", shared_file: Path | None = None
) -> bool:
    """Make `name` the default remote at `url`; return whether a config file changed.

    A folder goes into `config_file` and is created. An `s3://` url goes, with its
    endpoint from the environment, into `shared_file` (the committed config) when
    given, and its keys from the environment into `config_file`; a remote that no
    longer needs them loses them.

    Args:
        config_file: DVC's local config, `.dvc/config.local`.
        name: The remote's name.
        url: A folder, or a URL such as `s3://bucket/path`.
        cache_dir: A cache folder shared between clones; DVC's own when empty.
        shared_file: DVC's committed config, `.dvc/config`, for what every clone may know.

    Raises:
        RemoteError: If the local folder cannot be created.
    """
    if "://" not in url:
        folder = Path(url)
        if folder.exists() and not folder.is_dir():
            raise RemoteError(f"the DVC remote {url} is a file, not a folder; set DVC_REMOTE_URL to a folder")
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # a new remote folder is this account's alone
        except OSError as error:
            raise RemoteError(
                f"the DVC remote {url} cannot be created ({error.strerror}); "
                "set DVC_REMOTE_URL to a folder you can write"
            ) from None
    on_s3 = url.startswith("s3://")
    changed = False
    where = {"url": url}
    endpoint = os.environ.get(S3_ENDPOINT[1], "") if on_s3 else ""
    if endpoint:
        where[S3_ENDPOINT[0]] = endpoint
    if on_s3 and shared_file is not None:
        shared = ConfigObj(str(shared_file))
        before = shared.dict()
        shared.setdefault("core", {})["remote"] = name
        shared_remote = shared.setdefault(f'remote "{name}"', {})
        shared_remote.update(where)
        if not endpoint:
            shared_remote.pop(S3_ENDPOINT[0], None)
        changed |= _write_if_changed(shared, before, 0o644)
        where = {}
    config = ConfigObj(str(config_file))
    before = config.dict()
    config.setdefault("core", {})["remote"] = name
    remote = config.setdefault(f'remote "{name}"', {})
    for key in ("url", S3_ENDPOINT[0]):
        if key in where:
            remote[key] = where[key]
        else:
            remote.pop(key, None)
    for key, variable in S3_KEYS.items():
        value = os.environ.get(variable, "") if on_s3 else ""
        if value:
            remote[key] = value
        else:
            remote.pop(key, None)
    if not remote:
        del config[f'remote "{name}"']
    if cache_dir:
        config.setdefault("cache", {})["dir"] = str(Path(cache_dir).resolve())
    else:  # DVC's own cache holds every version of the data: this account's alone
        private_folder(config_file.parent / "cache")
    return _write_if_changed(config, before, 0o600) or changed


def main(argv: list[str] | None = None) -> None:
    """`python -m src.versions.remote --name local --url PATH [--cache-dir DIR]`."""
    parser = argparse.ArgumentParser(prog="python -m src.versions.remote", description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--cache-dir", default="")
    parser.add_argument("--config-file", type=Path, default=Path(".dvc/config.local"))
    parser.add_argument("--shared-config-file", type=Path, default=Path(".dvc/config"))
    arguments = parser.parse_args(argv)
    try:
        configure_remote(
            arguments.config_file, arguments.name, arguments.url, arguments.cache_dir, arguments.shared_config_file
        )
    except RemoteError as error:
        # Not src.cli.fail: it would import the config and pydantic, and make runs this before every target.
        sys.stderr.write(f"error: {error}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
