"""The tracking core in-process, on a store of its own: stage records, parents closed, orphans, late closes."""

from __future__ import annotations

import json
import os
import socket

import pytest
import yaml

from src.ml.tables import TableSchema
from src.paths import PATHS, PROJECT_ROOT, pipeline_stages
from src.pipeline.run import end_orphans
from src.tracking.client import experiment_id_for
from src.tracking.parent import OUTCOME_FILE, close_late, close_parent, pending_outcomes
from src.tracking.stage_runs import StageRecord, now_ms, records_folder
from src.tracking.tags import (
    DIRECTION_TAG,
    HOST_TAG,
    MAIN_METRIC_TAG,
    NOTE_TAG,
    PID_TAG,
    ROLE_TAG,
    ROOT_TAG,
    STAGE_TAG,
    TASK_TAG,
)
from tests.conftest import seed_store

STAGES = tuple(pipeline_stages())
GONE_PID = 2**22 + 7  # above Linux's largest process id: a process that is surely gone


@pytest.fixture
def client(tmp_path, monkeypatch):
    """An MlflowClient on a store of its own, with the stage records in a folder of their own.

    The working directory is tmp_path too: an experiment's artifacts go to ./mlruns, as in a project.
    """
    monkeypatch.chdir(tmp_path)
    seed_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("PIPELINE_RECORDS_DIR", str(tmp_path / "records"))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def open_parent(client, **tags: str) -> str:
    experiment_id = experiment_id_for(client, "core")
    return client.create_run(experiment_id, run_name="parent", tags={ROLE_TAG: "parent", **tags}).info.run_id


def snapshot(folder, ran: dict[str, dict[str, float]]) -> None:
    """dvc.lock, the table's schema and each stage's metrics file, as a pipeline leaves them."""
    lock = {
        "stages": {
            stage: {
                "outs": [{"path": f"out/{stage}", "md5": f"{index:032x}"}],
                "params": {"params.yaml": {f"{stage}.knob": index}},
            }
            for index, stage in enumerate(STAGES, start=1)
        }
    }
    (folder / "dvc.lock").parent.mkdir(parents=True, exist_ok=True)
    (folder / "dvc.lock").write_text(yaml.safe_dump(lock))
    (folder / PATHS.schema).parent.mkdir(parents=True, exist_ok=True)
    TableSchema("target", "classification", "target 'target': text", {"a": "number"}).save(folder / PATHS.schema)
    for stage in STAGES:
        path = folder / PATHS.stage_metrics(stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(ran.get(stage, {"cached_metric": 1.0})))


def record(parent_run_id: str, stage: str, status: str, start_ms: int, **fields) -> None:
    StageRecord(stage=stage, start_ms=start_ms, end_ms=start_ms + 1000, status=status, **fields).save(
        records_folder(parent_run_id)
    )


