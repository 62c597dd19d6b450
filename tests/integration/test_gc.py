"""`make gc`: the local DVC cache loses what nothing uses, keeps what any tag, branch, commit or the workspace
uses, and the DVC remote, which other clones may share, is never touched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import Project, error_lines, new_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    base = tmp_path_factory.mktemp("gc")
    return new_project(base / "repo", base / "remote")


def cache(project: Project) -> Path:
    return project.root / ".dvc" / "cache" / "files" / "md5"


def cached(project: Project) -> set[str]:
    """The hashes of every object in the copy's DVC cache."""
    return {f"{path.parent.name}{path.name}" for path in cache(project).glob("*/*")}


def referenced(project: Project, lock_text: str) -> set[str]:
    """The hashes a dvc.lock references: each output, and each file of an output folder."""
    hashes = set()
    for stage in yaml.safe_load(lock_text)["stages"].values():
        for output in stage.get("outs", []):
            hashes.add(output["md5"])
            manifest = cache(project) / output["md5"][:2] / output["md5"][2:]
            if output["md5"].endswith(".dir") and manifest.exists():
                hashes.update(entry["md5"] for entry in json.loads(manifest.read_text()))
    return hashes


def listing(folder: Path) -> list[tuple[str, int, int]]:
    """Every file under `folder` with its size and modification time, to compare before and after."""
    return sorted(
        (str(path.relative_to(folder)), path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file()
    )


def test_gc_keeps_what_tags_and_the_workspace_use_removes_the_rest_and_never_touches_the_remote(project):
    assert project.make("pipeline").returncode == 0
    result = project.make("tag", TAG="v1", MSG="first data")
    assert result.returncode == 0, result.stderr
    # A run whose outputs nobody commits: after the next run, nothing references them.
    untagged = project.pipeline_with("train", "linear.C", 0.5)
    assert untagged.returncode == 0, untagged.stderr
    untagged_lock = (project.root / "dvc.lock").read_text()
    project.set_param("train", "linear.C", 2.0)
    assert project.make("pipeline").returncode == 0
    workspace_lock = (project.root / "dvc.lock").read_text()

    keep = referenced(project, workspace_lock)
    for commit in project.git("rev-list", "--all").split():
        keep |= referenced(project, project.git("show", f"{commit}:dvc.lock"))
    before = cached(project)
    untagged_only = (referenced(project, untagged_lock) - keep) & before
    assert untagged_only, "the untagged run left no object of its own"
    assert referenced(project, project.git("show", "v1:dvc.lock")) <= before
    remote_before = listing(project.remote)
    assert remote_before

    result = project.make("gc")
    assert result.returncode == 0, result.stderr
    after = cached(project)
    assert after == before & keep
    assert not untagged_only & after
    assert referenced(project, project.git("show", "v1:dvc.lock")) <= after
    assert referenced(project, workspace_lock) <= after
    assert listing(project.remote) == remote_before
    removed, kept, own_cache = len(before - after), len(after), project.root / ".dvc" / "cache"
    messages = [line.split(": ", 1)[1] for line in result.stderr.splitlines() if "INFO" in line]
    assert messages[0].startswith(f"removed {removed} objects (")
    assert f"from the DVC cache {own_cache} that no tag, branch, commit, experiment " in messages[0]
    assert f"or the workspace uses; kept {kept} (" in messages[0]
    assert messages[1] == f"the DVC remote {project.remote} is left as it is: make gc never cleans a remote"

    # Nothing left to remove; and the untagged params run again, rebuilding what gc removed.
    again = project.make("gc")
    assert again.returncode == 0, again.stderr
    assert f"removed 0 objects (0 B) from the DVC cache {own_cache}" in again.stderr
    result = project.pipeline_with("train", "linear.C", 0.5)
    assert result.returncode == 0, result.stderr


def test_gc_refuses_a_cache_shared_with_other_clones(project, tmp_path):
    shared = tmp_path / "shared-cache"
    dvc = project.env()["VENV"] + "/bin/dvc"
    project.run(dvc, "cache", "dir", "--local", str(shared), check=True)
    try:
        result = project.make("gc")
    finally:
        project.run(dvc, "config", "--local", "--unset", "cache.dir", check=True)
    assert error_lines(result) == [
        f"error: the DVC cache {shared} is not this clone's own (.dvc/cache): other clones that share it may need "
        "objects this one does not, and gc would delete them; run `make gc FORCE=1` if no other clone uses it"
    ]
    assert not shared.exists()
