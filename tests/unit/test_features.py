"""featurize's transformer: one piece of code for the featurize stage and inside the logged model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.base import clone

from src.config import load_config
from src.ml.catalog import CLASSIFICATION
from src.ml.features import DATE_PARTS, Featurizer, estimator_of, features_of, featurize, with_features
from src.ml.models import fit
from src.ml.sources import load_bundled, parse_table
from src.ml.tables import prepare_table
from src.tracking.stage_runs import TRUSTED_TYPES
from tests.conftest import PROJECT_ROOT, split_label

TEMPLATE = load_config(PROJECT_ROOT / "params.yaml")


@pytest.fixture(scope="module")
def iris_model():
    """The template's model on iris: the featurizer, then the encoder and estimator fitted on its features."""
    raw = load_bundled("iris", "target")
    featurizer = Featurizer.from_params(TEMPLATE.featurize, 255, []).fit(raw.drop(columns=["target"]))
    features = featurize(raw, TEMPLATE.featurize, "target")
    fitted, _, _ = fit(*split_label(features, "target"), TEMPLATE.train, CLASSIFICATION, "accuracy", 0)
    return raw, features, with_features(featurizer, fitted)


@pytest.fixture(scope="module")
def passengers_model():
    """The template's model on the example passengers: text, booleans, a date, gaps, an id."""
    raw, schema = prepare_table(
        parse_table(PROJECT_ROOT / "examples" / "passengers.csv", "passengers.csv"),
        "survived",
        ["passenger_id"],
        "auto",
        "passengers.csv",
    )
    featurizer = Featurizer.from_params(TEMPLATE.featurize, 255, schema.id_columns)
    featurizer.fit(raw.drop(columns=["survived"]).head(5))
    features = featurize(raw, TEMPLATE.featurize, "survived", id_columns=tuple(schema.id_columns))
    fitted, _, _ = fit(*split_label(features, "survived"), TEMPLATE.train, CLASSIFICATION, "accuracy", 0)
    return raw, with_features(featurizer, fitted)


def test_the_model_takes_raw_rows_and_predicts_what_the_estimator_predicts_on_features(iris_model):
    raw, features, model = iris_model
    assert list(model.feature_names_in_) == list(raw.columns.drop("target"))
    assert (
        model.predict(raw.drop(columns=["target"])) == estimator_of(model).predict(features.drop(columns="target"))
    ).all()
    assert list(model.classes_) == ["setosa", "versicolor", "virginica"]
    pd.testing.assert_frame_equal(features_of(model, raw.drop(columns=["target"])), features.drop(columns="target"))


def test_columns_in_another_order_or_with_extras_are_taken(iris_model):
    raw, _, model = iris_model
    rows = raw.drop(columns=["target"]).head(5)
    shuffled = rows[list(reversed(rows.columns))].assign(id=range(5))
    assert (model.predict(shuffled) == model.predict(rows)).all()


def test_dates_become_their_parts_and_the_ids_are_left_out(passengers_model):
    raw, model = passengers_model
    features = features_of(model, raw.drop(columns=["survived"]).head(3))
    assert "passenger_id" not in features.columns and "booked" not in features.columns
    assert [f"booked_{part}" for part in DATE_PARTS] == [name for name in features.columns if name.startswith("booked")]
    assert features[["booked_year", "booked_month", "booked_day"]].iloc[0].tolist() == [2012.0, 2.0, 11.0]


def test_raw_rows_as_a_caller_sends_them_are_scored_gaps_new_categories_and_text_numbers_alike(passengers_model):
    _, model = passengers_model
    sent = pd.DataFrame(
        {
            "passenger_id": [1, 2, 3],
            "name": ["Nobody, Mr. X", None, "Who, Master. Y"],
            "sex": ["male", "unknown", None],
            "age": ["30", None, "4.5"],  # numbers as JSON or a CSV of text send them
            "pclass": [3, 1, None],
            "fare": [7.5, None, 20.0],
            "embarked": ["Z", None, "S"],  # Z: never seen in training
            "alone": [True, None, False],
            "booked": ["2012-02-01", None, "2012-03-01T10:00:00"],
            "cabin": [None, "Q99", ""],
        }
    )
    predictions = model.predict(sent)
    assert len(predictions) == 3 and set(predictions) <= {"0", "1"}
    assert model.predict_proba(sent).shape == (3, 2)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda rows: rows.drop(columns=["fare"]), "column 'fare' is missing; the model takes"),
        (lambda rows: rows.assign(age=["12", "old", None]), "column 'age': 'old' in row 2 is not a number"),
        (lambda rows: rows.assign(fare=[1.0, 2.0, np.inf]), "column 'fare' holds an infinite number in row 3"),
        (
            lambda rows: rows.assign(booked=["2012-01-01", "soon", None]),
            "column 'booked': 'soon' in row 2 is not a date",
        ),
    ],
)
def test_a_bad_row_is_one_line_naming_the_column(passengers_model, spoil, message):
    raw, model = passengers_model
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model.predict(spoil(raw.drop(columns=["survived"]).head(3)))


def test_digits_gets_scaled_pixels_and_no_products_with_the_default_params():
    digits = load_bundled("digits", "target")
    features = Featurizer.from_params(TEMPLATE.featurize, 16, []).fit_transform(digits.drop(columns=["target"]))
    assert list(features.columns) == list(digits.columns.drop("target"))
    assert features.to_numpy().max() == 1.0


def test_products_of_the_numbers_beside_images_only():
    table = pd.DataFrame({"pixel_0_0": [0.0, 255.0], "pixel_0_1": [255.0, 0.0], "age": [2.0, 3.0], "size": [4.0, 5.0]})
    features = Featurizer(pairwise_products=True).fit_transform(table)
    assert list(features.columns) == ["pixel_0_0", "pixel_0_1", "age", "size", "age_x_size"]


def test_products_leave_text_and_date_parts_alone():
    table = pd.DataFrame(
        {"a": [1.0, 2.0], "b": [3.0, None], "colour": ["red", "blue"], "when": pd.to_datetime(["2024-01-01", None])}
    )
    features = Featurizer(pairwise_products=True).fit_transform(table)
    assert [name for name in features.columns if "_x_" in name] == ["a_x_b"]
    assert features["a_x_b"].isna().tolist() == [False, True]


def test_a_model_saved_with_skops_loads_when_our_types_are_trusted_on_purpose(iris_model):
    raw, _, model = iris_model
    data = skops.io.dumps(model)
    untrusted = skops.io.get_untrusted_types(data=data)
    assert "src.ml.features.Featurizer" in untrusted
    with pytest.raises(skops.io.exceptions.UntrustedTypesFoundException):
        skops.io.loads(data)
    trusted = [name for name in untrusted if name.startswith("sklearn.") or name in TRUSTED_TYPES]
    loaded = skops.io.loads(data, trusted=trusted)
    rows = raw.drop(columns=["target"]).head(10)
    assert (loaded.predict(rows) == model.predict(rows)).all()


def test_the_featurizer_clones_like_any_scikit_learn_transformer():
    featurizer = Featurizer(
        pairwise_products=False, drop_columns=("a",), pixel_pooling=2, pixel_max=16, id_columns=("i",)
    )
    assert clone(featurizer).get_params() == featurizer.get_params()


def test_a_model_fitted_on_other_features_is_refused(iris_model):
    raw, _, model = iris_model
    other = Featurizer(pairwise_products=True).fit(raw.drop(columns=["target"]))
    with pytest.raises(ValueError, match="the model learnt the features"):
        with_features(other, estimator_of(model))
