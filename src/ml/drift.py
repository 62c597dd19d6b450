"""Has a batch drifted from a reference? The statistics behind `make drift`, column by column.

Each feature's values are compared (numbers, categories, dates as numbers), and
so is its share of missing values wherever either sample has some: a column that
starts arriving empty has drifted as surely as one whose values moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from src.config import DriftParams

# Evidently's floor: a constant reference column still gives a finite distance.
STD_FLOOR = 1e-3

# What each test and distance is called in the report's reasons.
NAMES = {
    "ks": "Kolmogorov-Smirnov",
    "chi2": "chi-squared",
    "z": "two-proportion z-test",
    "wasserstein": "Wasserstein distance / reference std",
    "jensen_shannon": "Jensen-Shannon distance",
}

MISSING = "missing"
"""The kind of a feature's missing-value share, compared beside its values (`<feature> (missing)`)."""


@dataclass(frozen=True)
class Measurement:
    """What was measured of one feature, before the verdict."""

    feature: str
    kind: str  # numeric | categorical | missing (the share of missing values)
    values: int | None  # distinct values of a categorical feature in both samples
    rows: int  # the smaller of the two samples
    test: str  # ks | chi2 | z
    statistic: float  # KS D, chi-squared or z
    p_value: float
    distance: str | None  # wasserstein | jensen_shannon on large samples, else None
    distance_value: float | None
    reference_mean: float | None
    new_mean: float | None


@dataclass
class FeatureDrift:
    """The verdict on one feature, and what decided it."""

    feature: str
    kind: str  # numeric | categorical | missing (the share of missing values)
    rows: int  # the smaller of the two samples, which decides whether a distance counts
    test: str  # ks | chi2 | z
    statistic: float  # the test's statistic: KS D, chi-squared or z
    p_value: float
    threshold: float  # what the p-value is compared with: drift.p_value / tests (Bonferroni)
    distance: str | None  # wasserstein | jensen_shannon from drift.large_sample rows on, else None
    distance_value: float | None
    distance_threshold: float | None  # drift.numeric_distance or drift.categorical_distance
    drifted: bool
    reason: str  # one line: which test and distance, why those, and how they compared
    reference_mean: float | None
    new_mean: float | None


def is_categorical(values: pd.Series, params: DriftParams) -> bool:
    """Whether a column is categorical.

    Args:
        values: The column in the reference, missing values dropped.
        params: The `drift` section of params.yaml.

    Returns:
        True for text and booleans (also as 1.0 and 0.0), and for whole numbers
        with at most `params.max_categories` distinct values.
    """
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return True
    numbers = values.to_numpy(dtype="float64")
    return bool(np.array_equal(numbers, np.round(numbers))) and values.nunique() <= params.max_categories


def is_large(reference_rows: int, new_rows: int, params: DriftParams) -> bool:
    """Whether a feature's samples are large enough for a distance to count.

    The smaller sample decides, not the reference alone as in Evidently. A
    test's p-value already accounts for both sizes; a distance does not, and
    its sampling noise is set by the smaller sample: 30 new rows against a
    reference of 100,000 move the Wasserstein distance by about a fifth of a
    standard deviation by chance alone, twice its default threshold.

    Args:
        reference_rows: Values of the feature in the reference, missing ones dropped.
        new_rows: Values of the feature in the new batch, missing ones dropped.
        params: The `drift` section of params.yaml.

    Returns:
        True when the smaller sample has at least `params.large_sample` rows.
    """
    return min(reference_rows, new_rows) >= params.large_sample


def measure_numeric(name: str, reference: np.ndarray, new: np.ndarray, params: DriftParams) -> Measurement:
    """Compare a numeric feature: the Kolmogorov-Smirnov test, and on large samples the Wasserstein distance.

    Args:
        name: The feature.
        reference: Its values in the reference as floats, missing ones dropped.
        new: Its values in the new batch as floats, missing ones dropped.
        params: The `drift` section of params.yaml.

    Returns:
        The two-sample Kolmogorov-Smirnov statistic and p-value; when
        `is_large`, also the Wasserstein distance divided by the reference's
        standard deviation.
    """
    from scipy.stats import ks_2samp, wasserstein_distance

    large = is_large(len(reference), len(new), params)
    # The exact p-value costs rows x rows; with a thousand rows in each sample the asymptotic one is as good.
    result = ks_2samp(reference, new, method="asymp" if large else "auto")
    distance = None
    if large:
        distance = float(wasserstein_distance(reference, new)) / max(float(np.std(reference)), STD_FLOOR)
    return Measurement(
        name, "numeric", None, min(len(reference), len(new)), "ks", float(result.statistic), float(result.pvalue),
        "wasserstein" if large else None, distance, float(np.mean(reference)), float(np.mean(new)),
    )  # fmt: skip


