"""Digits, a network trained in epochs, and continuing from an earlier model (`train.init_from`).

One copy, in file order: an iris run first (a model with other classes), then digits with an mlp.
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import urljoin

import numpy as np
import pytest
from PIL import Image

from tests.integration.conftest import Project, error_lines, new_project, open_page, serve

pytestmark = pytest.mark.slow

EPOCHS = 6


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    base = tmp_path_factory.mktemp("epochs")
    project = new_project(base / "repo", base / "remote")
    assert project.make("pipeline", RUN_NAME="iris").returncode == 0
    project.set_param("data_load", "source", "digits")
    project.set_param("featurize", "pairwise_products", False)
    project.set_param("train", "estimator", "mlp")
    project.set_param("train", "mlp.epochs", EPOCHS)
    result = project.make("pipeline", RUN_NAME="digits")
    assert result.returncode == 0, result.stderr
    return project


def train_run(project: Project, parent_name: str):
    [parent] = [run for run in project.parents() if run.info.run_name == parent_name]
    [train] = [run for run in project.children(parent.info.run_id) if run.info.run_name == "train"]
    return parent, train


def test_digits_with_an_mlp_logs_loss_and_validation_score_per_epoch(project):
    parent, train = train_run(project, "digits")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["accuracy"] > 0.5
    client = project.client()
    for metric in ("loss", "val_score"):
        history = client.get_metric_history(train.info.run_id, metric)
        assert [point.step for point in history] == list(range(1, EPOCHS + 1)), metric
    losses = [point.value for point in client.get_metric_history(train.info.run_id, "loss")]
    assert losses[-1] < losses[0]
    curve = (project.root / "reports/learning_curve.csv").read_text().splitlines()
    assert curve[0] == "epoch,loss,val_score" and len(curve) == EPOCHS + 1
    shown = project.run(project.env()["VENV"] + "/bin/dvc", "plots", "show", "--json")
    assert "reports/learning_curve.csv" in json.loads(shown.stdout)["data"]


def test_results_page_shows_sample_images_with_the_misclassified_ones_in_red(project, browser):
    result = project.make("docs")
    assert result.returncode == 0, result.stderr
    with serve(project.root / "site") as base:
        page, problems = open_page(browser, urljoin(base, "results.html"))
        width = page.eval_on_selector("img[alt^='Test images']", "image => image.naturalWidth")
        page.close()
    assert width > 500 and problems == []
    accuracy = json.loads((project.root / "reports/metrics.json").read_text())["accuracy"]
    pixels = np.asarray(Image.open(project.root / "reports/plots/samples.png").convert("RGB")).reshape(-1, 3)
    red_frames = int((pixels == (214, 39, 40)).all(axis=1).sum())  # matplotlib's tab:red
    assert accuracy < 1 and red_frames > 100


def test_wide_tabular_data_with_pairwise_products_stops_with_one_line(project):
    """Images get no products (digits runs on the defaults); a wide table of the user's stops at featurize."""
    import numpy as np
    import pandas as pd

    generator = np.random.default_rng(0)
    wide = pd.DataFrame(generator.normal(size=(60, 40)), columns=[f"x{index}" for index in range(40)])
    (project.root / "data/external").mkdir(exist_ok=True)
    wide.assign(target=["a", "b"] * 30).to_csv(project.root / "data/external/wide.csv", index=False)
    project.set_param("data_load", "source", "data/external/wide.csv")
    try:
        result = project.pipeline_with("featurize", "pairwise_products", True)
    finally:
        project.set_param("data_load", "source", "digits")
    assert result.returncode != 0
    assert error_lines(result) == [
        "error: stage featurize failed: ValueError: featurize.pairwise_products would add 780 columns for "
        "40 features (at most 500); set it to false for wide data"
    ]


def test_init_from_a_run_starts_from_its_weights_and_records_the_source(project):
    first, first_train = train_run(project, "digits")
    project.set_param("train", "init_from", first.info.run_id)
    result = project.make("pipeline", RUN_NAME="continued")
    assert result.returncode == 0, result.stderr
    _, train = train_run(project, "continued")
    assert train.data.tags["init_from"] == first.info.run_id
    assert train.data.tags["init_from.model_uri"].startswith("models:/m-")
    client = project.client()
    fresh = client.get_metric_history(first_train.info.run_id, "loss")
    continued = client.get_metric_history(train.info.run_id, "loss")
    assert continued[0].value < fresh[0].value


def test_init_from_a_model_with_other_classes_is_refused_with_one_line(project):
    iris, _ = train_run(project, "iris")
    result = project.pipeline_with("train", "init_from", iris.info.run_id)
    assert result.returncode != 0
    [line] = error_lines(result)
    assert line.startswith("error: stage train failed: ValueError: train.init_from's model knows classes ['setosa', ")
    assert project.runs("attributes.status = 'RUNNING'") == []


LIVE_EPOCHS = 30


def test_a_network_in_training_shows_in_the_store_while_the_pipeline_runs(project):
    """Watched as `mlflow ui` shows it: the train run is RUNNING and its loss history grows before the pipeline ends."""
    project.set_param("data_load", "source", "synthetic")
    project.set_param("data_load", "synthetic_rows", 25_000)
    project.set_param("train", "init_from", "")
    project.set_param("train", "cv_folds", 2)
    project.set_param("train", "mlp.epochs", LIVE_EPOCHS)
    client = project.client()
    process = project.spawn("pipeline", RUN_NAME="live")
    seen: list[int] = []  # the length of the train run's loss history at each look while it was RUNNING
    while process.poll() is None:
        for run in project.runs("attributes.run_name = 'train' and attributes.status = 'RUNNING'"):
            seen.append(len(client.get_metric_history(run.info.run_id, "loss")))
        time.sleep(0.2)
    _, stderr = process.communicate()
    assert process.returncode == 0, stderr
    _, train = train_run(project, "live")
    assert train.info.status == "FINISHED"
    assert len(client.get_metric_history(train.info.run_id, "loss")) == LIVE_EPOCHS
    partial = sorted({length for length in seen if 0 < length < LIVE_EPOCHS})
    assert len(partial) >= 2, seen  # seen at least twice with some epochs logged and more to come
    assert "train: running" in stderr.splitlines()
    assert re.search(rf"^  train: \d+/{LIVE_EPOCHS} epochs \(loss [\d.]+, val_score [\d.]+\)$", stderr, re.M)
