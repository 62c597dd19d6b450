"""A user's table as it comes: column kinds, ids, rows without a label, constant columns, and the task."""

import numpy as np
import pandas as pd
import pytest

from src.ml.catalog import CLASSIFICATION, REGRESSION
from src.ml.sources import parse_table
from src.ml.tables import BOOLEAN, DATE, ID, NUMBER, TEXT, DataSchemaError, TableSchema, infer_task, prepare_table
from tests.conftest import PROJECT_ROOT

PASSENGERS = PROJECT_ROOT / "examples" / "passengers.csv"


def passengers() -> pd.DataFrame:
    return parse_table(PASSENGERS, "passengers.csv")


def test_the_example_passengers_are_taken_as_they_come():
    table, schema = prepare_table(passengers(), "survived", ["passenger_id"], "auto", "passengers.csv")
    assert schema.columns == {
        "passenger_id": ID,
        "name": TEXT,
        "sex": TEXT,
        "age": NUMBER,
        "pclass": NUMBER,
        "fare": NUMBER,
        "embarked": TEXT,
        "alone": BOOLEAN,
        "booked": DATE,
        "cabin": TEXT,
    }
    assert schema.features == [name for name in schema.columns if name != "passenger_id"]
    assert (schema.task, schema.reason) == (CLASSIFICATION, "target 'survived': numbers, 2 distinct values")
    assert list(table.columns)[-1] == "survived" and set(table["survived"]) == {"0", "1"}
    assert schema.unlabelled_rows == 4 and len(table) == 596
    assert schema.notes == ["passengers.csv: 4 of 600 rows have no label in 'survived'; they are left out"]
    assert table["age"].isna().sum() > 100  # missing values stay missing
    assert set(table["alone"].dropna()) == {0.0, 1.0}
    assert pd.api.types.is_datetime64_any_dtype(table["booked"])


def test_an_id_not_listed_is_used_but_named_in_a_note():
    _, schema = prepare_table(passengers(), "survived", [], "auto", "passengers.csv")
    assert schema.columns["passenger_id"] == NUMBER
    assert (
        "passengers.csv: column 'passenger_id' has a different value in every row, like an id; list it in "
        "data_load.id_columns to keep it out of the features (it is used as one now)"
    ) in schema.notes
    assert not [note for note in schema.notes if "'name'" in note]  # free text with spaces is not an id


def test_constant_and_empty_columns_are_left_out_with_a_note_but_pixels_stay():
    table = pd.DataFrame(
        {
            "x": range(30),
            "same": ["a"] * 30,
            "nothing": [None] * 30,
            "pixel_0_0": 0,
            "level": 1.5,
            "level_or_gap": [2.0] * 29 + [None],  # a gap is a second value: whether it was measured
            "measure": [number / 7 for number in range(30)],  # unique, with fractions: no id
            "label": ["p", "q"] * 15,
        }
    )
    prepared, schema = prepare_table(table, "label", [], "auto", "t.csv")
    assert list(prepared.columns) == ["x", "pixel_0_0", "level_or_gap", "measure", "label"]
    assert schema.dropped == {
        "same": "the same value ('a') in every row",
        "nothing": "no value in any row",
        "level": "the same value (1.5) in every row",
    }
    assert schema.notes[-1].startswith("t.csv: left out 'same' (the same value ('a') in every row), 'nothing'")
    assert [note for note in schema.notes if "like an id" in note] == [  # unique whole numbers, not fractions
        "t.csv: column 'x' has a different value in every row, like an id; list it in data_load.id_columns to keep "
        "it out of the features (it is used as one now)"
    ]


def test_text_that_is_mostly_numbers_is_text_with_a_note():
    ages = [str(number) for number in range(15)] * 2 + ["unknown"]
    table = pd.DataFrame({"age": ages, "label": ["a", "b"] * 15 + ["a"]})
    _, schema = prepare_table(table, "label", [], "auto", "t.csv")
    assert schema.columns["age"] == TEXT
    assert any("is mostly numbers, but holds text such as 'unknown'" in note for note in schema.notes)