def two_proportion_z_test(counts: np.ndarray) -> tuple[float, float]:
    """The two-sided z-test that two samples share one proportion (the pooled two-proportion test).

    Args:
        counts: A 2 x 2 table: one row per sample, one column per value.

    Returns:
        The z statistic and its two-sided p-value.
    """
    from scipy.stats import norm

    sizes = counts.sum(axis=1)
    shares = counts[:, 0] / sizes
    pooled = counts[:, 0].sum() / sizes.sum()
    z = (shares[1] - shares[0]) / np.sqrt(pooled * (1 - pooled) * (1 / sizes[0] + 1 / sizes[1]))
    return float(z), float(2 * norm.sf(abs(z)))


def measure_categorical(name: str, reference: pd.Series, new: pd.Series, params: DriftParams) -> Measurement:
    """Compare a categorical feature: chi-squared or the z-test, and on large samples the Jensen-Shannon distance.

    Args:
        name: The feature.
        reference: Its values in the reference, missing ones dropped.
        new: Its values in the new batch, missing ones dropped.
        params: The `drift` section of params.yaml.

    Returns:
        With two distinct values (in both samples together) the two-proportion
        z-test, with more the chi-squared test of independence on the category
        counts, with one value chi-squared 0 and p-value 1 (nothing moved);
        when `is_large`, also the Jensen-Shannon distance (base 2) of the
        category shares.
    """
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    if not (pd.api.types.is_numeric_dtype(reference) and pd.api.types.is_numeric_dtype(new)):
        # Compared as text, so 3 read from a CSV is the category "3" of a text column.
        reference, new = reference.astype(str), new.astype(str)
    reference_counts, new_counts = reference.value_counts(), new.value_counts()
    categories = reference_counts.index.union(new_counts.index)
    counts = np.array(
        [
            reference_counts.reindex(categories, fill_value=0).to_numpy(),
            new_counts.reindex(categories, fill_value=0).to_numpy(),
        ]
    )
    if len(categories) == 2:
        test, (statistic, p_value) = "z", two_proportion_z_test(counts)
    elif len(categories) < 2:
        test, statistic, p_value = "chi2", 0.0, 1.0
    else:
        test, (statistic, p_value) = "chi2", (float(value) for value in chi2_contingency(counts)[:2])
    large = is_large(len(reference), len(new), params)
    distance = None
    if large:
        distance = float(jensenshannon(counts[0] / counts[0].sum(), counts[1] / counts[1].sum(), base=2))
    return Measurement(
        name, "categorical", len(categories), min(len(reference), len(new)), test, statistic, p_value,
        "jensen_shannon" if large else None, distance, None, None,
    )  # fmt: skip


def measure_missing(name: str, reference: pd.Series, new: pd.Series) -> Measurement:
    """Compare a feature's share of missing values with the two-proportion z-test (`<name> (missing)`).

    Args:
        name: The feature.
        reference: Its values in the reference, missing ones included.
        new: Its values in the new batch, missing ones included.
    """
    counts = np.array([[reference.isna().sum(), reference.notna().sum()], [new.isna().sum(), new.notna().sum()]])
    statistic, p_value = two_proportion_z_test(counts)
    shares = counts[:, 0] / counts.sum(axis=1)
    return Measurement(
        f"{name} ({MISSING})", MISSING, None, min(len(reference), len(new)), "z", statistic, p_value,
        None, None, float(shares[0]), float(shares[1]),
    )  # fmt: skip


def decide(measurements: list[Measurement], params: DriftParams) -> list[FeatureDrift]:
    """Turn the measurements of one batch into verdicts whose false-alarm rate is at most `params.p_value`.

    With k tests (a feature's values, and its missing share where there is
    one) each at level a, a batch from the reference's distribution has some
    feature flagged with chance 1 - (1 - a)^k (40% for ten tests at 0.05). Each
    p-value is therefore compared with `params.p_value` / k (Bonferroni), which
    bounds the chance that any feature is flagged by `params.p_value`, whatever
    the dependence between the tests. On large samples a feature must in addition have moved by its
    distance threshold: there a test finds differences too small to matter.
    The distance alone would not do: at a thousand rows its sampling noise
    still crosses the threshold for a few percent of undrifted features, and
    the Jensen-Shannon distance of a column with a hundred categories lies
    above 0.1 on undrifted samples of 2000 rows.

    Args:
        measurements: One per feature, from `measure_numeric` or `measure_categorical`.
        params: The `drift` section of params.yaml.

    Returns:
        One verdict per measurement, in the same order, each with a one-line reason.
    """
    threshold = params.p_value / max(len(measurements), 1)
    correction = f"{params.p_value:g} / {len(measurements)} tests, Bonferroni" if len(measurements) > 1 else "one test"
    verdicts = []
    for item in measurements:
        significant = item.p_value < threshold
        kind = item.kind if item.values is None else f"{item.kind} ({item.values} values)"
        if item.kind == MISSING:
            kind = f"missing share {item.reference_mean:.1%} in the reference, {item.new_mean:.1%} in the batch"
        size = f"{item.rows} rows in the smaller sample ({'<' if item.distance is None else '≥'} {params.large_sample})"
        reason = (
            f"{kind}, {size}: "
            f"{NAMES[item.test]} p={item.p_value:.3g} {'<' if significant else '≥'} {threshold:.3g} ({correction})"
        )
        distance_threshold = None
        drifted = significant
        if item.distance is not None and item.distance_value is not None:
            distance_threshold = params.numeric_distance if item.kind == "numeric" else params.categorical_distance
            far = item.distance_value >= distance_threshold
            drifted = significant and far
            link = "and" if far == significant else "but"
            reason += (
                f" {link} {NAMES[item.distance]} {item.distance_value:.3g} {'≥' if far else '<'} {distance_threshold:g}"
            )
            if significant != far:
                reason += ", too small to matter" if significant else ", within sampling noise"
        verdicts.append(
            FeatureDrift(
                feature=item.feature,
                kind=item.kind,
                rows=item.rows,
                test=item.test,
                statistic=item.statistic,
                p_value=item.p_value,
                threshold=threshold,
                distance=item.distance,
                distance_value=item.distance_value,
                distance_threshold=distance_threshold,
                drifted=bool(drifted),
                reason=reason,
                reference_mean=item.reference_mean,
                new_mean=item.new_mean,
            )
        )
    return verdicts