def children(client, parent_run_id: str) -> dict[str, object]:
    runs = client.search_runs(
        [client.get_run(parent_run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )
    return {run.data.tags[STAGE_TAG]: run for run in runs}


def test_stage_records_become_nested_runs_with_their_own_times_and_skipped_stages_cached_runs(client, tmp_path):
    parent = open_parent(client)
    start = now_ms() - 60_000
    record(parent, "train", "FINISHED", start, metrics={"cv_accuracy_mean": 0.9}, history={"loss": [0.9, 0.5, 0.2]})
    record(parent, "evaluate", "FINISHED", start + 2000, metrics={"accuracy": 0.93})
    snapshot(tmp_path / "kept", {"train": {"cv_accuracy_mean": 0.9}, "evaluate": {"accuracy": 0.93}})
    assert close_parent(client, parent, 0, snapshot=tmp_path / "kept") == "FINISHED"
    runs = children(client, parent)
    assert set(runs) == set(STAGES)
    assert {stage: runs[stage].info.status for stage in STAGES} == dict.fromkeys(STAGES, "FINISHED")
    train = runs["train"]
    assert (train.info.start_time, train.info.end_time) == (start, start + 1000)  # the stage's, not the close's
    assert [metric.value for metric in client.get_metric_history(train.info.run_id, "loss")] == [0.9, 0.5, 0.2]
    assert train.data.tags["dvc.out.out/train"] == f"{4:032x}"
    assert runs["data_load"].data.tags["pipeline.cached"] == "true"
    assert runs["data_load"].data.params == {"data_load.knob": "1"}
    closed = client.get_run(parent)
    assert closed.info.status == "FINISHED"
    assert closed.data.metrics == {"cached_metric": 1.0, "cv_accuracy_mean": 0.9, "accuracy": 0.93}
    assert (closed.data.tags[TASK_TAG], closed.data.tags[MAIN_METRIC_TAG]) == ("classification", "accuracy")
    assert closed.data.tags[DIRECTION_TAG] == "higher"
    assert closed.data.tags["pipeline.stages_ran"] == "train,evaluate"
    assert not records_folder(parent).exists()


@pytest.mark.parametrize(
    ("exit_code", "stopped", "parent_status", "stage_status"),
    [(1, "FAILED", "FAILED", "FAILED"), (130, "KILLED", "KILLED", "KILLED"), (143, "RUNNING", "KILLED", "KILLED")],
)
def test_a_parent_ends_with_the_pipelines_outcome_and_its_stopped_stage(
    client, exit_code, stopped, parent_status, stage_status
):
    parent = open_parent(client)
    start = now_ms()
    record(parent, "data_load", "FINISHED", start)
    # A killed stage process leaves its record RUNNING, with no error of its own.
    record(parent, "featurize", stopped, start + 1000, error="" if stopped == "RUNNING" else "ValueError: bad")
    assert close_parent(client, parent, exit_code) == parent_status
    runs = children(client, parent)
    assert set(runs) == {"data_load", "featurize"}  # no cached runs for a pipeline that did not finish
    assert runs["featurize"].info.status == stage_status
    expected_error = (
        "the stage process ended without closing its run (killed)" if stopped == "RUNNING" else "ValueError: bad"
    )
    assert runs["featurize"].data.tags["error"] == expected_error
    closed = client.get_run(parent)
    assert closed.info.status == parent_status and closed.data.tags["pipeline.exit_code"] == str(exit_code)


def test_a_close_cut_short_is_finished_later_without_logging_a_stage_twice(client, tmp_path):
    parent = open_parent(client)
    record(parent, "train", "FINISHED", now_ms(), metrics={"cv_accuracy_mean": 0.8})
    snapshot(tmp_path / "kept", {"train": {"cv_accuracy_mean": 0.8}, "evaluate": {"accuracy": 0.9}})
    folder = records_folder(parent)
    (folder / "snapshot").mkdir(parents=True)
    for path in (tmp_path / "kept").rglob("*"):
        if path.is_file():
            target = folder / "snapshot" / path.relative_to(tmp_path / "kept")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    ended_ms = now_ms() - 5000
    (folder / OUTCOME_FILE).write_text(json.dumps({"exit_code": 0, "end_ms": ended_ms, "pid": GONE_PID}))
    assert list(pending_outcomes()) == [parent]
    assert close_late(client, parent, pending_outcomes()[parent], "make history") == "FINISHED"
    closed = client.get_run(parent)
    assert closed.info.status == "FINISHED" and closed.info.end_time == ended_ms
    assert closed.data.tags[NOTE_TAG].startswith("closed late by make history: the pipeline ended at ")
    assert sorted(children(client, parent)) == sorted(STAGES)
    assert pending_outcomes() == {}


def test_the_next_pipeline_ends_a_parent_whose_process_is_gone(client):
    experiment_id = experiment_id_for(client, "core")
    tags = {PID_TAG: str(GONE_PID), HOST_TAG: socket.gethostname(), ROOT_TAG: str(PROJECT_ROOT)}
    orphan = open_parent(client, **tags)
    alive = open_parent(client, **(tags | {PID_TAG: str(os.getpid())}))
    elsewhere = open_parent(client, **(tags | {ROOT_TAG: "/another/checkout"}))
    record(orphan, "train", "RUNNING", now_ms())
    assert end_orphans(client, experiment_id) == [orphan]
    ended = client.get_run(orphan)
    assert ended.info.status == "KILLED"
    assert ended.data.tags[NOTE_TAG] == f"ended by a later make pipeline: process {GONE_PID} was gone"
    assert children(client, orphan)["train"].info.status == "KILLED"
    assert {client.get_run(run).info.status for run in (alive, elsewhere)} == {"RUNNING"}
