"""Data versions and lineage: `make tag`, `make checkout` and `make history`.

A data version is an annotated git tag on a commit holding dvc.lock; the data
itself sits in the DVC cache and the default remote. Parent runs record the
commit, the tags at it and the hashes in dvc.lock, so each side finds the other:

- `tag`: verify the cache, commit the pipeline records, push the data, then tag
  (no tag if the push fails);
- `verify`: re-hash the cache objects a dvc.lock references, to catch corrupted data;
- `checkout`: from an MLflow run back to its commit, params.yaml, dvc.lock and data;
- `history`: per tag, the data hash and the runs trained on that data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from src.config import PATHS, PROJECT_ROOT, pipeline_stages, stage_outputs
from src.utils.cli import fail
from src.utils.git import GitError, git, tag_exists, tracked_changes
from src.utils.logs import setup_logging

logger = logging.getLogger(__name__)

LOCK_FILE = Path("dvc.lock")
PIPELINE_RECORDS = (Path("dvc.yaml"), LOCK_FILE, Path("params.yaml"))
DATA_HASH_TAG = "data.md5"
HISTORY_METRICS = ("accuracy", "f1_macro")


class VersionError(RuntimeError):
    """A data-version command cannot go on; the message says why and what to do."""


def output_hashes(lock: dict[str, Any]) -> dict[str, str]:
    """Return `path -> md5` for every stage output recorded in a parsed dvc.lock."""
    hashes: dict[str, str] = {}
    for stage in (lock or {}).get("stages", {}).values():
        for output in stage.get("outs", []):
            hashes[output["path"]] = output.get("md5", "")
    return hashes


def lineage_tags(lock: dict[str, Any]) -> dict[str, str]:
    """MLflow tags that tie a run to its data: one `dvc.out.<path>` per output, and `data.md5`.

    `data.md5` is the hash of the raw table (data_load's output), the data
    version a run was trained on.

    Args:
        lock: dvc.lock, parsed.
    """
    hashes = output_hashes(lock)
    tags = {f"dvc.out.{path}": md5 for path, md5 in hashes.items()}
    tags[DATA_HASH_TAG] = hashes.get(str(PATHS.raw), "")
    return tags


def dvc(*arguments: str, quiet: bool = False) -> subprocess.CompletedProcess:
    """Run the dvc command line at the project root; `quiet` captures its output instead of showing it.

    The output is captured in files, not pipes: `dvc queue start` leaves a worker
    behind that inherits them, and a pipe would keep this call waiting until the
    worker ends.
    """
    command = [sys.executable, "-m", "dvc", *arguments]
    if not quiet:
        return subprocess.run(command, cwd=PROJECT_ROOT, text=True, check=False)
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        completed = subprocess.run(
            command, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, check=False
        )
        stdout.seek(0)
        stderr.seek(0)
        return subprocess.CompletedProcess(command, completed.returncode, stdout.read(), stderr.read())


def managed_gitignores() -> list[Path]:
    """Return the .gitignore files DVC writes beside the pipeline's outputs."""
    folders = {Path(output).parent for stage in pipeline_stages().values() for output in stage_outputs(stage)}
    return sorted(folder / ".gitignore" for folder in folders if (PROJECT_ROOT / folder / ".gitignore").exists())


def tracked_data_files() -> list[Path]:
    """Return the `.dvc` files of data a user added with `dvc add`, and their .gitignore files."""
    files = sorted(path.relative_to(PROJECT_ROOT) for path in (PROJECT_ROOT / "data").rglob("*.dvc"))
    ignores = {path.parent / ".gitignore" for path in files if (PROJECT_ROOT / path.parent / ".gitignore").exists()}
    return files + sorted(ignores)


def pipeline_changes() -> list[str]:
    """Return what `dvc status` reports as changed: stage names and data files."""
    completed = dvc("status", "--json", quiet=True)
    if completed.returncode != 0:
        raise VersionError(f"dvc status failed: {(completed.stderr.strip().splitlines() or ['?'])[-1]}")
    return sorted(json.loads(completed.stdout or "{}"))


def recorded_outputs(revision: str = "") -> dict[str, str]:
    """Return `path -> md5` of every DVC-tracked output at `revision` (the working tree if empty).

    Covers the pipeline's outputs in dvc.lock and the data added with `dvc add` (.dvc files).
    """
    if revision:
        documents = [yaml.safe_load(git("show", f"{revision}:{LOCK_FILE}"))]
        listed = git("ls-tree", "-r", "--name-only", revision, "--", "data").splitlines()
        documents += [yaml.safe_load(git("show", f"{revision}:{name}")) for name in listed if name.endswith(".dvc")]
    else:
        documents = [yaml.safe_load((PROJECT_ROOT / LOCK_FILE).read_text(encoding="utf-8"))]
        documents += [
            yaml.safe_load(path.read_text(encoding="utf-8")) for path in (PROJECT_ROOT / "data").rglob("*.dvc")
        ]
    hashes = {}
    for document in documents:
        hashes.update(output_hashes(document))
        hashes.update({output["path"]: output.get("md5", "") for output in (document or {}).get("outs", [])})
    return hashes


def cache_file(cache: Path, md5: str) -> Path:
    """Where DVC 3 keeps the object with this MD5 in the cache `cache`."""
    return cache / "files" / "md5" / md5[:2] / md5[2:]


def file_md5(path: Path) -> str:
    """The MD5 of a file's bytes, as DVC 3 hashes files."""
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def corrupted_objects(revision: str = "") -> tuple[list[str], int, list[str]]:
    """Re-hash the cache objects that a dvc.lock references.

    Args:
        revision: A git revision or tag; the working tree's dvc.lock when empty.

    Returns:
        One line per object whose content no longer matches its hash, the number
        of objects checked, and the outputs whose objects are not in the cache.
    """
    completed = dvc("cache", "dir", quiet=True)
    cache = Path(completed.stdout.strip() or PROJECT_ROOT / ".dvc" / "cache")
    corrupted, missing, checked = [], [], 0
    for path, md5 in sorted(recorded_outputs(revision).items()):
        objects = [(path, md5)]
        if md5.endswith(".dir") and cache_file(cache, md5).exists():
            manifest = json.loads(cache_file(cache, md5).read_text(encoding="utf-8"))
            objects += [(f"{path}/{entry['relpath']}", entry["md5"]) for entry in manifest]
        for name, expected in objects:
            stored = cache_file(cache, expected)
            if not stored.exists():
                missing.append(name)
                continue
            checked += 1
            actual = file_md5(stored)
            if actual != expected.removesuffix(".dir"):
                corrupted.append(f"{name} (cache file {stored} hashes to {actual}, not {expected})")
    return corrupted, checked, missing


def verify(revision: str = "") -> None:
    """Raise VersionError naming every corrupted DVC cache object that dvc.lock at `revision` references."""
    corrupted, checked, missing = corrupted_objects(revision)
    if corrupted:
        raise VersionError(
            f"{len(corrupted)} corrupted DVC cache object(s): {'; '.join(corrupted)}; "
            "delete the cache file and run `make pull` or `make pipeline FORCE=1` to restore it"
        )
    where = f"at {revision}" if revision else "in the working tree's dvc.lock"
    note = f" ({len(missing)} not in the local cache: {', '.join(missing)})" if missing else ""
    logger.info("verified %d DVC cache objects %s: every one matches its hash%s", checked, where, note)


def tag(name: str, message: str, push_tag: bool) -> None:
    """Pin the current data version as the annotated tag `name`.

    Refuses when the tag exists, the pipeline is not up to date, or a cache
    object the data version references is corrupted (see `verify`). Commits only
    the pipeline records (dvc.yaml, dvc.lock, params.yaml, the .dvc files and
    the .gitignore files DVC manages), pushes the data to the default DVC
    remote, and only then tags, so a failed push leaves no tag.

    Args:
        name: The tag, e.g. `v1`.
        message: The tag's message: what this data version is.
        push_tag: Also push the tag to the git remote `origin`.
    """
    if tag_exists(name):
        raise VersionError(f"tag {name} already exists (see `git show {name}`); choose another TAG")
    verify()
    changed = pipeline_changes()
    if changed:
        raise VersionError(
            f"the pipeline is not up to date (dvc status: {', '.join(changed)} changed); run `make pipeline` first"
        )
    records = [str(path) for path in (*PIPELINE_RECORDS, *managed_gitignores(), *tracked_data_files())]
    git("add", "--", *records)
    if git("diff", "--cached", "--name-only", "--", *records):
        git("commit", "--quiet", "-m", message, "--", *records)
        logger.info("committed the pipeline records: %s", ", ".join(records))
    pushed = dvc("push")
    if pushed.returncode != 0:
        raise VersionError("dvc push failed (see above), so no tag was made; fix the remote and run `make tag` again")
    git("tag", "--annotate", name, "--message", message)
    logger.info("tagged %s as %s and pushed its data to the DVC remote", git("rev-parse", "--short", "HEAD"), name)
    if push_tag:
        if not git("remote"):
            raise VersionError(f"tag {name} was made, but this repository has no git remote to push it to")
        git("push", "origin", f"refs/tags/{name}")
        logger.info("pushed tag %s to origin", name)


def checkout(run_id: str) -> None:
    """Restore what an MLflow parent run used, on a new branch.

    Switches to a new branch `run-<id>` at the run's commit, writes the run's
    params.yaml and dvc.lock over the ones there, and checks the data out of
    the DVC cache (pulling what is missing from the remote). Refuses when
    tracked files have uncommitted changes.

    Args:
        run_id: A parent run id, or a stage run id (its parent is used).
    """
    changes = tracked_changes()
    if changes:
        raise VersionError(
            f"uncommitted changes in {', '.join(changes[:5])}; commit or stash them before `make checkout`"
        )
    from src.utils.mlflow_run import import_mlflow

    mlflow = import_mlflow()
    client = mlflow.MlflowClient()
    try:
        run = client.get_run(run_id)
    except Exception:
        raise VersionError(f"no MLflow run {run_id} in {mlflow.get_tracking_uri()}") from None
    parent_id = run.data.tags.get("mlflow.parentRunId")
    if parent_id:
        run = client.get_run(parent_id)
    run_id = run.info.run_id
    commit = run.data.tags.get("git.commit")
    if not commit:
        raise VersionError(f"run {run_id} records no git commit, so it cannot be checked out")
    artifacts = {item.path for item in client.list_artifacts(run_id)}
    if LOCK_FILE.name not in artifacts:
        raise VersionError(f"run {run_id} ended {run.info.status} without a dvc.lock; check out a FINISHED run")
    branch = f"run-{run_id[:8]}"
    try:
        git("switch", "--quiet", "--create", branch, commit)
    except GitError as error:
        raise VersionError(f"cannot create branch {branch} at {commit[:12]}: {error}") from None
    for name in ("params.yaml", LOCK_FILE.name):
        downloaded = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name)
        (PROJECT_ROOT / name).write_bytes(Path(downloaded).read_bytes())
    if dvc("checkout", quiet=True).returncode != 0:
        logger.info("some data is not in the local DVC cache; pulling it from the remote")
        if dvc("pull").returncode != 0:
            raise VersionError(
                "dvc pull failed (see above); the data of this run is in no cache or remote we can reach"
            )
    logger.info(
        "checked out run %s on branch %s (commit %s, its params.yaml and dvc.lock); `make pipeline` reproduces it",
        run_id,
        branch,
        commit[:12],
    )


