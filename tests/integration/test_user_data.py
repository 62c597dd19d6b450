"""A user's own data under data/external/, tracked with DVC, as the pipeline's source: CSV files, a folder of PNGs.

The tables as users have them: the example passengers (text, booleans, a date, gaps, an id, rows without a
label) and a regression (scikit-learn's diabetes as a CSV), each added the documented way, with no edit of the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess

import pandas as pd
import pytest
import yaml

from src.ml.catalog import METRICS, REGRESSION
from src.paths import pipeline_stages
from tests.integration.conftest import VENV, Project, error_lines, new_project, output_md5
from tests.integration.test_service import free_port, post, wait_for_answer

pytestmark = pytest.mark.slow

STAGES = set(pipeline_stages())


def use_source(project, source: str, target: str, **settings) -> None:
    path = project.root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["data_load"].update(source=source, target=target, **settings)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_a_users_csv_is_checked_and_trained_on(project):
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    flowers = iris.frame.rename(columns={"target": "species"})
    flowers["species"] = iris.target_names[iris.target]
    flowers.loc[3, "species"] = None  # a row without a label is left out, and said so, never silently
    csv = project.root / "data/external/flowers.csv"
    flowers.to_csv(csv, index=False)
    dvc = project.env()["VENV"] + "/bin/dvc"
    assert project.run(dvc, "add", "data/external/flowers.csv").returncode == 0
    use_source(project, "data/external/flowers.csv", "species")

    result = project.make("pipeline")
    assert result.returncode == 0, result.stderr
    note = "data/external/flowers.csv: 1 of 150 rows have no label in 'species'; they are left out"
    assert [line.split(": ", 1)[1] for line in result.stderr.splitlines() if "WARNING" in line] == [note]
    parent = project.parents()[0]
    [data_load] = [run for run in project.children(parent.info.run_id) if run.info.run_name == "data_load"]
    assert data_load.data.tags["data.path"] == "data/external/flowers.csv"
    assert data_load.data.tags["data.md5"] == hashlib.md5(csv.read_bytes()).hexdigest()
    assert (data_load.data.metrics["n_rows"], data_load.data.metrics["n_rows_without_label"]) == (149, 1)
    assert data_load.data.tags["data.notes"] == note

    # A label column that is not there: one line, exit 2, no run, dvc.lock as it was.
    lock_before, runs_before = (project.root / "dvc.lock").read_bytes(), len(project.runs())
    use_source(project, "data/external/flowers.csv", "Species")
    result = project.make("pipeline")
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: data/external/flowers.csv: no column 'Species' (data_load.target); columns: sepal length (cm), "
        "sepal width (cm), petal length (cm), petal width (cm), species"
    ]
    assert (len(project.runs()), (project.root / "dvc.lock").read_bytes()) == (runs_before, lock_before)
    use_source(project, "data/external/flowers.csv", "species")

    # Two rows per class: data_load and featurize succeed and DVC records them; data_split fails.
    flowers.groupby("species").head(2).to_csv(csv, index=False)
    assert project.run(dvc, "add", "data/external/flowers.csv").returncode == 0
    result = project.make("pipeline")
    assert result.returncode != 0
    [error] = error_lines(result)
    assert error.startswith(
        "error: stage data_split failed: ValueError: cannot split 6 rows with data_split.test_size=0.2: "
    )
    parent = project.parents()[0]
    [summary] = [line for line in result.stderr.splitlines() if "pipeline failed at stage" in line]
    assert summary.endswith(
        f"pipeline failed at stage data_split; run {parent.info.run_id} is FAILED; dvc.lock records data_load, "
        "featurize from this run and data_split, train, evaluate from before; data_split's outputs are restored "
        # train reads the raw table too (its input example), which data_load changed
        "from the DVC cache to match it; `dvc status` lists data_split, evaluate, train to run again"
    )
    lock = yaml.safe_load((project.root / "dvc.lock").read_text())
    assert lock["stages"]["data_load"] != yaml.safe_load(lock_before)["stages"]["data_load"]  # recorded at once
    for stage in lock["stages"].values():  # the workspace matches dvc.lock, output by output
        for output in stage["outs"]:
            assert output_md5(project.root / output["path"]) == output["md5"], output["path"]
    status = project.run(dvc, "status", "--json")
    assert sorted(yaml.safe_load(status.stdout)) == ["data_split", "evaluate", "train"]  # as the summary says
    assert project.runs("attributes.status = 'RUNNING'") == []


def write_digit_pngs(folder, count: int) -> None:
    """Save the first `count` of scikit-learn's digits as 8-bit grayscale PNGs, one folder per digit."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (pixels, label) in enumerate(zip(digits.images[:count], digits.target[:count], strict=True)):
        path = folder / str(label) / f"{index:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels * 15).astype("uint8"), mode="L").save(path)


