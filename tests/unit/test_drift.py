"""Drift verdicts of the pure functions behind `make drift`, and how often they are wrong on random batches."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, chi2_contingency

from src.config import load_config
from src.ml.drift import compare, two_proportion_z_test
from src.ml.features import featurize
from src.ml.sources import load_bundled
from src.ml.split import split
from src.service.drift import report_html
from tests.conftest import PROJECT_ROOT

CONFIG = load_config(PROJECT_ROOT / "params.yaml")
PARAMS = CONFIG.drift
ALPHA = PARAMS.p_value
DRAWS = 100
# The verdicts of DRAWS undrifted batches are DRAWS coin flips. Were the false-alarm rate exactly ALPHA,
# the count of alarms would exceed this in 1% of seeds (11 of 100 at 0.05); without the
# Bonferroni correction the rate for the five features below is 1 - 0.95^5 = 23%, about 23 of 100.
# (Measured over 4000 draws: 4.9% at 30 rows, 4.5% at 300. The rate is ALPHA on average over
# references; given one fixed reference sample it scatters a little around it.)
ALLOWED_ALARMS = int(binom.ppf(0.99, DRAWS, ALPHA))


def population(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Rows from one fixed distribution; `shift` moves `normal` by that many of its standard deviations."""
    generator = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "normal": generator.normal(5 + 2 * shift, 2, rows),
            "skewed": generator.lognormal(0, 1, rows),
            "counts": generator.poisson(30, rows),  # integers with more than max_categories values: numeric, tied
            "colour": generator.choice(["red", "green", "blue"], rows, p=[0.5, 0.3, 0.2]),
            "member": generator.choice([True, False], rows, p=[0.8, 0.2]),
        }
    )


REFERENCE = population(5000, seed=0)
FEATURES = list(REFERENCE.columns)


def iris_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pipeline's iris train and test tables with its default params (10 features), without the label."""
    target = CONFIG.data_load.target
    features = featurize(load_bundled("iris", target), CONFIG.featurize, target)
    train, test = split(features, CONFIG.data_split, target, CONFIG.base.random_state)
    return train.drop(columns=[target]), test.drop(columns=[target])


def drifted(reference: pd.DataFrame, new: pd.DataFrame) -> list[str]:
    """The features `compare` reports drifted; the batch has drifted when the list is not empty."""
    return [item.feature for item in compare(reference, new, list(reference.columns), PARAMS) if item.drifted]


@pytest.mark.parametrize("rows", [30, 300])
def test_undrifted_batches_of_a_few_rows_raise_the_alarm_at_most_at_the_nominal_rate(rows):
    alarms = sum(bool(drifted(REFERENCE, population(rows, seed))) for seed in range(1, DRAWS + 1))
    assert alarms <= ALLOWED_ALARMS, f"{alarms} of {DRAWS} undrifted batches of {rows} rows reported drifted"


def test_undrifted_large_batches_raise_the_alarm_at_most_at_the_nominal_rate_and_stay_below_the_distances():
    draws, alarms, distances = 50, 0, {"numeric": [], "categorical": []}
    for seed in range(1, draws + 1):
        results = compare(REFERENCE, population(3000, seed), FEATURES, PARAMS)
        alarms += any(item.drifted for item in results)
        for item in results:
            distances[item.kind].append(item.distance_value)
    assert alarms <= binom.ppf(0.99, draws, ALPHA)
    # From a few thousand rows on, sampling noise alone does not reach a distance's threshold.
    assert max(distances["numeric"]) < PARAMS.numeric_distance
    assert max(distances["categorical"]) < PARAMS.categorical_distance


def test_at_the_boundary_a_distance_alone_would_raise_false_alarms_and_the_test_stops_them():
    draws, crossings, alarms = 30, 0, 0
    for seed in range(1, draws + 1):
        results = compare(population(1000, 1000 + seed), population(1000, seed), FEATURES, PARAMS)
        crossings += sum(item.distance_value >= item.distance_threshold for item in results)
        alarms += any(item.drifted for item in results)
    assert crossings >= 1  # sampling noise alone moved some distance past its threshold
    assert alarms <= binom.ppf(0.99, draws, ALPHA)


def test_many_categories_lie_above_the_distance_threshold_by_chance_and_are_not_drift():
    generator = np.random.default_rng(0)
    cities = [f"city {number}" for number in range(100)]
    reference = pd.DataFrame({"city": generator.choice(cities, 2000)})
    [city] = compare(reference, pd.DataFrame({"city": generator.choice(cities, 2000)}), ["city"], PARAMS)
    assert city.distance == "jensen_shannon" and city.distance_value >= PARAMS.categorical_distance
    assert not city.drifted and city.p_value >= city.threshold
    assert city.reason.endswith("≥ 0.1, within sampling noise")


