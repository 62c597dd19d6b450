"""What train learns before the estimator: encoders routed by column, fitted on training rows only."""

import numpy as np
import pandas as pd
import pytest

from src.ml.catalog import CLASSIFICATION, ESTIMATORS, REGRESSION
from src.ml.encoding import TableEncoder
from src.ml.features import Featurizer, with_features
from src.ml.models import build_model
from src.ml.sources import parse_table
from src.ml.tables import prepare_table
from src.tracking.stage_runs import TRUSTED_TYPES
from tests.conftest import PROJECT_ROOT
from tests.unit.test_stages import train_params


def table(rows: int = 300, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Numbers with gaps, a few categories, a town of many values, free text; a label that follows them."""
    generator = np.random.default_rng(seed)
    features = pd.DataFrame(
        {
            "age": np.where(generator.random(rows) < 0.2, np.nan, generator.integers(1, 80, rows).astype(float)),
            "colour": pd.Series(generator.choice(["red", "green", "blue", None], rows), dtype="str"),
            "town": pd.Series([f"town {index % 120}" for index in range(rows)], dtype="str").str.replace(" ", "_"),
            "note": pd.Series([f"a {generator.choice(['big', 'small'])} case number {index}" for index in range(rows)]),
        }
    )
    labels = pd.Series(np.where((features["colour"] == "red") | (features["age"] < 20), "yes", "no"))
    return features, labels


def test_each_column_goes_the_way_its_training_rows_say():
    features, labels = table()
    encoder = TableEncoder(CLASSIFICATION, "native").fit(features, labels)
    assert encoder.routes_ == {
        "numbers": ["age"],
        "categories": ["colour"],
        "free_text": ["note"],
        "many_values": ["town"],
    }
    encoded = encoder.transform(features.head(3))
    assert isinstance(encoded["colour"].dtype, pd.CategoricalDtype)  # for gradient boosting's own categories
    assert "note_word_big" in encoded.columns and "note_word_small" in encoded.columns


@pytest.mark.parametrize("categories", ["native", "ordinal", "one_hot"])
def test_a_category_town_or_word_never_seen_in_training_is_scored_not_refused(categories):
    features, labels = table()
    encoder = TableEncoder(CLASSIFICATION, categories, missing_values=categories != "one_hot").fit(features, labels)
    new = pd.DataFrame({"age": [None], "colour": ["purple"], "town": ["atlantis"], "note": ["nothing known"]})
    encoded = encoder.transform(new)
    assert len(encoded) == 1 and list(encoded.columns) == list(encoder.get_feature_names_out())
    if categories == "one_hot":
        assert encoded.filter(like="colour_").to_numpy().sum() == 0


def test_categories_are_learnt_from_the_rows_the_encoder_is_fitted_on_only():
    features, labels = table()
    train_rows = features["colour"] != "blue"
    encoder = TableEncoder(CLASSIFICATION, "native").fit(features[train_rows], labels[train_rows])
    assert list(encoder.transform(features)["colour"].cat.categories) == ["green", "red"]


def test_target_encoding_of_the_training_rows_is_cross_fitted_so_no_row_sees_its_own_label():
    features, labels = table()
    encoder = TableEncoder(CLASSIFICATION, "native", random_state=0)
    fitted = encoder.fit_transform(features, labels)["town"]
    refitted = encoder.transform(features)["town"]
    assert not np.allclose(fitted.to_numpy(), refitted.to_numpy())


def test_a_regression_target_is_encoded_as_a_number():
    features, _ = table()
    values = pd.Series(np.arange(len(features), dtype="float64"))
    encoded = TableEncoder(REGRESSION, "ordinal").fit_transform(features, values)
    assert list(encoded.filter(like="town").columns) == ["town"]  # one mean per town, not one column per class


def test_the_linear_encoder_fills_gaps_flags_them_and_scales():
    features, labels = table()
    encoded = TableEncoder(CLASSIFICATION, "one_hot", missing_values=False, scaled=True).fit_transform(features, labels)
    assert not encoded.isna().to_numpy().any()
    assert "missingindicator_age" in encoded.columns
    assert abs(encoded["age"].mean()) < 1e-9


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_every_declared_estimator_saves_with_skops_and_loads_when_only_our_types_are_trusted(estimator):
    import skops.io

    raw, _ = prepare_table(
        parse_table(PROJECT_ROOT / "examples" / "passengers.csv", "passengers.csv"),
        "survived",
        ["passenger_id"],
        "auto",
        "passengers.csv",
    )
    rows, labels = raw.drop(columns=["survived"]), raw["survived"]
    featurizer = Featurizer(id_columns=("passenger_id",)).fit(rows.head(5))
    model = build_model(train_params(estimator), CLASSIFICATION, 0)
    if ESTIMATORS[estimator].epochs is not None:
        model.set_params(estimate__max_iter=5)
    model.fit(featurizer.transform(rows), labels)
    whole = with_features(featurizer, model)
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(whole))
    assert [name for name in untrusted if not name.startswith("sklearn.") and name not in TRUSTED_TYPES] == []
    loaded = skops.io.loads(skops.io.dumps(whole), trusted=untrusted)
    assert (loaded.predict(rows) == whole.predict(rows)).all()