def test_a_folder_of_pngs_is_trained_on_and_a_corrupt_png_is_one_line(project):
    folder = project.root / "data/external/digits"
    write_digit_pngs(folder, 600)
    dvc = project.env()["VENV"] + "/bin/dvc"
    assert project.run(dvc, "add", "data/external/digits").returncode == 0
    use_source(project, "data/external/digits", "digit")  # the default params: products skip image pixels

    result = project.make("pipeline")
    assert result.returncode == 0, result.stderr
    parent = project.parents()[0]
    assert parent.data.metrics["accuracy"] > 0.8
    runs = {run.info.run_name: run for run in project.children(parent.info.run_id)}
    tracked = yaml.safe_load((project.root / "data/external/digits.dvc").read_text())["outs"][0]["md5"]
    assert runs["data_load"].data.tags["data.path"] == "data/external/digits"
    assert runs["data_load"].data.tags["data.md5"] == tracked
    metrics = runs["data_load"].data.metrics
    assert (metrics["n_rows"], metrics["n_features"], metrics["n_classes"]) == (600, 64, 10)
    artifacts = [entry.path for entry in project.client().list_artifacts(runs["evaluate"].info.run_id)]
    assert {"samples.png", "confusion_matrix.png"} <= set(artifacts)

    lock_before = (project.root / "dvc.lock").read_bytes()
    broken = folder / "7" / "0007.png"
    broken.write_bytes(broken.read_bytes()[:-30])
    result = project.make("pipeline")
    assert result.returncode != 0
    assert error_lines(result) == [
        "error: stage data_load failed: DataSchemaError: data/external/digits/7/0007.png: "
        "not a readable PNG image (image file is truncated)"
    ]
    assert (project.root / "dvc.lock").read_bytes() == lock_before
    assert project.runs("attributes.status = 'RUNNING'") == []


@pytest.fixture(scope="module")
def passengers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, subprocess.CompletedProcess]:
    """A copy with the example passengers added as the docs say, run once with the template's params, promoted."""
    base = tmp_path_factory.mktemp("passengers")
    project = new_project(base / "repo", base / "remote", template_estimator=True)
    shutil.copyfile(project.root / "examples/passengers.csv", project.root / "data/external/passengers.csv")
    assert project.run(project.env()["VENV"] + "/bin/dvc", "add", "data/external/passengers.csv").returncode == 0
    use_source(project, "data/external/passengers.csv", "survived", id_columns=["passenger_id"])
    result = project.make("pipeline", RUN_NAME="passengers")
    assert result.returncode == 0, result.stderr
    promoted = project.make("promote")
    assert promoted.returncode == 0, promoted.stderr
    return project, result


def raw_rows() -> pd.DataFrame:
    """Rows as a caller has them: text, gaps, a category never seen (embarked Z, sex unknown), the ids."""
    return pd.DataFrame(
        {
            "passenger_id": [9001, 9002, 9003],
            "name": ["Nobody, Mr. X", "Somebody, Mrs. Y", None],
            "sex": ["male", "female", "unknown"],
            "age": [None, 30.0, 4.0],
            "pclass": [3, 1, 2],  # whole numbers, as pandas reads them
            "fare": [7.5, 80.0, None],
            "embarked": ["Z", None, "S"],
            "alone": [True, None, False],
            "booked": ["2012-02-01", "2012-03-01", None],
            "cabin": [None, "B12", None],
        }
    )


