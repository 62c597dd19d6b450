"""`make bench` in its quick mode runs and writes well-formed output (its numbers are not asserted)."""

import json

import pytest

from src.paths import pipeline_stages
from tests.integration.conftest import new_project

pytestmark = pytest.mark.slow


def test_quick_bench_writes_a_table_and_json(tmp_path):
    project = new_project(tmp_path / "repo", tmp_path / "remote")
    result = project.make("bench", BENCH_ARGS="--quick")
    assert result.returncode == 0, result.stderr
    [run] = json.loads((project.root / "reports/bench.json").read_text())
    assert set(run["runs"]) == {"floor", "forced", "unchanged"}
    for numbers in run["runs"].values():
        assert numbers["min"] <= numbers["median"] <= numbers["max"]
        assert numbers["peak_mb"] > 0
    assert set(run["stages"]) == set(pipeline_stages())
    assert all(stage["imports"]["median"] > 0 for stage in run["stages"].values())
    scoring = run["batch_scoring"]
    assert scoring["rows"] == 10_000 and scoring["rows_per_s"] > 0 and scoring["peak_mb"] > 0
    table = (project.root / "reports/bench.md").read_text()
    assert table == result.stdout
    assert "| forced |" in table and "| unchanged |" in table and "| train |" in table
    assert "| with start-up and model load | 10,000 |" in table
    assert not (project.root / "mlflow.db").exists()  # measured in a scratch copy, not the user's store