def history() -> str:
    """Return a markdown table: per tag, its data hash and the runs trained on that data.

    A run counts for a tag when the raw-table hash it recorded (`data.md5`)
    equals the one in the tag's dvc.lock.
    """
    rows = ["| tag | date | message | data md5 | runs (accuracy, f1_macro) |", "| --- | --- | --- | --- | --- |"]
    refs = git(
        "for-each-ref",
        "refs/tags",
        "--sort=creatordate",
        "--format=%(refname:short)%09%(creatordate:short)%09%(contents:subject)",
    )
    if not refs:
        return 'No data versions yet: pin one with `make tag TAG=v1 MSG="..."`.\n'
    from src.utils.mlflow_run import import_mlflow

    mlflow = import_mlflow()
    client = mlflow.MlflowClient()
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    for line in refs.splitlines():
        name, date, subject = ([*line.split("\t"), "", ""])[:3]
        try:
            lock = yaml.safe_load(git("show", f"{name}:{LOCK_FILE}"))
        except GitError:
            lock = {}
        data_hash = output_hashes(lock).get(str(PATHS.raw), "")
        runs = (
            client.search_runs(
                experiments,
                filter_string=(
                    f"tags.`{DATA_HASH_TAG}` = '{data_hash}' and tags.`pipeline.role` = 'parent' "
                    "and attributes.status = 'FINISHED'"
                ),
                order_by=["attributes.start_time DESC"],
            )
            if data_hash
            else []
        )
        described = "<br>".join(
            f"`{run.info.run_id[:8]}` {run.info.run_name} ("
            + ", ".join(f"{run.data.metrics[key]:.4f}" for key in HISTORY_METRICS if key in run.data.metrics)
            + ")"
            for run in runs
        )
        rows.append(f"| {name} | {date} | {subject} | `{data_hash[:12]}` | {described or 'none'} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line: `python -m src.utils.data_versions tag|checkout|history ...`."""
    parser = argparse.ArgumentParser(prog="python -m src.utils.data_versions", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    tagging = commands.add_parser("tag", help="pin the current data version")
    tagging.add_argument("--name", required=True)
    tagging.add_argument("--message", required=True)
    tagging.add_argument("--push", action="store_true", help="also push the tag to origin")
    checking_out = commands.add_parser("checkout", help="restore what an MLflow run used")
    checking_out.add_argument("--run-id", required=True)
    verifying = commands.add_parser("verify", help="re-hash the DVC cache objects dvc.lock references")
    verifying.add_argument("--rev", default="", help="a git revision or tag (default: the working tree)")
    listing = commands.add_parser("history", help="data versions and the runs trained on them")
    listing.add_argument("--output", type=Path, help="also write the table to this file")
    arguments = parser.parse_args(argv)
    setup_logging()
    try:
        if arguments.command == "tag":
            tag(arguments.name, arguments.message, arguments.push)
        elif arguments.command == "checkout":
            checkout(arguments.run_id)
        elif arguments.command == "verify":
            verify(arguments.rev)
        else:
            table = history()
            sys.stdout.write(table)
            if arguments.output:
                from src.utils.io import atomic_path

                with atomic_path(arguments.output) as temporary:
                    temporary.write_text(table, encoding="utf-8")
    except (VersionError, GitError) as error:
        fail(str(error))


if __name__ == "__main__":
    main()