def test_a_table_as_it_comes_trains_to_a_finished_run_with_the_task_it_holds(passengers):
    project, result = passengers
    [parent] = [run for run in project.parents() if run.info.run_name == "passengers"]
    assert parent.info.status == "FINISHED"
    children = {child.info.run_name: child for child in project.children(parent.info.run_id)}
    assert set(children) == STAGES and {child.info.status for child in children.values()} == {"FINISHED"}
    reason = "target 'survived': numbers, 2 distinct values"
    assert (parent.data.tags["task"], parent.data.tags["task.reason"]) == ("classification", reason)
    lines = result.stderr.splitlines()
    assert f"task: classification ({reason}); set base.task to override" in lines
    assert [line for line in lines if line.startswith("results: accuracy ")]
    data_load = children["data_load"]
    assert (data_load.data.metrics["n_rows"], data_load.data.metrics["n_features"]) == (596, 9)
    assert data_load.data.metrics["n_rows_without_label"] == 4
    assert "4 of 600 rows have no label in 'survived'" in data_load.data.tags["data.notes"]
    assert parent.data.params["train.estimator"] == "hist_gradient_boosting"
    signature = project.logged_model(children["train"]).metadata.get_input_schema()
    assert {column.name: column.type.name for column in signature.inputs} == {
        "name": "string", "sex": "string", "age": "double", "pclass": "long", "fare": "double",
        "embarked": "string", "alone": "double", "booked": "string", "cabin": "string",
    }  # fmt: skip
    assert all(column.required for column in signature.inputs)  # each sent, each may be empty


def test_predict_scores_raw_rows_with_gaps_and_new_categories_and_keeps_the_ids(passengers):
    project, _ = passengers
    raw_rows().to_csv(project.root / "new.csv", index=False)
    result = project.make("predict", INPUT="new.csv", OUTPUT="scored.csv", KEEP="name")
    assert result.returncode == 0, result.stderr
    scored = pd.read_csv(project.root / "scored.csv")
    assert list(scored.columns) == ["passenger_id", "name", "prediction", "probability_0", "probability_1", "model"]
    assert scored["passenger_id"].tolist() == [9001, 9002, 9003]
    assert set(scored["prediction"]) <= {0, 1}  # the classes, as the CSV reads them back
    changed = raw_rows().assign(age=["unknown", "30", "4"])  # text where the model takes numbers
    changed.to_csv(project.root / "changed.csv", index=False)
    refused = project.make("predict", INPUT="changed.csv", OUTPUT="refused.csv")
    assert error_lines(refused) == [
        "error: changed.csv: column 'age' holds text where the model takes numbers (double); was it changed? "
        "one cell that is not a number makes a whole column text"
    ]
    assert not (project.root / "refused.csv").exists()


def test_serve_takes_json_with_text_and_nulls_and_answers_with_the_ids_it_was_sent(passengers):
    project, _ = passengers
    port = free_port()
    token = "the-teams-own-key-0123456789abcdefgh"  # a team's key, from the environment
    server = project.spawn("serve", f"PORT={port}", stderr=subprocess.DEVNULL, SERVE_TOKEN=token)
    url = f"http://127.0.0.1:{port}/invocations"
    try:
        banner = server.stdout.readline()
        assert banner.startswith("Serving models:/iris-classifier/1 on ") and "the key SERVE_TOKEN holds" in banner
        records = json.loads(raw_rows().to_json(orient="records"))
        status, answer = wait_for_answer(url, json.dumps({"dataframe_records": records}).encode(), token=token)
        assert status == 200, answer
        assert [row["passenger_id"] for row in answer["predictions"]] == [9001, 9002, 9003]
        assert {row["prediction"] for row in answer["predictions"]} <= {"0", "1"}
        assert post(url, json.dumps({"dataframe_records": records}).encode())[0] == 401
        assert not (project.root / ".serve" / f"token-{port}").exists()  # the key is SERVE_TOKEN's: no file
        without_ids = [{key: value for key, value in row.items() if key != "passenger_id"} for row in records]
        without_ids[0]["pclass"] = None  # a gap in a column training held whole numbers in
        status, answer = post(url, json.dumps({"dataframe_records": without_ids}).encode(), token)
        assert status == 200 and set(answer["predictions"]) <= {"0", "1"}
        records[0]["booked"] = "next spring"
        status, answer = post(url, json.dumps({"dataframe_records": records}).encode(), token)
        assert (status, answer["message"]) == (
            400,
            "column 'booked': 'next spring' in row 1 is not a date (send ISO 8601: 2024-03-01 or 2024-03-01 14:30)",
        )
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=30)


