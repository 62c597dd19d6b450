"""Faults injected with real processes and signals: interrupts, hard kills, two pipelines, a store that is down.

The tests share one copy, which has run the pipeline once; each leaves it able
to run again (that is part of what they check).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import Project, assert_outputs_match_lock, new_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    base = tmp_path_factory.mktemp("faults")
    project = new_project(base / "repo", base / "remote")
    result = project.make("pipeline")
    assert result.returncode == 0, result.stderr
    return project


def wait_for_stage(project: Project, stage: str, timeout: float = 120) -> Path:
    """Wait until `stage` has started under a running pipeline; return its record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in (project.root / ".pipeline").glob(f"*/{stage}.json"):
            with_status = json.loads(record.read_text())
            if with_status["status"] == "RUNNING":
                return record
        time.sleep(0.1)
    raise AssertionError(f"stage {stage} did not start within {timeout} s")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    ("name", "signum", "to_group"),
    [("ctrl-c", signal.SIGINT, True), ("sigterm to make", signal.SIGTERM, False)],
)
def test_an_interrupt_during_a_stage_ends_the_runs_killed_and_keeps_dvc_lock(project, name, signum, to_group):
    lock_before = (project.root / "dvc.lock").read_bytes()
    process = project.spawn("pipeline", "FORCE=1")
    wait_for_stage(project, "train")
    sent = time.monotonic()
    if to_group:
        os.killpg(process.pid, signum)
    else:
        os.kill(process.pid, signum)
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - sent < 15
    assert process.returncode != 0
    parent = project.parents()[0]
    assert error_lines(stderr)[-1] == (
        f"error: pipeline interrupted at stage train; run {parent.info.run_id} is KILLED; dvc.lock is as it was "
        "before this run; train's outputs are restored from the DVC cache to match it; `dvc status` is clean"
    )
    assert parent.info.status == "KILLED"
    assert "error: stage train interrupted; it wrote no output" in error_lines(stderr)  # the stage's own last word
    stages = {child.info.run_name: child.info.status for child in project.children(parent.info.run_id)}
    assert stages == {"data_load": "FINISHED", "featurize": "FINISHED", "data_split": "FINISHED", "train": "KILLED"}
    assert project.runs("attributes.status = 'RUNNING'") == []
    assert (project.root / "dvc.lock").read_bytes() == lock_before
    assert_outputs_match_lock(project)  # the model DVC removed before train ran is back, as recorded
    assert [path.name for path in (project.root / "models").iterdir() if path.name.startswith(".model")] == []

    result = project.make("pipeline")
    assert result.returncode == 0, result.stderr
    assert project.parents()[0].info.status == "FINISHED"
    assert (project.root / "dvc.lock").read_bytes() == lock_before


def test_after_a_hard_kill_the_next_pipeline_ends_the_orphaned_runs_and_runs(project):
    params = (project.root / "params.yaml").read_text()
    # A forest of many trees: train lasts seconds, so the kill surely comes while it runs.
    project.set_param("train", "estimator", "random_forest")
    project.set_param("train", "random_forest.n_estimators", 1000)
    try:
        process = project.spawn("pipeline", "FORCE=1")
        wait_for_stage(project, "train")
        time.sleep(0.5)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        (project.root / "params.yaml").write_text(params)
    # The parent, and the train run if the pipeline had logged it live before the kill.
    running = project.runs("attributes.status = 'RUNNING'")
    [orphan] = [run for run in running if run.data.tags.get("pipeline.role") == "parent"]
    assert {run.info.run_name for run in running if run is not orphan} <= {"train"}

    result = project.make("pipeline")
    assert result.returncode == 0, result.stderr
    assert f"ended run {orphan.info.run_id} KILLED: the pipeline that ran it was killed" in result.stderr
    ended = project.client().get_run(orphan.info.run_id)
    assert ended.info.status == "KILLED"
    assert ended.data.tags["pipeline.note"].startswith("ended by a later make pipeline: process ")
    [train] = [child for child in project.children(orphan.info.run_id) if child.info.run_name == "train"]
    assert train.info.status == "KILLED"
    assert train.data.tags["error"] == "the stage process ended without closing its run (killed)"
    assert project.runs("attributes.status = 'RUNNING'") == []
    assert project.parents()[0].info.status == "FINISHED"