def test_on_large_samples_a_significant_change_too_small_to_matter_is_not_drift():
    generator = np.random.default_rng(0)
    reference = pd.DataFrame({"length": generator.normal(0, 1, 20_000)})
    [length] = compare(reference, pd.DataFrame({"length": generator.normal(0.05, 1, 20_000)}), ["length"], PARAMS)
    assert length.p_value < length.threshold and length.distance_value < length.distance_threshold
    assert not length.drifted and length.reason.endswith("< 0.1, too small to matter")


def test_random_iris_test_splits_raise_the_alarm_at_most_at_the_nominal_rate():
    from sklearn.datasets import load_iris

    features = load_iris(as_frame=True).data
    alarms = 0
    for seed in range(DRAWS):
        shuffled = features.sample(frac=1, random_state=seed)
        alarms += bool(drifted(shuffled.iloc[30:], shuffled.iloc[:30]))
    assert alarms <= ALLOWED_ALARMS, f"{alarms} of {DRAWS} random 120/30 splits of iris reported drifted"


def test_the_reported_cases_are_not_drift_the_iris_test_split_and_30_rows_of_its_training_table():
    train, test = iris_tables()
    assert drifted(train, test) == []
    samples = [train.sample(n=30, random_state=seed) for seed in range(20)]
    assert [drifted(train, sample) for sample in samples] == [[]] * 20


def test_a_feature_shifted_by_one_standard_deviation_is_flagged_in_nearly_every_batch_of_300_rows():
    draws = 50
    verdicts = [drifted(REFERENCE, population(300, seed, shift=1.0)) for seed in range(1, draws + 1)]
    assert sum("normal" in features for features in verdicts) >= 0.95 * draws
    # The other features raise false alarms no more often than undrifted batches do.
    others = sum(any(feature != "normal" for feature in features) for features in verdicts)
    assert others <= binom.ppf(0.99, draws, ALPHA)


def test_small_samples_are_tested_and_large_ones_must_also_move_by_a_distance():
    small = compare(REFERENCE, population(30, seed=1), FEATURES, PARAMS)
    assert [item.test for item in small] == ["ks", "ks", "ks", "chi2", "z"]
    assert [item.distance for item in small] == [None] * 5
    assert all(item.threshold == pytest.approx(ALPHA / 5) for item in small)
    assert re.fullmatch(
        r"numeric, 30 rows in the smaller sample \(< 1000\): Kolmogorov-Smirnov p=\S+ ≥ 0\.01 "
        r"\(0\.05 / 5 tests, Bonferroni\)",
        small[0].reason,
    )
    assert small[3].reason.startswith("categorical (3 values), 30 rows in the smaller sample (< 1000): chi-squared p=")
    assert small[4].reason.startswith("categorical (2 values), 30 rows in the smaller sample (< 1000): two-proportion")

    large = compare(REFERENCE, population(3000, seed=1), FEATURES, PARAMS)
    assert [item.test for item in large] == ["ks", "ks", "ks", "chi2", "z"]
    assert [item.distance for item in large] == ["wasserstein"] * 3 + ["jensen_shannon"] * 2
    assert [item.distance_threshold for item in large] == [0.1] * 5
    assert re.fullmatch(
        r"numeric, 3000 rows in the smaller sample \(≥ 1000\): Kolmogorov-Smirnov p=\S+ ≥ 0\.01 "
        r"\(0\.05 / 5 tests, Bonferroni\) and Wasserstein distance / reference std \S+ < 0\.1",
        large[0].reason,
    )
    shifted = compare(REFERENCE, population(3000, seed=1, shift=1.0), FEATURES, PARAMS)[0]
    assert shifted.drifted and re.search(
        r"p=\S+ < 0\.01 .* and Wasserstein distance / reference std 1\.\d+ ≥ 0\.1$", shifted.reason
    )


def test_the_smaller_sample_decides_whether_a_distance_counts():
    # A small reference and a large batch: the 300 rows decide, so no distance.
    assert {item.distance for item in compare(population(300, 1), REFERENCE, FEATURES, PARAMS)} == {None}
    # Missing values leave `normal` 500 rows in the batch: it alone is judged by its test only.
    batch = population(3000, seed=2)
    batch.loc[500:, "normal"] = np.nan
    missing, normal, *others = compare(REFERENCE, batch, FEATURES, PARAMS)
    assert (normal.rows, normal.distance) == (500, None)
    assert all(item.distance is not None for item in others)
    assert (missing.feature, missing.kind, missing.drifted) == ("normal (missing)", "missing", True)


def test_a_shifted_mean_and_a_new_category_drift():
    batch = population(300, seed=1, shift=1.0).assign(colour="purple")
    normal, _, _, colour, _ = compare(REFERENCE, batch, FEATURES, PARAMS)
    assert normal.drifted and normal.p_value < 1e-10 and normal.new_mean > normal.reference_mean
    assert colour.drifted and colour.test == "chi2" and colour.reason.startswith("categorical (4 values)")