def compare(reference: pd.DataFrame, new: pd.DataFrame, features: list[str], params: DriftParams) -> list[FeatureDrift]:
    """Compare every feature of `features` between the two tables: its values, and its share of missing values.

    The new batch's columns are read as the reference's kinds (the model's): a
    number sent as text is a number, ISO text is a date; dates are compared as
    days. The share of missing values is compared wherever either sample has one.

    Args:
        reference: The data the model learnt from.
        new: The new batch; it needs every column of `features`.
        features: The columns to compare.
        params: The `drift` section of params.yaml.

    Returns:
        One verdict per feature (see `decide`), and one per feature's missing share
        where there is one; the batch has drifted when any has.

    Raises:
        ValueError: A feature is missing from the new batch, either table is empty,
            a value of the new batch is not of its column's kind, or a feature has
            no values (all missing) in the reference.
    """
    from src.ml.features import as_kind, column_kind
    from src.ml.tables import DATE

    missing = [name for name in features if name not in new.columns]
    if missing:
        raise ValueError(f"the new batch lacks column {missing[0]!r}; it needs {', '.join(features)}")
    if reference.empty or new.empty:
        raise ValueError("the reference and the new batch both need rows")
    measurements = []
    for name in features:
        kind = column_kind(reference[name])
        reference_column, new_column = reference[name], as_kind(new[name], kind, name)
        if kind == DATE:  # dates as days, compared as numbers
            reference_column, new_column = _days(reference_column), _days(new_column)
        if reference_column.isna().any() or new_column.isna().any():
            measurements.append(measure_missing(name, reference_column, new_column))
        reference_values, new_values = reference_column.dropna(), new_column.dropna()
        if reference_values.empty:
            raise ValueError(f"column {name!r} has no values in the reference, only missing ones")
        if new_values.empty:  # its missing share has drifted; there are no values to compare
            continue
        if is_categorical(reference_values, params):
            measurements.append(measure_categorical(name, reference_values, new_values, params))
        else:
            reference_floats, new_floats = reference_values.to_numpy(float), new_values.to_numpy(float)
            measurements.append(measure_numeric(name, reference_floats, new_floats, params))
    return decide(measurements, params)


def _days(dates: pd.Series) -> pd.Series:
    """Dates as days since 1970 (empty stays empty)."""
    return (dates - pd.Timestamp("1970-01-01")).dt.total_seconds() / 86_400


def method_summary(results: list[FeatureDrift], params: DriftParams) -> str:
    """One paragraph for the report: how the features were judged and what a verdict of drift means.

    Args:
        results: The verdicts of one batch, from `compare`.
        params: The `drift` section of params.yaml.

    Returns:
        Plain text naming the tests, the correction, the false-alarm rate and the distances.
    """
    large = sum(item.distance is not None for item in results)
    shares = sum(item.kind == MISSING for item in results)
    tested = f"{len(results) - shares} features" + (f" and {shares} shares of missing values" if shares else "")
    summary = (
        f"Each of the {tested} was tested (Kolmogorov-Smirnov for numbers and dates, chi-squared or the "
        f"two-proportion z-test for categories and missing shares) and its p-value compared with "
        f"{params.p_value:g} / {len(results)} (Bonferroni): a batch drawn from the reference's distribution is "
        f"reported drifted at most {params.p_value * 100:g}% of the time."
    )
    if large:
        summary += (
            f" {large} feature(s) with at least {params.large_sample} rows in both samples also had to move by a "
            f"distance to count: a Wasserstein distance of {params.numeric_distance:g} reference standard deviations "
            f"(numbers) or a Jensen-Shannon distance of {params.categorical_distance:g} between the category shares."
        )
    return summary + " The batch has drifted when any feature has."
