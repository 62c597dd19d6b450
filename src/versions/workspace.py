"""What DVC tracks in this checkout: the cache, the default remote, the outputs, and what a failed run left."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from src.cli import EXIT_FAILED
from src.lockfile import LOCK_FILE, output_hashes, read_lock
from src.paths import PROJECT_ROOT, pipeline_stages, stage_outputs
from src.versions.runner import GitError, dvc, git


class VersionError(RuntimeError):
    """A data-version command cannot go on; the message says why and what to do.

    Args:
        message: One line: what went wrong, what state is left and what to do.
        exit_code: The process's exit code (130 or 143 when it was interrupted).
    """

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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


class OverwriteError(ValueError):
    """An output path would overwrite a file the user gave as input, or one the project tracks."""


def check_output_path(
    output: Path, inputs: dict[str, Path], name: str = "OUTPUT", advice: str = "write to another file"
) -> None:
    """Refuse an output that would destroy something: an input of the same command or a tracked file.

    Args:
        output: The file the command is about to write.
        inputs: The command's input files by the name the user gave them (`INPUT`).
        name: The output's name for the user (`OUTPUT`).
        advice: What the user can do instead, ending the message.

    Raises:
        OverwriteError: One line: the output is an input (the same path, a symlink or a hard
            link to it), a file the pipeline writes (dvc.yaml's outputs), a file tracked with
            `dvc add`, or a file tracked by git.
    """
    for input_name, source in inputs.items():
        same = output.resolve() == source.resolve() or (
            output.exists() and source.exists() and os.path.samefile(output, source)
        )
        if same:
            raise OverwriteError(f"{name} {output} is the {input_name} file {source}; {advice}")
    resolved = output.resolve()
    if PROJECT_ROOT not in resolved.parents:
        return
    relative = resolved.relative_to(PROJECT_ROOT)
    pipeline_outputs = {Path(path) for stage in pipeline_stages().values() for path in stage_outputs(stage)}
    tracked_folders = [path.with_suffix("") for path in PROJECT_ROOT.glob("data/**/*.dvc")]
    if relative in pipeline_outputs or any(folder in (resolved, *resolved.parents) for folder in tracked_folders):
        raise OverwriteError(f"{name} {output} is data DVC tracks for the pipeline; write to another file")

    try:
        git("ls-files", "--error-unmatch", str(relative))
    except GitError:  # not a file git tracks
        return
    raise OverwriteError(f"{name} {output} is a file git tracks in this project; write to another file")