def test_the_z_test_is_the_square_root_of_chi_squared_on_the_two_by_two_table():
    counts = np.array([[80, 20], [30, 20]])
    z, p_value = two_proportion_z_test(counts)
    statistic, expected_p = chi2_contingency(counts, correction=False)[:2]
    assert z**2 == pytest.approx(statistic) and p_value == pytest.approx(expected_p)


def test_an_integer_category_read_back_as_float_is_the_same_category():
    reference = pd.DataFrame({"rooms": np.tile([1, 2, 3], 100)})
    new = pd.DataFrame({"rooms": [1.0, 2.0, 3.0, np.nan] * 25})  # a CSV column with a gap reads as float
    missing, rooms = compare(reference, new, ["rooms"], PARAMS)
    assert (rooms.kind, rooms.test, rooms.statistic, rooms.drifted) == ("categorical", "chi2", 0.0, False)
    assert missing.drifted  # none missing in the reference, a quarter in the batch


def test_the_share_of_missing_values_is_compared_where_either_sample_has_one():
    generator = np.random.default_rng(3)
    reference = pd.DataFrame({"age": np.where(generator.random(2000) < 0.1, np.nan, generator.normal(40, 10, 2000))})
    same = pd.DataFrame({"age": np.where(generator.random(500) < 0.1, np.nan, generator.normal(40, 10, 500))})
    emptier = pd.DataFrame({"age": np.where(generator.random(500) < 0.4, np.nan, generator.normal(40, 10, 500))})
    assert [item.drifted for item in compare(reference, same, ["age"], PARAMS)] == [False, False]
    missing, age = compare(reference, emptier, ["age"], PARAMS)
    assert missing.drifted and not age.drifted  # the values did not move; their share did
    assert missing.reason.startswith("missing share 11.1% in the reference, 40.2% in the batch")
    assert [item.kind for item in compare(reference.fillna(40), reference.fillna(40), ["age"], PARAMS)] == ["numeric"]


def test_dates_are_compared_as_days_and_a_batch_sends_them_as_text():
    reference = pd.DataFrame({"booked": pd.date_range("2024-01-01", periods=365, freq="D")})
    later = pd.DataFrame({"booked": [str(day.date()) for day in pd.date_range("2025-01-01", periods=200, freq="D")]})
    [booked] = compare(reference, later, ["booked"], PARAMS)
    assert (booked.kind, booked.test, booked.drifted) == ("numeric", "ks", True)


def test_booleans_stored_as_one_and_zero_are_a_category():
    reference = pd.DataFrame({"alone": [1.0, 0.0] * 150})
    [alone] = compare(reference, pd.DataFrame({"alone": [True, False] * 50}), ["alone"], PARAMS)
    assert (alone.kind, alone.test, alone.drifted) == ("categorical", "z", False)


def test_a_missing_feature_is_named():
    with pytest.raises(ValueError, match="the new batch lacks column 'normal'"):
        compare(REFERENCE, population(30, 1).drop(columns=["normal"]), FEATURES, PARAMS)


def test_empty_tables_and_an_empty_reference_column_are_refused_an_empty_batch_column_drifted():
    with pytest.raises(ValueError, match="both need rows"):
        compare(REFERENCE, population(30, 1).iloc[:0], FEATURES, PARAMS)
    with pytest.raises(ValueError, match="column 'skewed' has no values in the reference, only missing ones"):
        compare(REFERENCE.assign(skewed=np.nan), population(30, 1), FEATURES, PARAMS)
    results = compare(REFERENCE, population(30, 1).assign(skewed=np.nan), FEATURES, PARAMS)
    assert [item.feature for item in results if item.drifted] == ["skewed (missing)"]
    with pytest.raises(ValueError, match="column 'normal': 'abc' in row 1 is not a number"):
        compare(REFERENCE, population(30, 1).assign(normal="abc"), FEATURES, PARAMS)


def test_the_html_page_shows_each_reason_and_fetches_nothing():
    results = compare(REFERENCE, population(30, 1, shift=1.0), FEATURES, PARAMS)
    document = {
        "reference": "reference <table>",
        "reference_rows": 5000,
        "new": "new.csv",
        "new_rows": 30,
        "method": "the method",
        "drifted": [item.feature for item in results if item.drifted],
        "features": [vars(item) for item in results],
    }
    page = report_html(document)
    assert "reference &lt;table&gt;" in page
    assert all(item.reason.replace("<", "&lt;") in page for item in results)
    assert "<script" not in page and "src=" not in page and "href=" not in page


def test_drift_refuses_a_batch_that_is_its_own_report():
    """The report files are written at the end: a NEW that is one of them would be overwritten."""
    completed = subprocess.run(
        [sys.executable, "-m", "src.service.drift", "--new", "reports/drift.json"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 1
    assert completed.stderr.splitlines() == [
        "error: drift: the report reports/drift.json is the NEW file reports/drift.json; "
        "copy the batch elsewhere and name the copy"
    ]