def test_dates_with_times_and_zones_become_dates_in_utc():
    table = pd.DataFrame(
        {"when": ["2024-03-01", "2024-03-01T14:30:00Z", "2024-03-02 08:00+02:00", None], "label": ["a", "b"] * 2}
    )
    prepared, schema = prepare_table(table, "label", [], "auto", "t.csv")
    assert schema.columns["when"] == DATE
    assert prepared["when"].astype(str).tolist()[:3] == [
        "2024-03-01 00:00:00",
        "2024-03-01 14:30:00",
        "2024-03-02 06:00:00",
    ]
    assert prepared["when"].isna().tolist() == [False, False, False, True]


@pytest.mark.parametrize(
    ("table", "target", "ids", "task", "message"),
    [
        (
            pd.DataFrame({"a": [1, 2], "label": ["x", "y"]}),
            "y",
            [],
            "auto",
            "t.csv: no column 'y' (data_load.target); columns: a, label",
        ),
        (
            pd.DataFrame({"a": [1, 2], "label": ["x", "y"]}),
            "label",
            ["id"],
            "auto",
            "t.csv: data_load.id_columns names 'id', which is not a column; columns: a, label",
        ),
        (
            pd.DataFrame({"a": [1, 2, 3], "label": ["x", "x", None]}),
            "label",
            [],
            "auto",
            "t.csv: column 'label' has one value ('x') in every labelled row; a model needs two",
        ),
        (
            pd.DataFrame({"a": [1, 2, 3], "label": ["x", "y", "x"]}),
            "label",
            [],
            REGRESSION,
            "t.csv: column 'label' holds text such as 'x', but base.task is regression, which needs numbers",
        ),
        (
            pd.DataFrame({"a": [1, 2], "when": ["2024-01-01", "2024-02-30"], "label": ["x", "y"]}),
            "label",
            [],
            "auto",
            "t.csv: column 'when' holds dates, but '2024-02-30' in data row 2 is not one",
        ),
        (
            pd.DataFrame({"a": [None, None], "label": ["x", "y"]}),
            "label",
            [],
            "auto",
            "t.csv: no feature varies: a; add columns that do",
        ),
        (
            pd.DataFrame({"id": [1, 2], "label": ["x", "y"]}),
            "label",
            ["id"],
            "auto",
            "t.csv: no feature columns besides 'label' and the id columns",
        ),
        (
            pd.DataFrame({"a": [1, 2], "label": [None, None]}),
            "label",
            [],
            "auto",
            "t.csv: column 'label' has no label in any row; label the rows",
        ),
        (
            pd.DataFrame({"a": [1, "x"], "label": ["x", "y"]}, dtype=object),
            "label",
            [],
            "auto",
            "t.csv: column 'a' holds int values beside text; keep one type per column",
        ),
    ],
)
def test_a_table_that_cannot_be_used_is_one_line_naming_the_file_and_the_column(table, target, ids, task, message):
    with pytest.raises(DataSchemaError) as caught:
        prepare_table(table, target, ids, task, "t.csv")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("labels", "task", "reason"),
    [
        (["cat", "dog", "cat"], CLASSIFICATION, "text, 2 distinct values"),
        ([True, False, True], CLASSIFICATION, "booleans, 2 distinct values"),
        ([0, 1, 1, 0], CLASSIFICATION, "numbers, 2 distinct values"),
        ([0.5, 1.25, 3.0, 4.5], REGRESSION, "numbers with fractions, 4 distinct values"),
        (list(range(6)) * 20, CLASSIFICATION, "6 distinct whole numbers"),
        (list(range(60)) * 2, REGRESSION, "60 distinct whole numbers in 120 rows"),
    ],
)
def test_the_task_follows_the_label_and_says_why(labels, task, reason):
    assert infer_task(pd.Series(labels), "y", "t.csv") == (task, f"target 'y': {reason}")


def test_whole_numbers_between_the_two_rules_ask_for_base_task():
    labels = pd.Series(np.arange(2000) % 30)  # 30 values in 2,000 rows: classes, or a count?
    with pytest.raises(
        DataSchemaError, match="30 distinct values in 2000 rows, which may be classes or a quantity; set"
    ):
        infer_task(labels, "y", "t.csv")


