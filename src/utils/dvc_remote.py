"""`make dvc-setup`: point DVC's default remote (and optionally its cache) where make says.

Writes `.dvc/config.local` (never committed) directly, the way DVC does, and only
when something changed: a local folder by default, or in team mode an S3 bucket
with its endpoint and keys (`DVC_S3_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, read from the environment so they never show in a
process list). Imports nothing heavy: make runs it before every pipeline.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from configobj import ConfigObj


class RemoteError(RuntimeError):
    """The remote cannot be set up; the message names it and says why."""


S3_KEYS = {
    "endpointurl": "DVC_S3_ENDPOINT_URL",
    "access_key_id": "AWS_ACCESS_KEY_ID",
    "secret_access_key": "AWS_SECRET_ACCESS_KEY",
}


def configure_remote(config_file: Path, name: str, url: str, cache_dir: str = "") -> bool:
    """Make `name` the default remote at `url` in `config_file`; return whether the file changed.

    For an `s3://` url the endpoint and keys come from the environment; a
    remote that no longer needs them loses them. A local folder is created.

    Args:
        config_file: DVC's local config, `.dvc/config.local`.
        name: The remote's name.
        url: A folder, or a URL such as `s3://bucket/path`.
        cache_dir: A cache folder shared between clones; DVC's own when empty.

    Raises:
        RemoteError: If the local folder cannot be created.
    """
    if "://" not in url:
        folder = Path(url)
        if folder.exists() and not folder.is_dir():
            raise RemoteError(f"the DVC remote {url} is a file, not a folder; set DVC_REMOTE_URL to a folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RemoteError(
                f"the DVC remote {url} cannot be created ({error.strerror}); "
                "set DVC_REMOTE_URL to a folder you can write"
            ) from None
    config = ConfigObj(str(config_file))
    before = config.dict()
    config.setdefault("core", {})["remote"] = name
    remote = config.setdefault(f'remote "{name}"', {})
    remote["url"] = url
    for key, variable in S3_KEYS.items():
        value = os.environ.get(variable, "") if url.startswith("s3://") else ""
        if value:
            remote[key] = value
        else:
            remote.pop(key, None)
    if cache_dir:
        config.setdefault("cache", {})["dir"] = str(Path(cache_dir).resolve())
    if config.dict() == before:
        return False
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.touch(mode=0o600)
    config.write()
    return True


def main(argv: list[str] | None = None) -> None:
    """`python -m src.utils.dvc_remote --name local --url PATH [--cache-dir DIR]`."""
    parser = argparse.ArgumentParser(prog="python -m src.utils.dvc_remote", description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--cache-dir", default="")
    parser.add_argument("--config-file", type=Path, default=Path(".dvc/config.local"))
    arguments = parser.parse_args(argv)
    try:
        configure_remote(arguments.config_file, arguments.name, arguments.url, arguments.cache_dir)
    except RemoteError as error:
        # Not src.utils.cli.fail: it would import the config and pydantic, and make runs this before every target.
        sys.stderr.write(f"error: {error}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
