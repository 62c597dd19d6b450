"""Data versions and lineage: `make tag`, `data_load.rev`, a second clone, `make checkout`, `make history`.

The tests share one copy and run in file order, each building on the state the
previous one left (a tag, a run on that tag, a changed param).
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.integration.conftest import Project, assert_outputs_match_lock, error_lines, new_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    base = tmp_path_factory.mktemp("versions")
    project = new_project(base / "repo", base / "remote")
    return project


def dvc(project: Project, *arguments: str) -> subprocess.CompletedProcess:
    return project.run(project.env()["VENV"] + "/bin/dvc", *arguments)


def test_tag_needs_a_name_and_a_message(project):
    assert error_lines(project.make("tag")) == ['error: name the data version: make tag TAG=v1 MSG="what this data is"']
    assert error_lines(project.make("tag", TAG="v1")) == [
        'error: say what this data version is: make tag TAG=v1 MSG="..."'
    ]
    assert project.git("tag") == ""


def test_tag_refuses_a_pipeline_that_is_not_up_to_date(project):
    result = project.make("tag", TAG="v1", MSG="first data")
    assert result.returncode != 0
    [line] = error_lines(result)
    assert line.startswith("error: the pipeline is not up to date (dvc status: ")
    assert line.endswith("; run `make pipeline` first")
    assert project.git("tag") == ""


def test_tag_commits_the_records_tags_and_pushes_the_data(project):
    project.set_param("evaluate", "normalize_confusion_matrix", True)
    assert project.make("pipeline", RUN_NAME="first").returncode == 0
    (project.root / "notes.txt").write_text("my unrelated work\n")
    readme = project.root / "README.md"
    readme.write_text(readme.read_text() + "\nunrelated edit\n")
    result = project.make("tag", TAG="v1", MSG="first data")
    assert result.returncode == 0, result.stderr
    assert project.git("cat-file", "-t", "v1").strip() == "tag"
    assert project.git("tag", "-n1", "v1").split() == ["v1", "first", "data"]
    assert project.git("show", "v1:dvc.lock") == (project.root / "dvc.lock").read_text()
    assert project.git("diff", "--name-only", "v1~1", "v1").split() == ["dvc.lock", "params.yaml"]
    assert project.git("log", "-1", "--format=%B", "v1").strip().splitlines() == ["first data", "", "Data-version: v1"]
    assert project.git("ls-tree", "--name-only", "v1", "data/raw/.gitignore").strip() == "data/raw/.gitignore"
    assert project.git("status", "--porcelain").splitlines() == [" M README.md", "?? notes.txt"]
    remote_status = dvc(project, "status", "--cloud", "--json")
    assert json.loads(remote_status.stdout) == {}


def test_tag_refuses_an_existing_tag(project):
    result = project.make("tag", TAG="v1", MSG="again")
    assert error_lines(result) == ["error: tag v1 already exists (see `git show v1`); choose another TAG"]


def test_a_remote_that_is_down_leaves_no_commit_and_no_tag(project):
    project.set_param("data_split", "test_size", 0.25)
    assert project.make("pipeline").returncode == 0
    head = project.git("rev-parse", "HEAD")
    remote = "http://127.0.0.1:9/remote"
    result = project.make("tag", TAG="v2", MSG="unreachable remote", DVC_REMOTE_URL=remote)
    assert result.returncode != 0
    [line] = error_lines(result)
    assert line.startswith(f"error: dvc push to the DVC remote {remote} failed: failed to transfer ")
    assert "Cannot connect to host 127.0.0.1:9" in line
    assert line.endswith(
        "; nothing was committed or tagged: fix the remote (DVC_REMOTE_URL, or team.env) "
        "and run the same make tag again"
    )
    assert "Traceback" not in result.stderr
    assert project.git("rev-parse", "HEAD") == head
    assert "v2" not in project.git("tag").split()
    assert sorted(project.git("status", "--porcelain", "--", "params.yaml", "dvc.lock").split()) == [
        "M",
        "M",
        "dvc.lock",
        "params.yaml",
    ]
    project.run("git", "checkout", "HEAD", "--", "params.yaml", "dvc.lock", check=True)  # back to the v1 params
    project.make("dvc-setup")  # back to the local remote


def test_parent_run_records_code_and_data(project):
    [parent] = [run for run in project.parents() if run.info.run_name == "first"]
    tags = parent.data.tags
    lock = yaml.safe_load(project.git("show", "v1:dvc.lock"))
    raw_hash = lock["stages"]["data_load"]["outs"][0]["md5"]
    assert tags["data.md5"] == raw_hash
    assert tags["dvc.out.models/model.joblib"] == lock["stages"]["train"]["outs"][0]["md5"]
    assert tags["git.commit"] == project.git("rev-parse", "v1~1").strip()
    client = project.client()
    assert {item.path for item in client.list_artifacts(parent.info.run_id)} >= {"params.yaml", "dvc.lock"}


def test_a_run_on_a_tagged_version_records_the_rev(project):
    project.set_param("data_load", "rev", "v1")
    result = project.make("pipeline", RUN_NAME="on-v1")
    assert result.returncode == 0, result.stderr
    parent = project.parents()[0]
    [data_load] = [run for run in project.children(parent.info.run_id) if run.info.run_name == "data_load"]
    lock = yaml.safe_load(project.git("show", "v1:dvc.lock"))
    raw_hash = lock["stages"]["data_load"]["outs"][0]["md5"]
    assert data_load.data.tags["data.rev"] == "v1"
    assert data_load.data.tags["data.path"] == "data/raw/dataset.parquet"
    assert data_load.data.tags["data.md5"] == raw_hash
    assert data_load.data.params["data_load.rev"] == "v1"
    assert parent.data.tags["data.md5"] == raw_hash


def test_a_missing_rev_gives_one_line(project):
    project.set_param("data_load", "rev", "v1")
    result = project.pipeline_with("data_load", "rev", "v9")
    assert result.returncode != 0
    [line] = error_lines(result)
    assert line.startswith("error: stage data_load failed: FileNotFoundError: cannot read data/raw/dataset.parquet at")
    assert project.runs("attributes.status = 'RUNNING'") == []


def test_a_second_clone_gets_the_tagged_data_back_byte_for_byte(project, tmp_path):
    clone = Project(tmp_path / "clone", project.remote)
    project.run("git", "clone", "-q", str(project.root), str(clone.root), check=True)
    clone.run("git", "checkout", "-q", "v1", check=True)
    result = clone.make("pull")
    assert result.returncode == 0, result.stderr
    assert_outputs_match_lock(clone, "v1")
    assert (clone.root / "reports/metrics.json").read_bytes() == (project.root / "reports/metrics.json").read_bytes()


def test_history_lists_each_tag_with_its_data_hash_and_runs(project):
    result = project.make("history")
    assert result.returncode == 0, result.stderr
    [row] = [line for line in result.stdout.splitlines() if line.startswith("| v1 |")]
    lock = yaml.safe_load(project.git("show", "v1:dvc.lock"))
    assert lock["stages"]["data_load"]["outs"][0]["md5"][:12] in row
    assert " first (" in row
    assert " on-v1 (" in row


def test_checkout_refuses_uncommitted_changes(project):
    [first] = [run for run in project.parents() if run.info.run_name == "first"]
    result = project.make("checkout", RUN_ID=first.info.run_id)
    assert error_lines(result) == [
        "error: uncommitted changes in README.md, dvc.lock, params.yaml; commit or stash them before `make checkout`"
    ]


def test_checkout_of_a_run_then_pipeline_reproduces_its_metrics(project):
    [first] = [run for run in project.parents() if run.info.run_name == "first"]
    project.set_param("data_load", "rev", "")
    project.set_param("train", "linear.C", 0.02)
    assert project.make("pipeline", RUN_NAME="weak").returncode == 0
    weak = project.parents()[0]
    assert weak.data.metrics["accuracy"] != first.data.metrics["accuracy"]
    project.run("git", "commit", "-qam", "try a small C", check=True)

    result = project.make("checkout", RUN_ID=first.info.run_id)
    assert result.returncode == 0, result.stderr
    assert project.git("branch", "--show-current").strip() == f"run-{first.info.run_id[:8]}"
    assert project.param("train", "linear.C") == 1.0

    result = project.make("pipeline", RUN_NAME="reproduced", FORCE="1")
    assert result.returncode == 0, result.stderr
    reproduced = project.parents()[0]
    assert reproduced.info.run_name == "reproduced"
    for key in ("accuracy", "f1_macro", "cv_accuracy_mean"):
        assert reproduced.data.metrics[key] == first.data.metrics[key], key
    assert reproduced.data.tags["data.md5"] == first.data.tags["data.md5"]
