"""`make pipeline` end to end: real make, git, DVC and MLflow in a copy of the repo.

The tests share one copy and run in file order: the last ones change it (bad
params, a crashing stage) and restore what they changed.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from src.config import flatten
from src.ml.catalog import CLASSIFICATION, METRICS
from src.paths import pipeline_stages
from tests.integration.conftest import VENV

pytestmark = pytest.mark.slow

STAGES = list(pipeline_stages())
CLASSIFICATION_METRICS = {name for name, metric in METRICS.items() if metric.task == CLASSIFICATION}


def test_full_run_gives_one_finished_parent_with_five_finished_stage_runs(piped):
    project, result = piped
    assert result.returncode == 0, result.stderr
    [parent] = project.parents()
    assert parent.info.status == "FINISHED"
    children = project.children(parent.info.run_id)
    assert sorted(child.info.run_name for child in children) == sorted(STAGES)
    assert {child.info.status for child in children} == {"FINISHED"}
    by_stage = {child.info.run_name: child for child in children}
    assert by_stage["data_split"].data.params["data_split.test_size"] == "0.2"
    assert by_stage["data_load"].data.metrics["n_rows"] == 150
    assert by_stage["train"].data.metrics["cv_accuracy_mean"] > 0.8
    assert set(by_stage["evaluate"].data.metrics) >= CLASSIFICATION_METRICS
    assert all("stage_seconds" in child.data.metrics for child in children)


def test_the_terminal_shows_each_stage_as_it_runs_then_a_table_and_where_to_look(piped):
    project, result = piped
    lines = result.stderr.splitlines()
    for stage in STAGES:
        started = lines.index(f"{stage}: running")
        [ended] = [index for index, line in enumerate(lines) if re.fullmatch(rf"{stage}: FINISHED in [\d.]+ s", line)]
        assert started < ended
    header = lines.index("stage        status     seconds  how")
    table = lines[header + 1 : header + 1 + len(STAGES)]
    assert [row.split()[:2] + row.split()[3:] for row in table] == [[stage, "FINISHED", "ran"] for stage in STAGES]
    accuracy = project.parents()[-1].data.metrics["accuracy"]
    assert lines[header + 1 + len(STAGES)] == (
        "task: classification (target 'target': text, 3 distinct values); set base.task to override"
    )
    assert lines[header + 2 + len(STAGES)].startswith(f"results: accuracy {accuracy:.4f}, f1_macro ")
    assert re.search(r"MLflow parent run \w+ FINISHED; .*#/experiments/\d+/runs/\w+", result.stderr)
    assert "Running stage" not in result.stderr  # DVC's own lines stay quiet


def test_parent_carries_all_params_final_metrics_and_git_state(piped):
    project, _ = piped
    [parent] = project.parents()
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    assert parent.data.params["train.estimator"] == params["train"]["estimator"]
    assert parent.data.params["base.random_state"] == str(params["base"]["random_state"])
    assert len(parent.data.params) == len(flatten(params))
    metrics = json.loads((project.root / "reports/metrics.json").read_text())
    assert set(metrics) == CLASSIFICATION_METRICS
    assert parent.data.tags["task"] == "classification"
    assert (parent.data.tags["main_metric"], parent.data.tags["main_metric.direction"]) == ("accuracy", "higher")
    assert parent.data.metrics["accuracy"] == pytest.approx(metrics["accuracy"])
    assert "cv_accuracy_mean" in parent.data.metrics
    assert parent.data.tags["git.commit"] == project.git("rev-parse", "HEAD").strip()
    assert parent.data.tags["git.dirty"] in ("true", "false")
    assert parent.data.tags["pipeline.exit_code"] == "0"


def test_outputs_are_written_and_tracked_by_dvc(piped):
    project, _ = piped
    for path in [
        "data/raw/dataset.parquet",
        "data/raw/schema.json",
        "data/processed/features.parquet",
        "data/processed/train.parquet",
        "data/processed/test.parquet",
        "models/model.joblib",
        "reports/metrics.json",
        "reports/stages/train.json",
    ]:
        assert (project.root / path).stat().st_size > 0, path
    assert [path.name for path in (project.root / "reports/plots").iterdir()] == ["confusion_matrix.png"]
    assert (project.root / "reports/plots/confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    status = project.run(str(project.env()["VENV"]) + "/bin/dvc", "status", "--quiet")
    assert status.returncode == 0, status.stdout
    lock = yaml.safe_load((project.root / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == sorted(STAGES)


def test_model_is_logged_with_signature_and_loads_back(piped):
    project, _ = piped
    import pandas as pd

    [parent] = project.parents()
    [train] = [child for child in project.children(parent.info.run_id) if child.info.run_name == "train"]
    loaded = project.logged_model(train)
    assert loaded.metadata.signature is not None
    test = pd.read_parquet(project.root / "data/processed/test.parquet")
    predictions = loaded.predict(test.drop(columns=["target"]).head(3))
    assert set(predictions) <= {"setosa", "versicolor", "virginica"}


def test_mlflow_store_is_ignored_by_git_and_dvc(piped):
    project, _ = piped
    assert (project.root / "mlflow.db").exists()
    assert (project.root / "mlruns").is_dir()
    ignored = project.run("git", "check-ignore", "mlflow.db", "mlruns").stdout.split()
    assert ignored == ["mlflow.db", "mlruns"]


def test_second_run_with_nothing_changed_reruns_no_stage(piped):
    project, _ = piped
    lock_before = (project.root / "dvc.lock").read_bytes()
    model_before = (project.root / "models/model.joblib").stat().st_mtime_ns
    result = project.make("pipeline", RUN_NAME="again")
    assert result.returncode == 0, result.stderr
    first, parent = project.parents()[1], project.parents()[0]
    assert parent.info.run_name == "again"
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["pipeline.stages_ran"] == ""
    assert parent.data.tags["pipeline.stages_cached"] == ",".join(STAGES)
    assert set(parent.data.metrics) == set(first.data.metrics)
    assert (project.root / "dvc.lock").read_bytes() == lock_before
    assert (project.root / "models/model.joblib").stat().st_mtime_ns == model_before
    assert ": running" not in result.stderr  # no stage started


def test_editing_code_a_stage_runs_makes_dvc_see_that_stage_changed(piped):
    """dvc.yaml lists every module each stage imports: edit one and DVC re-runs exactly the stages running it."""
    project, _ = piped
    dvc = str(VENV / "bin" / "dvc")
    assert json.loads(project.run(dvc, "status", "--json").stdout or "{}") == {}
    for module, stages in (("src/ml/split.py", {"data_split"}), ("src/ml/images.py", set(STAGES))):
        path = project.root / module
        before = path.read_text()
        try:
            path.write_text(before + "\n# an edit: a comment is one too\n")
            changed = json.loads(project.run(dvc, "status", "--json").stdout)
        finally:
            path.write_text(before)
        assert set(changed) == stages, module


def test_a_stage_run_on_its_own_logs_a_run_and_says_where(piped):
    project, _ = piped
    python = project.env()["VENV"] + "/bin/python"
    result = project.run(python, "-m", "src.stages.evaluate", "--config", "params.yaml")
    assert result.returncode == 0, result.stderr
    assert "stage evaluate logged to MLflow run" in result.stderr
    assert "as a run of its own" in result.stderr
    assert f"sqlite:///{project.root}/mlflow.db" in result.stderr
    [latest] = project.runs("attributes.run_name = 'evaluate'")[:1]
    assert "mlflow.parentRunId" not in latest.data.tags
    assert latest.info.status == "FINISHED"


def test_skipped_stages_are_recorded_as_cached_runs_as_complete_as_real_ones(piped):
    project, _ = piped
    first, again = project.parents()[1], project.parents()[0]
    assert again.info.run_name == "again"
    ran = {child.info.run_name: child for child in project.children(first.info.run_id)}
    cached = {child.info.run_name: child for child in project.children(again.info.run_id)}
    assert sorted(cached) == sorted(STAGES)
    lock = yaml.safe_load((project.root / "dvc.lock").read_text())
    for stage in STAGES:
        real, recorded = ran[stage], cached[stage]
        assert recorded.info.status == "FINISHED"
        assert recorded.data.tags["pipeline.cached"] == "true"
        assert "pipeline.cached" not in real.data.tags
        assert recorded.data.params == real.data.params, stage
        assert set(recorded.data.metrics) == set(real.data.metrics) - {"stage_seconds"}, stage
        for key, value in recorded.data.metrics.items():
            assert value == pytest.approx(real.data.metrics[key]), (stage, key)
        for output in lock["stages"][stage]["outs"]:
            assert recorded.data.tags[f"dvc.out.{output['path']}"] == output["md5"]
            assert real.data.tags[f"dvc.out.{output['path']}"] == output["md5"]


def test_a_random_forest_is_trained_logged_and_loads_back(piped):
    project, _ = piped
    import pandas as pd

    params_file = project.root / "params.yaml"
    good = params_file.read_text()
    try:
        project.set_param("train", "estimator", "random_forest")
        result = project.make("pipeline", RUN_NAME="forest")
    finally:
        params_file.write_text(good)
    assert result.returncode == 0, result.stderr
    parent = project.parents()[0]
    assert (parent.info.run_name, parent.info.status) == ("forest", "FINISHED")
    [train] = [child for child in project.children(parent.info.run_id) if child.info.run_name == "train"]
    test = pd.read_parquet(project.root / "data/processed/test.parquet")
    predictions = project.logged_model(train).predict(test.drop(columns=["target"]))
    assert (predictions == test["target"]).mean() > 0.8
    assert project.make("pipeline").returncode == 0  # back to the template's estimator


def test_bad_params_stop_with_one_line_and_no_run(piped):
    project, _ = piped
    params_file = project.root / "params.yaml"
    good = params_file.read_text()
    lock_before = (project.root / "dvc.lock").read_bytes()
    runs_before = len(project.runs())
    try:
        params_file.write_text(good.replace("test_size: 0.2", "test_size: 1.5"))
        result = project.make("pipeline")
    finally:
        params_file.write_text(good)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: params.yaml: data_split.test_size must be between 0 and 1 (exclusive), got 1.5"]
    assert "Traceback" not in result.stderr
    assert len(project.runs()) == runs_before
    assert (project.root / "dvc.lock").read_bytes() == lock_before


def test_crashing_stage_fails_the_command_and_the_parent(piped):
    project, _ = piped
    stage_file = project.root / "src/stages/train.py"
    good = stage_file.read_text()
    lock_before = (project.root / "dvc.lock").read_bytes()
    try:
        stage_file.write_text(good.replace("    import joblib\n", "    import joblib\n\n    1 / 0\n", 1))
        result = project.make("pipeline", RUN_NAME="crash")
    finally:
        stage_file.write_text(good)
    assert result.returncode != 0
    assert "error: stage train failed: ZeroDivisionError: division by zero" in result.stderr
    parent = project.parents()[0]
    assert parent.info.run_name == "crash"
    assert parent.info.status == "FAILED"
    [train] = project.children(parent.info.run_id)
    assert (train.info.run_name, train.info.status) == ("train", "FAILED")
    assert train.data.tags["error"] == "ZeroDivisionError: division by zero"
    assert project.runs("attributes.status = 'RUNNING'") == []
    assert (project.root / "dvc.lock").read_bytes() == lock_before


def test_a_checkout_under_a_path_with_spaces_works_end_to_end(tmp_path):
    from tests.integration.conftest import new_project

    project = new_project(tmp_path / "my projects" / "iris model", tmp_path / "dvc remote")
    result = project.make("pipeline")
    assert result.returncode == 0, result.stderr
    [parent] = project.parents()
    assert parent.info.status == "FINISHED"
    assert len(project.children(parent.info.run_id)) == len(STAGES)
    assert project.make("tag", TAG="v1", MSG="spaces").returncode == 0
    assert any(path.is_file() for path in project.remote.rglob("*"))


def test_make_clean_removes_outputs_but_keeps_the_store_and_the_cache(tmp_path):
    from tests.integration.conftest import new_project

    project = new_project(tmp_path / "repo", tmp_path / "remote")
    assert project.make("pipeline").returncode == 0
    users_file = project.root / "data/external/flowers.csv"
    users_file.write_text("a,target\n1,x\n")
    assert project.run(project.env()["VENV"] + "/bin/dvc", "add", "data/external/flowers.csv").returncode == 0
    project.run("git", "add", "-A", check=True)
    project.run("git", "commit", "-qm", "my data", check=True)
    cache_files = sorted((project.root / ".dvc/cache").rglob("*"))
    result = project.make("clean")
    assert result.returncode == 0, result.stderr
    assert not (project.root / "models/model.joblib").exists()
    assert not (project.root / "data/raw/dataset.parquet").exists()
    assert not (project.root / "reports/metrics.json").exists()
    assert users_file.read_text() == "a,target\n1,x\n"
    assert (project.root / "mlflow.db").exists() and (project.root / "mlruns").is_dir()
    assert sorted((project.root / ".dvc/cache").rglob("*")) == cache_files
    assert project.git("status", "--porcelain") == ""
    checkout = project.run(project.env()["VENV"] + "/bin/dvc", "checkout")
    assert checkout.returncode == 0
    assert (project.root / "models/model.joblib").exists()
