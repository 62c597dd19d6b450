"""`make predict` with a real MLflow model in a folder: the schema check, what the output keeps and refuses."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from src.ml.features import Featurizer, with_features
from src.ml.schema import ScoringInputError, check_columns
from src.service.predict import predict_file
from src.tracking.stage_runs import TRUSTED_TYPES
from src.versions.workspace import OverwriteError, check_output_path
from tests.conftest import PROJECT_ROOT

EXPECTED = {"length": "double", "width": "double"}


def test_integer_columns_are_cast_and_floats_pass():
    assert check_columns({"length": "int64", "width": "double", "extra": "string"}, EXPECTED, "new.csv") == ["length"]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"length": "double"}, "new.csv: column 'width' is missing; the model needs length, width"),
        ({}, "new.csv: column 'length' is missing (and 1 more); the model needs length, width"),
        (
            {"length": "double", "width": "string"},
            "new.csv: column 'width' holds text where the model takes numbers (double); was it changed?",
        ),
    ],
)
def test_a_mismatch_names_the_file_and_the_column(columns, message):
    with pytest.raises(ScoringInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_columns(columns, EXPECTED, "new.csv")


def test_text_and_date_columns_take_what_a_file_can_hold_of_them():
    expected = {"town": "string", "booked": "datetime", "alone": "double"}
    assert check_columns({"town": "int64", "booked": "string", "alone": "bool"}, expected, "new.csv") == []
    assert check_columns({"town": "null", "booked": "timestamp[s]", "alone": "null"}, expected, "new.csv") == []
    with pytest.raises(ScoringInputError, match="column 'booked' holds numbers where the model takes dates"):
        check_columns({"town": "string", "booked": "int64", "alone": "double"}, expected, "new.csv")


def saved_model(folder, labels: list, estimator):
    """A real pyfunc model, as the train stage logs one: featurize, then `estimator`; taking raw columns."""
    import mlflow.pyfunc
    import mlflow.sklearn
    import skops.io
    from mlflow.models import infer_signature

    raw = pd.DataFrame({"length": [1.0, 2.0, 5.0, 6.0] * 5, "width": [5.0, 6.0, 1.0, 2.0] * 5})
    featurizer = Featurizer(pairwise_products=True).fit(raw)
    sklearn_model = with_features(featurizer, estimator.fit(featurizer.transform(raw), labels * 5))
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(sklearn_model))
    mlflow.sklearn.save_model(
        sklearn_model,
        folder,
        signature=infer_signature(raw, sklearn_model.predict(raw)),
        pip_requirements=[],  # no inference of the requirements: seconds, and nothing here installs them
        skops_trusted_types=[name for name in untrusted if name.startswith("sklearn.") or name in TRUSTED_TYPES],
    )
    return mlflow.pyfunc.load_model(str(folder))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A classifier of wide and long rows."""
    from sklearn.linear_model import LogisticRegression

    return saved_model(
        tmp_path_factory.mktemp("model") / "model", ["wide", "wide", "long", "long"], LogisticRegression()
    )


