"""After training, with real MLflow: promote, serve, predict, drift and retrain in one copy, in file order.

The copy has two pipeline runs of a logistic regression: a weak model (train.linear.C=0.02) and a strong
one (C=1). The same commands on a table of text, dates, gaps and ids: test_user_tables.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from tests.integration.conftest import Project, error_lines, new_project

pytestmark = pytest.mark.slow

MODEL = "iris-classifier"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    base = tmp_path_factory.mktemp("service")
    project = new_project(base / "repo", base / "remote")
    project.set_param("train", "linear.C", 0.02)
    assert project.make("pipeline", RUN_NAME="weak").returncode == 0
    project.set_param("train", "linear.C", 1.0)
    project.run("git", "commit", "-qam", "C=1", check=True)
    result = project.make("pipeline", RUN_NAME="strong")
    assert result.returncode == 0, result.stderr
    return project


def run_named(project: Project, name: str):
    [run] = [run for run in project.parents() if run.info.run_name == name]
    return run


def champion(project: Project):
    return project.client().get_model_version_by_alias(MODEL, "champion")


def post(url: str, body: bytes, token: str = "") -> tuple[int, dict]:
    """POST JSON, with the key when `token` is given; the status and the answer."""
    key = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **key})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_promote_picks_the_best_run_and_the_version_leads_back_to_it(project):
    strong = run_named(project, "strong")
    result = project.make("promote")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"moved champion of {MODEL} to version 1 (run {strong.info.run_id}): there was no champion"
    )
    version = champion(project)
    assert str(version.version) == "1"
    assert version.tags["pipeline.run_id"] == strong.info.run_id
    assert version.tags["git.commit"] == strong.data.tags["git.commit"]
    assert version.tags["data.md5"] == strong.data.tags["data.md5"]


def test_promote_scores_both_models_on_the_same_held_out_rows(project):
    weak, strong = run_named(project, "weak"), run_named(project, "strong")
    kept = project.make("promote", RUN_ID=weak.info.run_id)
    assert kept.returncode == 0, kept.stderr
    # Both on the weak run's 30 test rows: the strong model's score there is its run's own (the same split).
    assert kept.stdout.strip() == (
        f"kept version 1 of {MODEL} as champion: version 2 (run {weak.info.run_id}) does not beat it by more "
        f"than 0.0 (accuracy {weak.data.metrics['accuracy']:.4f} against {strong.data.metrics['accuracy']:.4f} "
        f"(higher is better) on run {weak.info.run_id}'s 30 held-out rows; FORCE=1 moves the alias anyway)"
    )
    assert str(champion(project).version) == "1"
    forced = project.make("promote", RUN_ID=weak.info.run_id, FORCE="1")
    assert forced.stdout.startswith(f"moved champion of {MODEL} to version 2 (run {weak.info.run_id}): forced; ")
    assert str(champion(project).version) == "2"
    back = project.make("promote")
    assert "it beats version 2 (accuracy " in back.stdout
    assert str(champion(project).version) == "1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_answer(url: str, body: bytes, seconds: float = 120, token: str = "") -> tuple[int, dict]:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return post(url, body, token)
        except (ConnectionError, urllib.error.URLError):
            assert time.monotonic() < deadline, "the server did not answer"
            time.sleep(0.5)


def test_serve_takes_raw_rows_and_answers_a_bad_row_with_a_short_4xx_naming_the_column(project, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:  # no SERVE_TOKEN: make serve makes a key
        server = project.spawn("serve", f"PORT={port}", stderr=stderr.fileno(), SERVE_TOKEN="")
    try:
        banner = server.stdout.readline()
        assert banner.startswith(f"Serving models:/{MODEL}/1 on http://127.0.0.1:{port}/invocations")
        assert f"every request but /ping and /health needs the key in .serve/token-{port} (this account's alone)" in (
            banner
        )
        try_line = server.stdout.readline()
        assert f'-H @<(echo "Authorization: Bearer $(cat .serve/token-{port})")' in try_line
        example = try_line.split("-d '", 1)[1].rstrip("'\n")
        key_file = project.root / ".serve" / f"token-{port}"
        token = key_file.read_text().strip()
        assert (stat.S_IMODE(key_file.stat().st_mode), stat.S_IMODE(key_file.parent.stat().st_mode)) == (0o600, 0o700)
        assert ".serve" not in project.git("status", "--porcelain", "--untracked-files=all")
        raw_columns = list(pd.read_parquet(project.root / "data/raw/dataset.parquet").columns.drop("target"))
        assert json.loads(example)["dataframe_split"]["columns"] == raw_columns  # featurize runs inside the model
        url = f"http://127.0.0.1:{port}/invocations"
        status, answer = wait_for_answer(url, example.encode(), token=token)
        assert status == 200
        assert answer["predictions"] in (["setosa"], ["versicolor"], ["virginica"])
        tried = subprocess.run(["bash", "-c", try_line], cwd=project.root, capture_output=True, text=True, timeout=30)
        assert json.loads(tried.stdout) == answer  # the line to try works as it is printed
        for stranger in ("", "not-the-key-0123456789abcdefghijklmnop"):
            status, answer = post(url, example.encode(), stranger)
            assert (status, answer["error_code"]) == (401, "UNAUTHENTICATED")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=30) as alive:
            assert (alive.status, alive.read()) == (200, b"\n")  # the liveness check needs no key
        rows = {
            "dataframe_records": [
                dict.fromkeys(raw_columns, 5.0),
                {**dict.fromkeys(raw_columns, 5.0), "petal_width_cm": None},  # an empty value is scored
            ]
        }
        status, answer = post(url, json.dumps(rows).encode(), token)
        assert status == 200 and len(answer["predictions"]) == 2
        rows["dataframe_records"][1]["petal_width_cm"] = "wide"
        status, answer = post(url, json.dumps(rows).encode(), token)
        assert (status, answer["message"]) == (
            400,
            "column 'petal_width_cm': could not convert string to float: 'wide'",
        )
        payload = json.loads(example)
        payload["dataframe_split"]["columns"] = payload["dataframe_split"]["columns"][1:]
        payload["dataframe_split"]["data"] = [row[1:] for row in payload["dataframe_split"]["data"]]
        for body in (json.dumps(payload).encode(), b"not json"):
            status, answer = post(url, body, token)
            assert 400 <= status < 500
            assert set(answer) == {"error_code", "message"}
            assert "Traceback" not in answer["message"] and len(answer["message"]) <= 300
        assert "missing inputs" in post(url, json.dumps(payload).encode(), token)[1]["message"]
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=30)
    with pytest.raises(urllib.error.URLError):
        post(url, example.encode(), token)
    assert token not in banner + try_line + server.stdout.read() + log.read_text()


def test_serve_refuses_a_key_on_makes_command_line_where_ps_shows_it(project):
    refused = project.make("serve", "SERVE_TOKEN=a-key-everyone-sees-0123456789")
    assert refused.returncode == 2
    assert error_lines(refused) == [
        "error: SERVE_TOKEN on make's command line shows to every account (ps); choose a new one and export it "
        "instead: export SERVE_TOKEN=..."
    ]


def test_predict_keeps_the_rows_identity_and_never_overwrites_its_input(project):
    test = pd.read_parquet(project.root / "data/processed/test.parquet").drop(columns=["target"])
    rows = test.sample(n=2500, replace=True, random_state=0).reset_index(drop=True)
    rows["sepal_length_cm"] = (rows["sepal_length_cm"] * 10).round().astype("int64")  # an integer column
    rows.insert(0, "id", [f"row-{number:05d}" for number in range(len(rows))])
    rows.to_parquet(project.root / "new.parquet", index=False)
    result = project.make("predict", INPUT="new.parquet", OUTPUT="scored.csv")
    assert result.returncode == 0, result.stderr
    scored = pd.read_csv(project.root / "scored.csv")
    assert list(scored.columns) == [
        *rows.columns, "prediction", "probability_setosa", "probability_versicolor", "probability_virginica", "model",
    ]  # fmt: skip
    assert scored["id"].tolist() == rows["id"].tolist()
    assert set(scored["prediction"]) <= {"setosa", "versicolor", "virginica"}
    assert set(scored["model"]) == {f"models:/{MODEL}/1"}
    kept = project.make("predict", INPUT="new.parquet", OUTPUT="ids.parquet", KEEP="id")
    assert kept.returncode == 0, kept.stderr
    assert list(pd.read_parquet(project.root / "ids.parquet").columns)[:2] == ["id", "prediction"]

    before = (project.root / "new.parquet").read_bytes()
    for output in ("new.parquet", "./new.parquet", str(project.root / "new.parquet")):
        same = project.make("predict", INPUT="new.parquet", OUTPUT=output)
        assert same.returncode != 0
        assert error_lines(same) == [
            f"error: OUTPUT {Path(output)} is the INPUT file new.parquet; write to another file"
        ]
    assert (project.root / "new.parquet").read_bytes() == before
    tracked = project.make("predict", INPUT="new.parquet", OUTPUT="data/raw/dataset.parquet")
    assert error_lines(tracked) == [
        "error: OUTPUT data/raw/dataset.parquet is data DVC tracks for the pipeline; write to another file"
    ]

    rows.drop(columns=["petal_width_cm"]).to_csv(project.root / "missing.csv", index=False)
    refused = project.make("predict", INPUT="missing.csv", OUTPUT="refused.parquet")
    assert refused.returncode != 0
    [line] = error_lines(refused)
    assert line.startswith("error: missing.csv: column 'petal_width_cm' is missing; the model needs sepal_length_cm, ")
    assert not (project.root / "refused.parquet").exists()


def test_drift_flags_a_shifted_feature_and_nothing_from_the_same_distribution(project):
    raw = pd.read_parquet(project.root / "data/raw/dataset.parquet").drop(columns=["target"])
    same = raw.sample(n=600, replace=True, random_state=1)
    same.to_parquet(project.root / "same.parquet", index=False)
    shifted = same.assign(petal_length_cm=same["petal_length_cm"] + 1.5)
    shifted.to_csv(project.root / "shifted.csv", index=False)

    calm = project.make("drift", NEW="same.parquet")
    assert calm.returncode == 0, calm.stderr
    assert calm.stdout.startswith("no feature drifted (4 features; reports/drift.html, MLflow run ")
    report = json.loads((project.root / "reports/drift.json").read_text())
    assert report["drifted"] == []

    moved = project.make("drift", NEW="shifted.csv")
    assert moved.stdout.startswith("drifted: petal_length_cm (4 features")
    report = json.loads((project.root / "reports/drift.json").read_text())
    [feature] = [item for item in report["features"] if item["feature"] == "petal_length_cm"]
    # The champion's raw table (150 rows) against 600: a test decides; the raw columns are what the model takes.
    assert feature["test"] == "ks" and feature["distance"] is None
    assert feature["p_value"] < feature["threshold"] == pytest.approx(0.05 / 4)
    assert "Kolmogorov-Smirnov p=" in feature["reason"] and "(0.05 / 4 tests, Bonferroni)" in feature["reason"]
    page = (project.root / "reports/drift.html").read_text()
    assert "src=" not in page and "href=" not in page  # self-contained: nothing to fetch
    runs = project.runs("tags.`pipeline.role` = 'drift'")
    assert len(runs) == 2 and runs[0].data.metrics["drifted_features"] == 1


def test_a_batch_with_an_unknown_label_is_refused_and_nothing_is_written(project):
    raw = pd.read_parquet(project.root / "data/raw/dataset.parquet")
    bad = raw.sample(n=20, random_state=3).assign(target="daisy")
    bad.to_csv(project.root / "bad-batch.csv", index=False)
    params_before = (project.root / "params.yaml").read_text()
    result = project.make("retrain", BATCH="bad-batch.csv")
    assert result.returncode != 0
    [line] = error_lines(result)
    assert line == (
        "error: bad-batch.csv: labels ['daisy'] are unknown to the model, "
        "which knows ['setosa', 'versicolor', 'virginica']"
    )
    assert list((project.root / "data/batches").glob("*.parquet*")) == []
    assert (project.root / "params.yaml").read_text() == params_before


def test_retrain_learns_from_the_batch_and_moves_the_alias_only_on_improvement(project):
    weak = run_named(project, "weak")
    assert project.make("promote", RUN_ID=weak.info.run_id, FORCE="1").returncode == 0
    weak_version = champion(project).version
    raw = pd.read_parquet(project.root / "data/raw/dataset.parquet")  # labelled rows, as a user has them
    raw.sample(n=60, random_state=7).to_csv(project.root / "batch-1.csv", index=False)

    result = project.make("retrain", BATCH="batch-1.csv")
    assert result.returncode == 0, result.stderr
    assert "it beats version" in result.stdout and "the held-out rows include part of the batch" in result.stdout
    new_champion = champion(project)
    assert new_champion.version != weak_version
    retrained = project.parents()[0]
    assert retrained.info.run_name == "retrain-batch-1"
    assert retrained.data.tags["retrain.champion"] == f"models:/{MODEL}/{weak_version}"
    assert new_champion.tags["pipeline.run_id"] == retrained.info.run_id
    [train] = [run for run in project.children(retrained.info.run_id) if run.info.run_name == "train"]
    assert train.data.tags["init_from"] == f"models:/{MODEL}/{weak_version}"
    assert retrained.data.metrics["accuracy"] > retrained.data.metrics["champion.accuracy"]
    [check] = project.runs("tags.`pipeline.role` = 'production_check'")
    assert "batch.accuracy" in check.data.metrics
    assert (project.root / "data/batches/batch-1.parquet.dvc").exists()
    assert "data/batches/batch-1.parquet.dvc" in project.git("diff", "--cached", "--name-only")

    # A new model that does not beat the champion by registry.min_improvement leaves the alias where it is.
    project.set_param("registry", "min_improvement", 0.5)
    raw.sample(n=60, random_state=8).to_csv(project.root / "batch-2.csv", index=False)
    second = project.make("retrain", BATCH="batch-2.csv")
    assert second.returncode == 0, second.stderr
    verdict = second.stdout.splitlines()[-1]
    assert verdict.startswith(f"kept version {new_champion.version} of {MODEL} as champion"), verdict
    assert "does not beat it by more than 0.5" in verdict
    assert champion(project).version == new_champion.version
    assert project.parents()[0].data.tags["retrain.champion"] == f"models:/{MODEL}/{new_champion.version}"


def test_promote_refuses_a_model_that_takes_other_columns_or_classes_unless_forced(project):
    """After a pipeline on another CSV, the champion's callers would break: refused, or FORCE=1 says what changes."""
    rows = pd.DataFrame({"width": [1.0, 2.0, 3.0, 4.0] * 10, "height": [4.0, 3.0, 2.0, 1.0] * 10})
    rows["target"] = ["tall", "tall", "flat", "flat"] * 10
    (project.root / "data/external").mkdir(exist_ok=True)
    rows.to_csv(project.root / "data/external/boxes.csv", index=False)
    project.set_param("data_load", "source", "data/external/boxes.csv")
    project.set_param("train", "init_from", "")  # a new project on other data: no iris model, no iris batches
    for batch in (project.root / "data/batches").glob("*.parquet*"):
        batch.unlink()
    assert project.make("pipeline", RUN_NAME="boxes").returncode == 0
    boxes = run_named(project, "boxes")
    assert boxes.data.metrics["accuracy"] == 1.0  # better than the champion on its own test set
    current = champion(project).version
    refused = project.make("promote")  # the best run on accuracy is the boxes run
    assert refused.returncode != 0
    assert error_lines(refused) == [
        f"error: run {boxes.info.run_id}'s model does not take what {MODEL} version {current} (champion) takes "
        "(input columns: adds width, height; lacks sepal_length_cm, sepal_width_cm, petal_length_cm, petal_width_cm; "
        "classes: adds flat, tall; lacks setosa, versicolor, virginica), so callers of the champion would break; "
        "FORCE=1 replaces it anyway"
    ]
    assert champion(project).version == current
    forced = project.make("promote", FORCE="1")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.startswith(f"moved champion of {MODEL} to version ")
    assert (
        f"forced; what callers send and get changes from version {current}: input columns: adds width" in forced.stdout
    )
