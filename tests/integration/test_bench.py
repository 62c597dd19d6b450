"""`make bench` in its quick mode runs and writes well-formed output (its numbers are not asserted).

The tables and params of `--scale` are checked here too, small and in-process: a
full-size run takes too long for the suite.
"""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from src.bench import large_case, merged, mixed_case, mixed_table
from src.config import validate
from src.ml.catalog import CLASSIFICATION, REGRESSION
from src.ml.tables import prepare_table
from src.paths import PROJECT_ROOT, pipeline_stages
from tests.integration.conftest import new_project


@pytest.mark.slow
def test_quick_bench_writes_a_table_and_json(tmp_path):
    project = new_project(tmp_path / "repo", tmp_path / "remote", store=False)
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
    assert "bare script" not in table  # only the mixed tables of --scale are measured against it
    assert not (project.root / "mlflow.db").exists()  # measured in a scratch copy, not the user's store


@pytest.mark.parametrize("task", [CLASSIFICATION, REGRESSION])
def test_the_mixed_table_holds_the_promised_columns(task):
    rows = 5_000
    table = mixed_table(rows, task)

    numbers = [name for name in table.columns if pd.api.types.is_float_dtype(table[name]) and name != "label"]
    assert len(numbers) == 8
    assert all(table[name].isna().mean() == pytest.approx(0.1, abs=0.01) for name in numbers)
    texts = {"segment": 5, "region": 50, "product": 300, "store": 1000}
    for name, most in texts.items():
        assert pd.api.types.is_string_dtype(table[name]) and table[name].notna().all()
        assert 1 < table[name].nunique() <= most
    assert table["store"].nunique() > 300  # many values, not a few
    assert table["order_date"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    assert pd.api.types.is_integer_dtype(table["order_id"]) and table["order_id"].is_unique
    assert list(table.columns)[-1] == "label" and len(table.columns) == 8 + 4 + 3
    if task == CLASSIFICATION:
        assert set(table["label"]) == {"yes", "no"}
    else:
        assert not np.array_equal(table["label"], table["label"].round())

    # As data_load reads it: the task from the label, each column's kind, nothing left out.
    _, schema = prepare_table(table, "label", ["order_id"], "auto", "mixed.csv")
    assert schema.task == task
    kinds = list(schema.columns.values())
    assert (kinds.count("number"), kinds.count("text"), kinds.count("date"), kinds.count("id")) == (8, 4, 1, 1)
    assert not schema.dropped and not schema.notes

    # Deterministic, and the same features for both tasks: only the label differs.
    other = REGRESSION if task == CLASSIFICATION else CLASSIFICATION
    pd.testing.assert_frame_equal(mixed_table(rows, task), table)
    pd.testing.assert_frame_equal(mixed_table(rows, other).drop(columns="label"), table.drop(columns="label"))


def test_the_scale_cases_params_merge_into_the_template_and_validate():
    template = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    for case in (large_case(), mixed_case(CLASSIFICATION), mixed_case(REGRESSION)):
        validate(merged(template, case.params), case.name)
    large = merged(template, large_case().params)
    assert large["train"]["hist_gradient_boosting"] == {**template["train"]["hist_gradient_boosting"], "max_iter": 10}
    assert large["train"]["linear"] == template["train"]["linear"] and large["train"]["cv_folds"] == 2
    assert template["train"]["hist_gradient_boosting"]["max_iter"] != 10  # the template itself is left as it was
    mixed = merged(template, mixed_case(REGRESSION).params)
    assert mixed["data_load"]["id_columns"] == ["order_id"] and mixed["train"]["cv_folds"] == 5
    assert mixed["train"]["estimator"] == template["train"]["estimator"]  # the default estimator