def test_the_champion_takes_raw_rows_anywhere_with_mlflow_alone(passengers, tmp_path):
    """Outside the project, `mlflow.pyfunc.load_model` and `mlflow models serve` take text, dates and nulls."""
    project, _ = passengers
    rows = raw_rows().drop(columns=["passenger_id"])
    rows.to_json(tmp_path / "rows.json", orient="split", index=False)
    # As in a shell with the venv active: `mlflow models serve` starts uvicorn from PATH.
    env = project.env(
        MLFLOW_TRACKING_URI=project.tracking_uri,
        MLFLOW_DISABLE_TELEMETRY="true",
        PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}",
    )
    loaded = subprocess.run(
        [str(VENV / "bin" / "python"), "-c",
         "import mlflow.pyfunc, pandas as pd; "
         "model = mlflow.pyfunc.load_model('models:/iris-classifier@champion'); "
         "print(list(model.predict(pd.read_json('rows.json', orient='split'))))"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    predicted = eval(loaded.stdout.strip())
    assert len(predicted) == 3 and set(predicted) <= {"0", "1"}
    port = free_port()
    server = subprocess.Popen(
        [str(VENV / "bin" / "mlflow"), "models", "serve", "-m", "models:/iris-classifier@champion", "--env-manager",
         "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}).encode()
        status, answer = wait_for_answer(f"http://127.0.0.1:{port}/invocations", body, seconds=180)
        assert status == 200 and answer["predictions"] == predicted
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def test_drift_compares_categories_and_the_share_of_missing_values(passengers):
    project, _ = passengers
    batch = pd.read_csv(project.root / "examples/passengers.csv").drop(columns=["survived"])
    batch.assign(embarked=None).to_csv(project.root / "no-ports.csv", index=False)
    result = project.make("drift", NEW="no-ports.csv")
    assert result.returncode == 0, result.stderr
    report = json.loads((project.root / "reports/drift.json").read_text())
    assert report["drifted"] == ["embarked (missing)"]
    assert "passenger_id" not in {item["feature"] for item in report["features"]}


def test_a_regression_table_trains_with_its_metrics_and_plots(tmp_path):
    from sklearn.datasets import load_diabetes

    project = new_project(tmp_path / "repo", tmp_path / "remote", template_estimator=True)
    diabetes = load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "progression"})
    diabetes.to_csv(project.root / "data/external/diabetes.csv", index=False)
    assert project.run(project.env()["VENV"] + "/bin/dvc", "add", "data/external/diabetes.csv").returncode == 0
    use_source(project, "data/external/diabetes.csv", "progression")
    result = project.make("pipeline")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert (
        "task: regression (target 'progression': 214 distinct whole numbers in 442 rows); set base.task to override"
        in lines
    )
    [parent] = project.parents()
    regression_metrics = {name for name, metric in METRICS.items() if metric.task == REGRESSION}
    assert regression_metrics <= set(parent.data.metrics) and "accuracy" not in parent.data.metrics
    assert (parent.data.tags["main_metric"], parent.data.tags["main_metric.direction"]) == ("rmse", "lower")
    assert parent.data.metrics["r2"] > 0.2
    assert [line for line in lines if line.startswith("results: ")] == [
        "results: " + ", ".join(f"{name} {parent.data.metrics[name]:.4f}" for name in ("rmse", "mae", "r2", "mape"))
    ]
    [evaluate] = [run for run in project.children(parent.info.run_id) if run.info.run_name == "evaluate"]
    artifacts = {entry.path for entry in project.client().list_artifacts(evaluate.info.run_id)}
    assert {"predicted_vs_actual.png", "residuals.png"} <= artifacts and "confusion_matrix.png" not in artifacts
    assert sorted(path.name for path in (project.root / "reports/plots").iterdir()) == [
        "predicted_vs_actual.png",
        "residuals.png",
    ]
