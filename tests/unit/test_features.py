"""featurize's transformer: one piece of code for the featurize stage and inside the logged model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.base import clone

from src.config import load_config
from src.ml.features import Featurizer, estimator_of, features_of, featurize, with_features
from src.ml.models import fit
from src.ml.sources import load_bundled
from src.tracking.stage_runs import TRUSTED_TYPES
from tests.conftest import PROJECT_ROOT, split_label

TEMPLATE = load_config(PROJECT_ROOT / "params.yaml")


@pytest.fixture(scope="module")
def iris_model():
    """The template's model on iris: the featurizer, then the logistic regression fitted on its features."""
    raw = load_bundled("iris", "target")
    featurizer = Featurizer.from_params(TEMPLATE.featurize, 255).fit(raw.drop(columns=["target"]))
    features = featurize(raw, TEMPLATE.featurize, "target")
    estimator, _, _ = fit(*split_label(features, "target"), TEMPLATE.train, 0)
    return raw, features, with_features(featurizer, estimator)


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


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda rows: rows.drop(columns=["petal_width_cm"]), "column 'petal_width_cm' is missing; the model takes"),
        (
            lambda rows: rows.assign(sepal_width_cm=[1.0, None, 2.0]),
            "column 'sepal_width_cm' has 1 empty values (first in row 2)",
        ),
        (
            lambda rows: rows.assign(petal_length_cm=[1.0, 2.0, np.inf]),
            "column 'petal_length_cm' has 1 infinite values (first in row 3)",
        ),
        (
            lambda rows: rows.assign(sepal_length_cm=["a", "b", "c"]),
            "column 'sepal_length_cm' holds str values such as 'a'; the model takes a finite number",
        ),
    ],
)
def test_a_bad_row_is_one_line_naming_the_column(iris_model, spoil, message):
    raw, _, model = iris_model
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model.predict(spoil(raw.drop(columns=["target"]).head(3)))


def test_digits_gets_no_pixel_products_with_the_default_params():
    digits = load_bundled("digits", "target")
    features = Featurizer.from_params(TEMPLATE.featurize, 16).fit_transform(digits.drop(columns=["target"]))
    assert TEMPLATE.featurize.pairwise_products
    assert list(features.columns) == list(digits.columns.drop("target"))
    assert features.to_numpy().max() == 1.0


def test_products_of_the_numbers_beside_images_only():
    table = pd.DataFrame({"pixel_0_0": [0.0, 255.0], "pixel_0_1": [255.0, 0.0], "age": [2.0, 3.0], "size": [4.0, 5.0]})
    features = Featurizer(pairwise_products=True).fit_transform(table)
    assert list(features.columns) == ["pixel_0_0", "pixel_0_1", "age", "size", "age_x_size"]


def test_a_model_saved_with_skops_loads_when_the_featurizer_is_trusted_on_purpose(iris_model):
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
    featurizer = Featurizer(pairwise_products=False, drop_columns=("a",), pixel_pooling=2, pixel_max=16)
    assert clone(featurizer).get_params() == featurizer.get_params()


def test_an_estimator_fitted_on_other_features_is_refused(iris_model):
    raw, _, model = iris_model
    other = Featurizer(pairwise_products=False).fit(raw.drop(columns=["target"]))
    with pytest.raises(ValueError, match="the estimator learnt the features"):
        with_features(other, estimator_of(model))
