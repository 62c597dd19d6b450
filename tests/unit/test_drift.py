"""Drift verdicts of the pure functions behind `make drift`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from src.config import load_config
from src.service.drift import compare, population_stability_index
from tests.conftest import PROJECT_ROOT

PARAMS = load_config(PROJECT_ROOT / "params.yaml").drift


def tables(shift: float = 0.0, colours: tuple[str, ...] = ("red", "green")) -> tuple[pd.DataFrame, pd.DataFrame]:
    generator = np.random.default_rng(0)
    reference = pd.DataFrame(
        {"length": generator.normal(5, 1, 2000), "colour": generator.choice(["red", "green"], 2000)}
    )
    new = pd.DataFrame({"length": generator.normal(5 + shift, 1, 1000), "colour": generator.choice(colours, 1000)})
    return reference, new


def test_the_same_distribution_drifts_nowhere():
    reference, new = tables()
    results = compare(reference, new, ["length", "colour"], PARAMS)
    assert [(item.feature, item.kind, item.drifted) for item in results] == [
        ("length", "numeric", False),
        ("colour", "categorical", False),
    ]
    assert all(item.psi < 0.05 for item in results)


def test_a_shifted_mean_and_a_new_category_drift():
    reference, new = tables(shift=1.0, colours=("red", "blue"))
    length, colour = compare(reference, new, ["length", "colour"], PARAMS)
    assert length.drifted and length.test == "ks" and length.p_value < 1e-10
    assert colour.drifted and colour.test == "chi2"


def test_psi_is_zero_for_equal_shares_and_grows_with_the_difference():
    assert population_stability_index(np.array([10, 20, 30]), np.array([1, 2, 3])) == pytest.approx(0)
    small = population_stability_index(np.array([50, 50]), np.array([55, 45]))
    large = population_stability_index(np.array([50, 50]), np.array([90, 10]))
    assert 0 < small < large


def test_a_missing_feature_is_named():
    reference, new = tables()
    with pytest.raises(ValueError, match="the new batch lacks column 'length'"):
        compare(reference, new.drop(columns=["length"]), ["length", "colour"], PARAMS)
