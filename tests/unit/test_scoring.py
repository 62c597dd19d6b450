"""The schema check of `make predict` and `make retrain`, before anything is written."""

from __future__ import annotations

import pandas as pd
import pytest

from src.service.scoring import ScoringInputError, check_columns, predict_file

EXPECTED = {"length": "double", "width": "double"}


def test_integer_columns_are_cast_and_floats_pass():
    assert check_columns({"length": "int64", "width": "float64", "extra": "str"}, EXPECTED, "new.csv") == ["length"]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"length": "float64"}, "new.csv: column 'width' is missing; the model needs length, width"),
        ({}, "new.csv: column 'length' is missing (and 1 more); the model needs length, width"),
        ({"length": "float64", "width": "str"}, "new.csv: column 'width' holds str values; the model needs numbers"),
    ],
)
def test_a_mismatch_names_the_file_and_the_column(columns, message):
    with pytest.raises(ScoringInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_columns(columns, EXPECTED, "new.csv")


class Model:
    """A stand-in with the two things predict_file uses: a signature and predict."""

    class metadata:  # noqa: N801 - mirrors mlflow's attribute name
        @staticmethod
        def get_input_schema():
            from mlflow.types import ColSpec, Schema

            return Schema([ColSpec("double", name) for name in EXPECTED])

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def predict(self, frame: pd.DataFrame):
        self.batch_sizes.append(len(frame))
        return (frame["length"] > frame["width"]).map({True: "long", False: "wide"})


def test_integers_too_large_for_a_float_are_refused_and_nothing_is_written(tmp_path):
    source, output = tmp_path / "big.parquet", tmp_path / "scored.parquet"
    pd.DataFrame({"length": [1, 2**60], "width": [1.0, 2.0]}).to_parquet(source)
    with pytest.raises(ScoringInputError, match="holds integers beyond 2\\*\\*53"):
        predict_file(Model(), "models:/m/1", source, output)
    assert list(tmp_path.iterdir()) == [source]


def test_predict_file_writes_one_prediction_per_row_in_batches(tmp_path, monkeypatch):
    monkeypatch.setattr("src.service.scoring.BATCH_ROWS", 3)
    source, output = tmp_path / "rows.csv", tmp_path / "scored.csv"
    pd.DataFrame({"width": [1.0, 5.0] * 4, "length": [2, 3] * 4}).to_csv(source, index=False)
    model = Model()
    assert predict_file(model, "models:/m/1", source, output) == 8
    assert model.batch_sizes == [3, 3, 2]
    scored = pd.read_csv(output)
    assert scored["prediction"].tolist() == ["long", "wide"] * 4
    assert set(scored["model"]) == {"models:/m/1"}
