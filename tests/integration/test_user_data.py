"""A user's own data under data/external/, tracked with DVC, as the pipeline's source: a CSV file, a folder of PNGs."""

from __future__ import annotations

import hashlib

import pytest
import yaml

from tests.integration.conftest import error_lines

pytestmark = pytest.mark.slow


def use_source(project, source: str, target: str) -> None:
    path = project.root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["data_load"].update(source=source, target=target)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_a_users_csv_is_checked_and_trained_on(project):
    from sklearn.datasets import load_iris

    flowers = load_iris(as_frame=True).frame.rename(columns={"target": "species"})
    csv = project.root / "data/external/flowers.csv"
    flowers.to_csv(csv, index=False)
    dvc = project.env()["VENV"] + "/bin/dvc"
    assert project.run(dvc, "add", "data/external/flowers.csv").returncode == 0
    use_source(project, "data/external/flowers.csv", "species")

    result = project.make("pipeline")
    assert result.returncode == 0, result.stderr
    parent = project.parents()[0]
    [data_load] = [run for run in project.children(parent.info.run_id) if run.info.run_name == "data_load"]
    assert data_load.data.tags["data.path"] == "data/external/flowers.csv"
    assert data_load.data.tags["data.md5"] == hashlib.md5(csv.read_bytes()).hexdigest()
    assert data_load.data.metrics["n_rows"] == 150

    lock_before = (project.root / "dvc.lock").read_bytes()
    flowers.loc[3, "species"] = None
    flowers.to_csv(csv, index=False)
    result = project.make("pipeline")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: stage data_load failed: DataSchemaError: data/external/flowers.csv: "
        "column 'species' has 1 empty labels; label every row"
    ]
    assert (project.root / "dvc.lock").read_bytes() == lock_before
    assert project.runs("attributes.status = 'RUNNING'") == []

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
        "from the DVC cache to match it; `dvc status` lists data_split, train to run again"
    )
    lock = yaml.safe_load((project.root / "dvc.lock").read_text())
    assert lock["stages"]["data_load"] != yaml.safe_load(lock_before)["stages"]["data_load"]  # recorded at once
    for stage in lock["stages"].values():  # the workspace matches dvc.lock, output by output
        for output in stage["outs"]:
            assert hashlib.md5((project.root / output["path"]).read_bytes()).hexdigest() == output["md5"]
    status = project.run(dvc, "status", "--json")
    assert list(yaml.safe_load(status.stdout)) == ["data_split", "train"]  # as the summary says
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
    assert "samples.png" in artifacts

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