def test_a_task_set_in_params_is_kept_and_a_regression_target_becomes_numbers():
    table = pd.DataFrame({"a": range(20), "y": [1, 2] * 10})
    prepared, schema = prepare_table(table, "y", [], REGRESSION, "t.csv")
    assert (schema.task, schema.reason) == (REGRESSION, "target 'y', set in base.task")
    assert prepared["y"].dtype == "float64"
    _, schema = prepare_table(table.assign(y=np.linspace(0, 1, 20)), "y", [], "auto", "t.csv")
    assert schema.task == REGRESSION


def test_the_schema_is_saved_and_read_back(tmp_path):
    _, schema = prepare_table(passengers(), "survived", ["passenger_id"], "auto", "passengers.csv")
    schema.save(tmp_path / "schema.json")
    assert TableSchema.load(tmp_path / "schema.json") == schema


@pytest.mark.parametrize(
    ("content", "settings", "message"),
    [
        (
            "a,b\n1,x\n2,y\n",
            {},
            "data/external/t.csv: no column 'label' (data_load.target); columns: a, b",
        ),
        (
            "a,label\n1,x\n2,x\n3,\n",
            {},
            "data/external/t.csv: column 'label' has one value ('x') in every labelled row; a model needs two",
        ),
        (
            "a,label\n1,x\n2,y\n3,x\n",
            {"base": {"task": "regression"}},
            "data/external/t.csv: column 'label' holds text such as 'x', but base.task is regression",
        ),
        (
            "a,when,label\n1,2024-01-31,x\n2,2024-01-32,y\n3,2024-02-01,x\n",
            {},
            "data/external/t.csv: column 'when' holds dates, but '2024-01-32' in data row 2 is not one",
        ),
        (
            "a,label\n1,x\n2,y\n",
            {"data_load": {"id_columns": ["passenger"]}},
            "data/external/t.csv: data_load.id_columns names 'passenger', which is not a column; columns: a, label",
        ),
        (
            "a,label\n1,x\n2,y\n",
            {"evaluate": {"main_metric": "rmse"}},
            "evaluate.main_metric rmse scores regression, but the task is classification",
        ),
        (
            "",
            {},
            "data/external/t.csv: the file is empty; it needs a header row and data rows",
        ),
    ],
)
def test_make_pipeline_checks_the_table_before_any_run_and_names_the_problem_in_one_line(
    tmp_path, params, content, settings, message
):
    from src.config import validate
    from src.pipeline.run import SourceError, check_source

    (tmp_path / "data/external").mkdir(parents=True)
    (tmp_path / "data/external/t.csv").write_text(content)
    params["data_load"].update(source="data/external/t.csv", target="label")
    for section, values in settings.items():
        params[section].update(values)
    with pytest.raises(SourceError) as caught:
        check_source(validate(params, "params.yaml"), root=tmp_path)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_a_good_table_passes_the_check_and_a_missing_file_is_named(tmp_path, params):
    from src.config import validate
    from src.pipeline.run import SourceError, check_source

    params["data_load"].update(source="data/external/passengers.csv", target="survived", id_columns=["passenger_id"])
    (tmp_path / "data/external").mkdir(parents=True)
    with pytest.raises(SourceError, match="data/external/passengers.csv not found; put the file there and track it"):
        check_source(validate(params, "params.yaml"), root=tmp_path)
    (tmp_path / "data/external/passengers.csv").write_bytes(PASSENGERS.read_bytes())
    check_source(validate(params, "params.yaml"), root=tmp_path)


def test_when_the_table_is_not_read_again_its_schema_tells_the_task_the_params_must_fit(tmp_path, params):
    from src.config import validate
    from src.ml.tables import TableSchema
    from src.pipeline.run import SourceError, check_source

    check_source(validate(params, "params.yaml"), reread=False, root=tmp_path)  # no schema yet: data_load will say
    (tmp_path / "data/raw").mkdir(parents=True)
    TableSchema("progression", "regression", "target 'progression'", {"a": "number"}).save(
        tmp_path / "data/raw/schema.json"
    )
    params["evaluate"]["main_metric"] = "accuracy"
    with pytest.raises(SourceError, match="evaluate.main_metric accuracy scores classification, but the task is regr"):
        check_source(validate(params, "params.yaml"), reread=False, root=tmp_path)