def rows(count: int = 8) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"{number:03d}" for number in range(count)],
            "width": [1.0, 5.0] * (count // 2),
            "length": [6, 1] * (count // 2),  # integers: cast to the float the model takes
            "note": ["a", "b"] * (count // 2),
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_the_output_keeps_every_input_column_beside_the_prediction_and_probabilities(
    model, tmp_path, suffix, monkeypatch
):
    monkeypatch.setattr("src.service.predict.BATCH_ROWS", 3)
    source, output = tmp_path / f"rows{suffix}", tmp_path / f"scored{suffix}"
    if suffix == ".csv":
        rows().to_csv(source, index=False)
    else:
        rows().to_parquet(source, index=False)
    assert predict_file(model, "models:/m/1", source, output) == 8
    scored = pd.read_csv(output, dtype={"id": str}) if suffix == ".csv" else pd.read_parquet(output)
    assert list(scored.columns) == [
        "id", "width", "length", "note", "prediction", "probability_long", "probability_wide", "model",
    ]  # fmt: skip
    assert scored["id"].tolist() == [f"{number:03d}" for number in range(8)]  # identifiers as they were: 007 stays
    assert scored["prediction"].tolist() == ["long", "wide"] * 4
    assert ((scored["probability_long"] + scored["probability_wide"]) - 1).abs().max() < 1e-9
    assert (scored["probability_long"] > 0.5).tolist() == (scored["prediction"] == "long").tolist()
    assert set(scored["model"]) == {"models:/m/1"}


def test_a_regression_model_writes_numbers_and_no_probabilities(tmp_path):
    from sklearn.linear_model import LinearRegression

    regressor = saved_model(tmp_path / "model", [10.0, 20.0, 50.0, 60.0], LinearRegression())
    source, output = tmp_path / "rows.csv", tmp_path / "scored.csv"
    rows().to_csv(source, index=False)
    assert predict_file(regressor, "models:/r/1", source, output) == 8
    scored = pd.read_csv(output, dtype={"id": str})
    assert list(scored.columns) == ["id", "width", "length", "note", "prediction", "model"]
    assert scored["prediction"].dtype == float
    expected = regressor.predict(rows()[["length", "width"]].astype(float))
    assert scored["prediction"].tolist() == pytest.approx(list(expected))
    assert len(set(expected)) == 2


def test_the_id_columns_are_kept_whatever_keep_names(model, tmp_path):
    source, output = tmp_path / "rows.csv", tmp_path / "scored.csv"
    rows().to_csv(source, index=False)
    predict_file(model, "models:/m/1", source, output, keep=["note"], id_columns=["id", "not_in_the_file"])
    scored = pd.read_csv(output, dtype={"id": str})
    assert list(scored.columns)[:3] == ["id", "note", "prediction"]
    assert scored["id"].tolist()[:2] == ["000", "001"]


def test_keep_names_the_columns_the_output_keeps(model, tmp_path):
    source, output = tmp_path / "rows.parquet", tmp_path / "scored.parquet"
    rows().to_parquet(source, index=False)
    predict_file(model, "models:/m/1", source, output, keep=["id"])
    assert list(pd.read_parquet(output).columns) == [
        "id",
        "prediction",
        "probability_long",
        "probability_wide",
        "model",
    ]
    with pytest.raises(ScoringInputError, match="KEEP names ident, which is not a column of it"):
        predict_file(model, "models:/m/1", source, tmp_path / "other.parquet", keep=["ident"])


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda table: table.assign(prediction="x"), "it has a column 'prediction', which the output adds"),
        (lambda table: table.assign(length=[1, 2**60] * 4), "column 'length' holds integers beyond 2\\*\\*53"),
        (
            lambda table: table.assign(width=["1.0", "wide"] * 4),  # text where numbers were
            "column 'width' holds text where the model takes numbers",
        ),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_written(model, tmp_path, spoil, message):
    source, output = tmp_path / "rows.parquet", tmp_path / "scored.parquet"
    spoil(rows()).to_parquet(source, index=False)
    with pytest.raises(ScoringInputError, match=message):
        predict_file(model, "models:/m/1", source, output)
    assert list(tmp_path.iterdir()) == [source]


@pytest.mark.parametrize("link", ["same", "spelt-differently", "symlink", "hardlink"])
def test_the_input_is_never_the_output(model, tmp_path, link, monkeypatch):
    source = tmp_path / "rows.parquet"
    rows().to_parquet(source, index=False)
    before = source.read_bytes()
    monkeypatch.chdir(tmp_path)
    output = {"same": source, "spelt-differently": tmp_path / "." / "rows.parquet"}.get(link, tmp_path / "out.parquet")
    if link == "symlink":
        output.symlink_to(source)
    elif link == "hardlink":
        os.link(source, output)
    with pytest.raises(OverwriteError, match=f"OUTPUT {output} is the INPUT file {source}; write to another file"):
        predict_file(model, "models:/m/1", source, output)
    assert source.read_bytes() == before


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("data/processed/test.parquet", "is data DVC tracks for the pipeline"),
        ("reports/metrics.json", "is data DVC tracks for the pipeline"),
        ("README.md", "is a file git tracks in this project"),
    ],
)
def test_an_output_may_not_overwrite_what_the_project_tracks(path, message, tmp_path):
    with pytest.raises(OverwriteError, match=message):
        check_output_path(PROJECT_ROOT / path, {"INPUT": tmp_path / "new.csv"})
    check_output_path(tmp_path / "scored.csv", {"INPUT": tmp_path / "new.csv"})  # anywhere else is fine


def test_a_retrain_batch_read_with_numeric_labels_is_checked_and_returned_with_text_labels():
    from src.service.retrain import validate_batch
    from src.tracking.registry import Interface

    digits = Interface(["a", "b"], ["0", "1", "2"], "classification")
    batch = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 0.25, 1.0], "digit": [0, 1, 2]})  # as read_csv reads them
    checked = validate_batch(batch, {"a": "double", "b": "double"}, "digit", digits, "batch.csv", [])
    assert checked["digit"].tolist() == ["0", "1", "2"]
    assert checked["a"].dtype == "float64"
    with pytest.raises(ScoringInputError, match=r"labels \['7'\] are unknown to the model"):
        validate_batch(batch.assign(digit=[0, 1, 7]), {"a": "double", "b": "double"}, "digit", digits, "x", [])


def test_a_retrain_batch_with_new_categories_gaps_and_ids_is_taken_as_the_raw_table_holds_rows():
    from src.service.retrain import validate_batch
    from src.tracking.registry import Interface

    expected = {"town": "string", "rooms": "double", "built": "datetime"}
    batch = pd.DataFrame(
        {
            "price": [100.5, 200, 150],
            "built": ["2001-01-01", None, "1999-05-05"],
            "rooms": [3, None, 5],
            "town": ["Newtown", "Oldtown", None],  # Newtown: never seen in training
            "house": ["h1", "h2", "h3"],
        }
    )
    checked = validate_batch(batch, expected, "price", Interface(list(expected), [], "regression"), "b.csv", ["house"])
    assert list(checked.columns) == ["house", "town", "rooms", "built", "price"]
    assert checked["price"].dtype == "float64" and pd.api.types.is_datetime64_any_dtype(checked["built"])
    with pytest.raises(ScoringInputError, match="'price' holds text such as 'cheap'; the model predicts a number"):
        validate_batch(batch.assign(price="cheap"), expected, "price", Interface([], [], "regression"), "b.csv", [])
