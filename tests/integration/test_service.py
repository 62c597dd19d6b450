"""After training, with real MLflow: promote, serve, predict, drift and retrain in one copy, in file order.

The copy has two pipeline runs: a weak model (train.C=0.02) and a strong one (C=1).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest

from tests.integration.conftest import Project, error_lines, new_project

pytestmark = pytest.mark.slow

MODEL = "iris-classifier"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    base = tmp_path_factory.mktemp("service")
    project = new_project(base / "repo", base / "remote")
    project.set_param("train", "C", 0.02)
    assert project.make("pipeline", RUN_NAME="weak").returncode == 0
    project.set_param("train", "C", 1.0)
    project.run("git", "commit", "-qam", "C=1", check=True)
    result = project.make("pipeline", RUN_NAME="strong")
    assert result.returncode == 0, result.stderr
    return project


def run_named(project: Project, name: str):
    [run] = [run for run in project.parents() if run.info.run_name == name]
    return run


def champion(project: Project):
    return project.client().get_model_version_by_alias(MODEL, "champion")


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
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
        f"moved champion of {MODEL} to version 1 (run {strong.info.run_id}, accuracy "
        f"{strong.data.metrics['accuracy']:.4f}): there was no champion"
    )
    version = champion(project)
    assert str(version.version) == "1"
    assert version.tags["pipeline.run_id"] == strong.info.run_id
    assert version.tags["git.commit"] == strong.data.tags["git.commit"]
    assert version.tags["data.md5"] == strong.data.tags["data.md5"]


def test_promote_keeps_the_champion_unless_the_candidate_is_better_or_forced(project):
    weak = run_named(project, "weak")
    kept = project.make("promote", RUN_ID=weak.info.run_id)
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.startswith(f"kept version 1 of {MODEL} as champion (accuracy ")
    assert "FORCE=1 moves the alias anyway" in kept.stdout
    assert str(champion(project).version) == "1"
    forced = project.make("promote", RUN_ID=weak.info.run_id, FORCE="1")
    assert forced.stdout.startswith(f"moved champion of {MODEL} to version 2 ")
    assert str(champion(project).version) == "2"
    back = project.make("promote")
    assert "it beats version 2" in back.stdout
    assert str(champion(project).version) == "1"


def test_serve_answers_predictions_and_a_short_4xx_for_bad_requests(project):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = project.spawn("serve", f"PORT={port}", stderr=subprocess.DEVNULL)
    try:
        banner = server.stdout.readline()
        assert banner.startswith(f"Serving models:/{MODEL}/1 on http://127.0.0.1:{port}/invocations")
        example = server.stdout.readline().split("-d '", 1)[1].rstrip("'\n")
        url = f"http://127.0.0.1:{port}/invocations"
        deadline = time.monotonic() + 120
        while True:
            try:
                status, answer = post(url, example.encode())
                break
            except (ConnectionError, urllib.error.URLError):
                assert time.monotonic() < deadline, "the server did not answer"
                time.sleep(0.5)
        assert status == 200
        assert answer["predictions"] in (["setosa"], ["versicolor"], ["virginica"])
        payload = json.loads(example)
        payload["dataframe_split"]["columns"] = payload["dataframe_split"]["columns"][1:]
        payload["dataframe_split"]["data"] = [row[1:] for row in payload["dataframe_split"]["data"]]
        for body in (json.dumps(payload).encode(), b"not json"):
            status, answer = post(url, body)
            assert 400 <= status < 500
            assert set(answer) == {"error_code", "message"}
            assert "Traceback" not in answer["message"] and len(answer["message"]) <= 300
        assert "missing inputs" in post(url, json.dumps(payload).encode())[1]["message"]
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=30)
    with pytest.raises(urllib.error.URLError):
        post(url, example.encode())


def test_predict_writes_one_prediction_per_row_and_refuses_a_missing_column(project):
    test = pd.read_parquet(project.root / "data/processed/test.parquet").drop(columns=["target"])
    rows = test.sample(n=2500, replace=True, random_state=0).reset_index(drop=True)
    rows["sepal_length_cm"] = (rows["sepal_length_cm"] * 10).round().astype("int64")  # an integer column
    rows.to_parquet(project.root / "new.parquet", index=False)
    result = project.make("predict", INPUT="new.parquet", OUTPUT="scored.csv")
    assert result.returncode == 0, result.stderr
    scored = pd.read_csv(project.root / "scored.csv")
    assert len(scored) == 2500
    assert set(scored["prediction"]) <= {"setosa", "versicolor", "virginica"}
    assert set(scored["model"]) == {f"models:/{MODEL}/1"}

    rows.drop(columns=["petal_width_cm"]).to_csv(project.root / "missing.csv", index=False)
    refused = project.make("predict", INPUT="missing.csv", OUTPUT="refused.parquet")
    assert refused.returncode != 0
    [line] = error_lines(refused)
    assert line.startswith("error: missing.csv: column 'petal_width_cm' is missing; the model needs sepal_length_cm, ")
    assert not (project.root / "refused.parquet").exists()


def test_drift_flags_a_shifted_feature_and_nothing_from_the_same_distribution(project):
    train = pd.read_parquet(project.root / "data/processed/train.parquet").drop(columns=["target"])
    same = train.sample(n=600, replace=True, random_state=1)
    same.to_parquet(project.root / "same.parquet", index=False)
    shifted = same.assign(petal_length_cm=same["petal_length_cm"] + 1.5)
    shifted.to_csv(project.root / "shifted.csv", index=False)

    calm = project.make("drift", NEW="same.parquet")
    assert calm.returncode == 0, calm.stderr
    assert calm.stdout.startswith("no feature drifted (10 features; reports/drift.html, MLflow run ")
    report = json.loads((project.root / "reports/drift.json").read_text())
    assert report["drifted"] == []

    moved = project.make("drift", NEW="shifted.csv")
    assert moved.stdout.startswith("drifted: petal_length_cm (10 features")
    report = json.loads((project.root / "reports/drift.json").read_text())
    [feature] = [item for item in report["features"] if item["feature"] == "petal_length_cm"]
    assert feature["test"] == "ks" and feature["distance"] is None  # the 120 training rows: a test decides
    assert feature["p_value"] < feature["threshold"] == pytest.approx(0.05 / 10)
    assert "Kolmogorov-Smirnov p=" in feature["reason"] and "(0.05 / 10 features, Bonferroni)" in feature["reason"]
    page = (project.root / "reports/drift.html").read_text()
    assert "src=" not in page and "href=" not in page  # self-contained: nothing to fetch
    runs = project.runs("tags.`pipeline.role` = 'drift'")
    assert len(runs) == 2 and runs[0].data.metrics["drifted_features"] == 1


def test_a_batch_with_an_unknown_label_is_refused_and_nothing_is_written(project):
    features = pd.read_parquet(project.root / "data/processed/features.parquet")
    bad = features.sample(n=20, random_state=3).assign(target="daisy")
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
    features = pd.read_parquet(project.root / "data/processed/features.parquet")
    features.sample(n=60, random_state=7).to_csv(project.root / "batch-1.csv", index=False)

    result = project.make("retrain", BATCH="batch-1.csv")
    assert result.returncode == 0, result.stderr
    assert "it beats version" in result.stdout and "held-out set with the batch" in result.stdout
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
    features.sample(n=60, random_state=8).to_csv(project.root / "batch-2.csv", index=False)
    second = project.make("retrain", BATCH="batch-2.csv")
    assert second.returncode == 0, second.stderr
    verdict = second.stdout.splitlines()[-1]
    assert verdict.startswith(f"kept version {new_champion.version} of {MODEL} as champion"), verdict
    assert "does not beat it by more than 0.5" in verdict
    assert champion(project).version == new_champion.version
    assert project.parents()[0].data.tags["retrain.champion"] == f"models:/{MODEL}/{new_champion.version}"
