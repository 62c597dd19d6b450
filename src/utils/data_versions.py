"""Data versions and lineage: `make tag`, `verify`, `checkout`, `history` and `gc`.

A data version is an annotated git tag on a commit holding dvc.lock; the data
itself sits in the DVC cache and the default remote. Parent runs record the
commit, the tags at it and the hashes in dvc.lock, so each side finds the other:

- `tag`: verify the cache, push the data, then commit the pipeline records and
  tag them together (nothing is committed if the push fails or is interrupted);
- `verify`: re-hash the cache objects a dvc.lock references, to catch corrupted data;
- `checkout`: from an MLflow run back to its commit, params.yaml, dvc.lock and data;
- `history`: per tag, the data hash and the runs trained on that data;
- `gc`: remove from the local DVC cache what no tag, branch, commit, experiment or
  the workspace uses; never the remote, which other clones may share.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from src.config import PATHS, PROJECT_ROOT, pipeline_stages, stage_outputs
from src.utils.cli import EXIT_FAILED, ChildRunner, Interrupted, fail, signals_deferred, stop_on_signals
from src.utils.git import GitError, commit_trailer, git, tag_exists, tracked_changes
from src.utils.logs import setup_logging

logger = logging.getLogger(__name__)

LOCK_FILE = Path("dvc.lock")
# What `make tag` commits: the pipeline, its hashes and knobs, and where the data is (in team mode the
# S3 remote in .dvc/config, so other projects can `dvc import` it; never the keys, in .dvc/config.local).
PIPELINE_RECORDS = (Path("dvc.yaml"), LOCK_FILE, Path("params.yaml"), Path(".dvc/config"))
DATA_HASH_TAG = "data.md5"
HISTORY_METRICS = ("accuracy", "f1_macro")
# The trailer `make tag` writes in the commit of the records, so a later `make tag` knows the commit it left untagged.
VERSION_TRAILER = "Data-version"
# How to finish a `make tag PUSH=1` whose tag could not be pushed.
RETRY_PUSH = "run the same make tag again, or `git push origin refs/tags/{name}`"
# What `make gc` keeps: the data of the workspace and of every branch, tag, commit and experiment.
GC_SCOPE = ("--workspace", "--all-branches", "--all-tags", "--all-commits", "--all-experiments")


class VersionError(RuntimeError):
    """A data-version command cannot go on; the message says why and what to do.

    Args:
        message: One line: what went wrong, what state is left and what to do.
        exit_code: The process's exit code (130 or 143 when it was interrupted).
    """

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def output_hashes(lock: dict[str, Any]) -> dict[str, str]:
    """Return `path -> md5` for every stage output recorded in a parsed dvc.lock."""
    hashes: dict[str, str] = {}
    for stage in (lock or {}).get("stages", {}).values():
        for output in stage.get("outs", []):
            hashes[output["path"]] = output.get("md5", "")
    return hashes


def output_tag(path: str | Path) -> str:
    """The MLflow tag that holds the hash of a DVC-tracked output, e.g. `dvc.out.models/model.joblib`."""
    return f"dvc.out.{Path(path).as_posix()}"


def lineage_tags(lock: dict[str, Any]) -> dict[str, str]:
    """MLflow tags that tie a run to its data: one `dvc.out.<path>` per output, and `data.md5`.

    `data.md5` is the hash of the raw table (data_load's output), the data
    version a run was trained on.

    Args:
        lock: dvc.lock, parsed.
    """
    hashes = output_hashes(lock)
    tags = {output_tag(path): md5 for path, md5 in hashes.items()}
    tags[DATA_HASH_TAG] = hashes.get(str(PATHS.raw), "")
    return tags


def dvc(*arguments: str, quiet: bool = False) -> subprocess.CompletedProcess:
    """Run the dvc command line at the project root; `quiet` captures its output instead of showing it.

    A SIGINT, SIGTERM or SIGHUP to this process reaches dvc and whatever it
    runs, and no dvc process outlives the call (see `ChildRunner`).

    Raises:
        Interrupted: If this process was told to stop while dvc ran; raised once dvc has ended.
    """
    return ChildRunner().run([sys.executable, "-m", "dvc", *arguments], PROJECT_ROOT, capture=quiet)


def dvc_error(completed: subprocess.CompletedProcess) -> str:
    """Return the first `ERROR:` line dvc printed (without the prefix), or its last line of output."""
    output = f"{completed.stderr or ''}\n{completed.stdout or ''}"
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    return (errors or lines[-1:] or [f"exit code {completed.returncode}"])[0]


def default_remote() -> str:
    """Describe the default remote as DVC's config files set it: its URL and endpoint, or "" when there is none."""
    from dvc.config import Config

    try:
        config = Config(dvc_dir=str(PROJECT_ROOT / ".dvc"))
    except Exception:  # an unreadable config: dvc itself will say what is wrong with it
        return ""
    name = config["core"].get("remote", "")
    remote = config["remote"].get(name, {}) if name else {}
    endpoint = remote.get("endpointurl", "")
    return f"{remote.get('url', '')} (S3 endpoint {endpoint})" if endpoint else str(remote.get("url", ""))


def cache_dir() -> Path:
    """Return the DVC cache folder, as DVC reports it."""
    completed = dvc("cache", "dir", quiet=True)
    return Path(completed.stdout.strip() or PROJECT_ROOT / ".dvc" / "cache")


def read_lock() -> dict[str, Any]:
    """The working tree's dvc.lock, parsed (empty before the first run)."""
    path = PROJECT_ROOT / LOCK_FILE
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.exists() else {}


def after_failure(lock_before: dict[str, Any], stopped_at: str) -> str:
    """Make the workspace agree with dvc.lock after a failed or interrupted `dvc repro`, and say what it holds.

    DVC records each stage that succeeds at once and removes a stage's outputs
    before running it, so after a failure dvc.lock may hold this run's first
    stages, and the stage that stopped has lost its outputs. Those are checked
    out of the DVC cache as dvc.lock records them, so every output matches
    dvc.lock and `dvc status` names only the stages that must run again.

    Args:
        lock_before: dvc.lock as it was before `dvc repro`.
        stopped_at: The stage that failed or was interrupted ("" if none started).

    Returns:
        One sentence: which stages dvc.lock records from this run and which from
        before, what was restored, and what `dvc status` now lists.
    """
    lock_after = read_lock()
    before, after = lock_before.get("stages", {}), lock_after.get("stages", {})
    stages = list(pipeline_stages())
    recorded = [stage for stage in stages if stage in after and after[stage] != before.get(stage)]
    kept = [stage for stage in stages if stage in after and stage not in recorded]
    words = [
        f"dvc.lock records {', '.join(recorded)} from this run" if recorded else "dvc.lock is as it was before this run"
    ]
    if recorded and kept:
        words.append(f"and {', '.join(kept)} from before")
    if stopped_at:
        if stopped_at not in after:
            words.append(f"; {stopped_at} has no earlier outputs to restore")
        elif dvc("checkout", "--quiet", stopped_at, quiet=True).returncode == 0:
            words.append(f"; {stopped_at}'s outputs are restored from the DVC cache to match it")
        else:
            words.append(f"; {stopped_at}'s earlier outputs are not in the DVC cache (run `make pull`)")
    try:
        changed = pipeline_changes()
    except VersionError:
        changed = []
    words.append(f"; `dvc status` lists {', '.join(changed)} to run again" if changed else "; `dvc status` is clean")
    return " ".join(words).replace(" ;", ";")


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


def cached_output(md5: str, path: str | Path) -> Path:
    """The cache file of an output with this hash.

    Raises:
        VersionError: If the cache does not hold it, saying how to get it.
    """
    stored = cache_file(cache_dir(), md5) if md5 else None
    if stored is None or not stored.is_file():
        raise VersionError(f"{path} (md5 {md5 or 'unknown'}) is not in the DVC cache; run `make pull` to fetch it")
    return stored


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
    cache = cache_dir()
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


def cache_objects(cache: Path) -> tuple[int, int]:
    """Return how many objects the DVC cache `cache` holds and their bytes (the run cache left out)."""
    count = size = 0
    for path in cache.rglob("*"):
        if path.is_file() and path.relative_to(cache).parts[0] != "runs":
            count += 1
            size += path.stat().st_size
    return count, size


def human_bytes(size: int) -> str:
    """Return a byte count for a person: `812 B`, `14.2 KB`, `3.1 MB`, `2.0 GB`."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


@dataclass(frozen=True)
class CacheCollected:
    """What `collect_garbage` did to the DVC cache at `cache`: objects removed and kept, and their bytes."""

    cache: Path
    removed: int
    removed_bytes: int
    kept: int
    kept_bytes: int

    def describe(self) -> str:
        """One line for a person: what was removed, and what kept."""
        removed, kept = human_bytes(self.removed_bytes), human_bytes(self.kept_bytes)
        return (
            f"removed {self.removed} objects ({removed}) from the DVC cache {self.cache} that no tag, branch, "
            f"commit, experiment or the workspace uses; kept {self.kept} ({kept})"
        )


def collect_garbage(shared_cache_ok: bool = False) -> CacheCollected:
    """Remove from the local DVC cache every object that nothing in this repository uses.

    Keeps what the workspace and every branch, tag, commit and DVC experiment
    reference (`dvc gc` with `--workspace --all-branches --all-tags --all-commits
    --all-experiments --force`), and never touches a DVC remote: other clones may
    push to the same one, and `dvc gc --cloud` would delete their data. Refuses a
    cache that is not this clone's own `.dvc/cache` (DVC_CACHE_DIR shares one
    between clones), whose objects other clones' workspaces may need.

    Args:
        shared_cache_ok: Collect in a cache outside `.dvc/cache` all the same.

    Returns:
        What was removed and what kept.

    Raises:
        VersionError: If the cache is shared, or dvc gc fails.
    """
    cache = cache_dir()
    own = PROJECT_ROOT / ".dvc" / "cache"
    if not shared_cache_ok and cache.resolve() != own.resolve():
        raise VersionError(
            f"the DVC cache {cache} is not this clone's own (.dvc/cache): other clones that share it may need "
            "objects this one does not, and gc would delete them; run `make gc FORCE=1` if no other clone uses it"
        )
    before_count, before_size = cache_objects(cache)
    try:
        collected = dvc("gc", *GC_SCOPE, "--force", quiet=True)
    except Interrupted as interrupt:
        raise VersionError(
            "make gc interrupted: the DVC cache still holds everything in use (gc removes only unused objects); "
            "run make gc again to finish",
            interrupt.exit_code,
        ) from None
    if collected.returncode != 0:
        raise VersionError(f"dvc gc failed: {dvc_error(collected)}")
    after_count, after_size = cache_objects(cache)
    return CacheCollected(cache, before_count - after_count, before_size - after_size, after_count, after_size)


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
    collecting = commands.add_parser("gc", help="remove what nothing uses from the local DVC cache, never the remote")
    collecting.add_argument("--force", action="store_true", help="also in a cache outside .dvc/cache")
    arguments = parser.parse_args(argv)
    setup_logging()
    stop_on_signals()
    try:
        if arguments.command == "tag":
            tag(arguments.name, arguments.message, arguments.push)
        elif arguments.command == "checkout":
            checkout(arguments.run_id)
        elif arguments.command == "verify":
            verify(arguments.rev)
        elif arguments.command == "gc":
            logger.info("%s", collect_garbage(arguments.force).describe())
            logger.info("the DVC remote %s is left as it is: make gc never cleans a remote", default_remote() or "")
        else:
            table = history()
            sys.stdout.write(table)
            if arguments.output:
                from src.utils.io import atomic_path

                with atomic_path(arguments.output) as temporary:
                    temporary.write_text(table, encoding="utf-8")
    except VersionError as error:
        fail(str(error), error.exit_code)
    except GitError as error:
        fail(str(error))
    except Interrupted as interrupt:
        fail(f"make {arguments.command} interrupted", interrupt.exit_code)


if __name__ == "__main__":
    main()