def test_two_pipelines_at_once_one_runs_the_other_refuses(project):
    lock = project.root / ".pipeline" / "lock"
    holder_before = lock.read_text()  # the fixture's pipeline, long ended
    first = project.spawn("pipeline", "FORCE=1", "RUN_NAME=first")
    deadline = time.monotonic() + 120
    while lock.read_text() in (holder_before, "") and time.monotonic() < deadline:
        time.sleep(0.05)
    # The first holds the checkout; stopped there (as by Ctrl-Z), it still runs when the second starts.
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        parents_before = len(project.parents())
        second = project.make("pipeline", RUN_NAME="second")
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert second.returncode != 0
    [line] = error_lines(second.stderr)
    assert line.startswith(
        "error: another `make pipeline` or `make sweep` is running in this checkout (make pipeline, pid "
    )
    assert line.endswith("); wait for it to end and run again")
    assert len(project.parents()) == parents_before  # the second opened no run
    first.communicate(timeout=300)
    assert first.returncode == 0
    assert [run.info.run_name for run in project.parents()[:1]] == ["first"]
    assert project.parents()[0].info.status == "FINISHED"
    assert project.runs("attributes.status = 'RUNNING'") == []


def test_a_tracking_server_that_is_down_stops_before_any_stage(project):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lock_before = (project.root / "dvc.lock").read_bytes()
    started = time.monotonic()
    result = project.make("pipeline", "FORCE=1", MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}")
    assert time.monotonic() - started < 90
    assert result.returncode != 0
    [line] = error_lines(result.stderr)
    assert line == (  # make checks the server answers before the target starts
        f"error: make pipeline: the tracking server http://127.0.0.1:{port} does not answer; "
        "start it again (`make team-up` for the trial stack)"
    )
    assert ": running" not in result.stderr  # no stage started
    assert (project.root / "dvc.lock").read_bytes() == lock_before


def test_verify_catches_a_corrupted_cache_file_and_tag_refuses_to_push_it(project):
    import yaml

    assert project.make("verify").returncode == 0
    lock = yaml.safe_load((project.root / "dvc.lock").read_text())
    md5 = lock["stages"]["train"]["outs"][0]["md5"]
    cached = project.root / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    cached.chmod(0o644)
    with cached.open("ab") as handle:
        handle.write(b"\0")  # one flipped byte's worth of damage

    result = project.make("verify")
    assert result.returncode != 0
    [line] = error_lines(result.stderr)
    assert line.startswith("error: 1 corrupted DVC cache object(s): models/model.joblib (cache file ")
    assert line.endswith("delete the cache file and run `make pull` or `make pipeline FORCE=1` to restore it")

    result = project.make("tag", TAG="v1", MSG="corrupted")
    assert result.returncode != 0
    assert error_lines(result.stderr)[0].startswith("error: 1 corrupted DVC cache object(s): models/model.joblib")
    assert project.git("tag") == ""
    assert not any(path.is_file() for path in project.remote.rglob("*"))


def test_a_store_where_nothing_can_be_written_stops_before_any_stage(project):
    # /proc takes no new files, even for root: a store that cannot be written.
    lock_before = (project.root / "dvc.lock").read_bytes()
    result = project.make("pipeline", "FORCE=1", MLFLOW_TRACKING_URI="sqlite:////proc/mlflow-store/mlflow.db")
    assert result.returncode != 0
    [line] = error_lines(result.stderr)
    assert line.startswith("error: cannot open the MLflow parent run at sqlite:////proc/mlflow-store/mlflow.db: ")
    assert ": running" not in result.stderr  # no stage started
    assert (project.root / "dvc.lock").read_bytes() == lock_before


def test_plain_dvc_repro_runs_the_stages_without_the_runner_with_the_same_outputs_and_error_line(project):
    """The stage commands `make pipeline` hands to its preloaded runner work as they are under a plain `dvc repro`."""
    dvc = project.env()["VENV"] + "/bin/dvc"
    path = f"{project.env()['VENV']}/bin:{os.environ['PATH']}"  # a shell with the venv active
    result = project.run(dvc, "repro", "--force", PATH=path)
    assert result.returncode == 0, result.stderr
    assert project.run(dvc, "status", PATH=path).stdout.strip() == "Data and pipelines are up to date."
    assert_outputs_match_lock(project)

    before = yaml.safe_load((project.root / "params.yaml").read_text())["data_split"]["test_size"]
    project.set_param("data_split", "test_size", 0.99)
    try:
        with_runner = project.make("pipeline")
        plain = project.run(dvc, "repro", PATH=path)
    finally:
        project.set_param("data_split", "test_size", before)
    assert with_runner.returncode != 0 and plain.returncode != 0
    [line] = error_lines(with_runner.stderr)
    assert line.startswith(
        "error: stage data_split failed: ValueError: cannot split 150 rows with data_split.test_size=0.99"
    )
    assert error_lines(plain.stderr) == [line]
    assert project.runs("attributes.status = 'RUNNING'") == []
