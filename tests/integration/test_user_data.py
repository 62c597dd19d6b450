"""A user's own CSV file under data/external/, tracked with DVC, as the pipeline's source."""

from __future__ import annotations

import hashlib

import pytest
import yaml

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
