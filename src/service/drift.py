"""`make drift NEW=... [REF=<tag or file>]`: has a new batch drifted from the data the model learnt from?

Each feature of the model is compared between the reference (by default the
training table of the champion, else the training table at a git tag, or any
CSV or Parquet file) and the new batch: the Kolmogorov-Smirnov test for a
numeric feature, the chi-squared test for a categorical one (few distinct
values), and the population stability index (PSI) for both. A feature is
drifted when its test's p-value is below the threshold or its PSI above it,
all in params.yaml's `drift` section. The report is written as
reports/drift.json and as reports/drift.html (one self-contained page), logged
to MLflow as a run of its own, and shown on the docs site.
"""

from __future__ import annotations

import argparse
import html
import io
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.config import PATHS, Config, DriftParams
from src.utils.cli import fail, parse_config
from src.utils.io import atomic_path, write_json
from src.utils.mlflow_run import ROLE_TAG, describe_tracking_error, import_mlflow

logger = logging.getLogger(__name__)

REPORT_JSON = Path("reports/drift.json")
REPORT_HTML = Path("reports/drift.html")
PSI_FLOOR = 1e-4  # an empty bin counts as this share, so the PSI stays finite


@dataclass
class FeatureDrift:
    """The verdict on one feature."""

    feature: str
    kind: str  # numeric | categorical
    test: str  # ks | chi2
    statistic: float
    p_value: float
    psi: float
    drifted: bool
    reference_mean: float | None
    new_mean: float | None


def is_categorical(values: pd.Series, params: DriftParams) -> bool:
    """Text, booleans, and integers with at most `max_categories` distinct values are categories."""
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return True
    return pd.api.types.is_integer_dtype(values) and values.nunique() <= params.max_categories


def population_stability_index(reference: np.ndarray, new: np.ndarray) -> float:
    """PSI of two histograms over the same bins: sum((new - ref) * ln(new / ref)) of the bin shares."""
    reference_share = np.maximum(reference / max(reference.sum(), 1), PSI_FLOOR)
    new_share = np.maximum(new / max(new.sum(), 1), PSI_FLOOR)
    return float(np.sum((new_share - reference_share) * np.log(new_share / reference_share)))


def numeric_drift(name: str, reference: pd.Series, new: pd.Series, params: DriftParams) -> FeatureDrift:
    """Kolmogorov-Smirnov test and PSI over the reference's quantile bins."""
    from scipy.stats import ks_2samp

    result = ks_2samp(reference, new)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, params.bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    psi = population_stability_index(np.histogram(reference, edges)[0], np.histogram(new, edges)[0])
    drifted = bool(result.pvalue < params.ks_pvalue or psi > params.psi)
    return FeatureDrift(
        name, "numeric", "ks", float(result.statistic), float(result.pvalue), psi, drifted,
        float(reference.mean()), float(new.mean()),
    )  # fmt: skip


def categorical_drift(name: str, reference: pd.Series, new: pd.Series, params: DriftParams) -> FeatureDrift:
    """Chi-squared test of the category counts, and PSI over the categories."""
    from scipy.stats import chi2_contingency

    categories = sorted(set(reference.astype(str)) | set(new.astype(str)))
    counts = np.array(
        [
            reference.astype(str).value_counts().reindex(categories, fill_value=0).to_numpy(),
            new.astype(str).value_counts().reindex(categories, fill_value=0).to_numpy(),
        ]
    )
    if len(categories) < 2:
        statistic, p_value = 0.0, 1.0
    else:
        statistic, p_value = (float(value) for value in chi2_contingency(counts)[:2])
    psi = population_stability_index(counts[0], counts[1])
    drifted = bool(p_value < params.chi2_pvalue or psi > params.psi)
    return FeatureDrift(name, "categorical", "chi2", statistic, p_value, psi, drifted, None, None)


def compare(reference: pd.DataFrame, new: pd.DataFrame, features: list[str], params: DriftParams) -> list[FeatureDrift]:
    """Compare every feature of `features` between the two tables.

    Raises:
        ValueError: A feature is missing from the new batch, or either table is empty.
    """
    missing = [name for name in features if name not in new.columns]
    if missing:
        raise ValueError(f"the new batch lacks column {missing[0]!r}; it needs {', '.join(features)}")
    if reference.empty or new.empty:
        raise ValueError("the reference and the new batch both need rows")
    results = []
    for name in features:
        reference_values, new_values = reference[name].dropna(), new[name].dropna()
        if is_categorical(reference_values, params):
            results.append(categorical_drift(name, reference_values, new_values, params))
        else:
            results.append(numeric_drift(name, reference_values.astype(float), new_values.astype(float), params))
    return results


def report_html(document: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (inline style, no scripts, nothing fetched)."""
    rows = "".join(
        f"<tr class='{'drifted' if item['drifted'] else 'stable'}'><td>{html.escape(item['feature'])}</td>"
        f"<td>{item['kind']}</td><td>{item['test']}</td><td>{item['statistic']:.4f}</td>"
        f"<td>{item['p_value']:.4g}</td><td>{item['psi']:.4f}</td>"
        f"<td>{'drifted' if item['drifted'] else 'not drifted'}</td></tr>"
        for item in document["features"]
    )
    thresholds = html.escape(", ".join(f"{key} {value}" for key, value in document["thresholds"].items()))
    verdict = (
        f"{len(document['drifted'])} of {len(document['features'])} features drifted: "
        + html.escape(", ".join(document["drifted"]))
        if document["drifted"]
        else f"no drift in {len(document['features'])} features"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }} td:first-child {{ text-align: left; }}
tr.drifted {{ background: #fce8e6; }} tr.stable {{ background: #e6f4ea; }}
</style></head><body>
<h1>Drift report</h1>
<p><strong>{verdict}</strong></p>
<p>Reference: {html.escape(document["reference"])} ({document["reference_rows"]} rows).
New batch: {html.escape(document["new"])} ({document["new_rows"]} rows).</p>
<p>Thresholds: {thresholds}.</p>
<table><tr><th>feature</th><th>kind</th><th>test</th><th>statistic</th><th>p-value</th><th>PSI</th><th>verdict</th></tr>
{rows}</table>
</body></html>
"""


def read_any(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame, read as data_load reads a user's file.

    Raises:
        FileNotFoundError: The file is not there.
        ValueError: It is not a readable table (one line naming the file).
    """
    from src.stages.data_load import parse_table

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return parse_table(path.read_bytes(), str(path))


def reference_table(ref: str, config: Config) -> tuple[pd.DataFrame, str]:
    """The reference table and its description: a file, the raw table at a git tag, or the champion's raw table.

    The champion takes raw rows (its featurize step is inside it), so its
    reference is the raw table its pipeline run started from.
    """
    from src.service.registry import CHAMPION, RAW_DATA_HASH_TAG
    from src.utils.data_versions import VersionError, cached_output
    from src.utils.io import read_at_revision

    if ref and Path(ref).suffix.lower() in (".csv", ".parquet"):
        return read_any(Path(ref)), ref
    if ref:
        content = read_at_revision(PATHS.raw, ref)
        return pd.read_parquet(io.BytesIO(content)), f"{PATHS.raw} at {ref}"
    client = import_mlflow().MlflowClient()
    version = client.get_model_version_by_alias(config.registry.model_name, CHAMPION)
    described = f"the raw table of {config.registry.model_name} version {version.version} ({CHAMPION})"
    try:
        return pd.read_parquet(cached_output(version.tags.get(RAW_DATA_HASH_TAG, ""), PATHS.raw)), described
    except VersionError as error:
        raise FileNotFoundError(f"{described}: {error}, or give REF=<tag or file>") from None


def log_report(document: dict[str, Any], results: list[FeatureDrift], config: Config) -> str:
    """Log the report as an MLflow run of its own: per-feature metrics, the verdict, both files."""
    client = import_mlflow().MlflowClient()
    from src.utils.mlflow_run import experiment_id_for

    experiment_id = experiment_id_for(client, config.mlflow.experiment_name)
    tags = {ROLE_TAG: "drift", "drift.reference": document["reference"], "drift.new": document["new"]}
    run = client.create_run(experiment_id, run_name="drift", tags=tags)
    from mlflow.entities import Metric

    timestamp = run.info.start_time
    metrics = [Metric("drifted_features", len(document["drifted"]), timestamp, 0)]
    for item in results:
        metrics += [
            Metric(f"psi.{item.feature}", item.psi, timestamp, 0),
            Metric(f"p_value.{item.feature}", item.p_value, timestamp, 0),
        ]
    client.log_batch(run.info.run_id, metrics=metrics)
    client.log_artifact(run.info.run_id, str(REPORT_JSON))
    client.log_artifact(run.info.run_id, str(REPORT_HTML))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def main(argv: list[str] | None = None) -> None:
    """`make drift NEW=... [REF=...]`; exits 0 whether or not there is drift, 1 when it cannot compare."""
    parser = argparse.ArgumentParser(prog="python -m src.service.drift", description=__doc__)
    parser.add_argument("--new", type=Path, required=True, help="the new batch, CSV or Parquet")
    parser.add_argument("--ref", default="", help="a git tag or a file (default: the champion's training table)")
    arguments, config = parse_config(parser, argv)
    try:
        new = read_any(arguments.new)
        reference, described = reference_table(arguments.ref, config)
        features = [column for column in reference.columns if column != config.data_load.target]
        results = compare(reference, new, features, config.drift)
    except (FileNotFoundError, ValueError) as error:
        fail(f"drift: {error}")
    except Exception as error:
        fail(f"drift: {describe_tracking_error(error)}")
    document = {
        "reference": described,
        "reference_rows": len(reference),
        "new": str(arguments.new),
        "new_rows": len(new),
        "thresholds": config.drift.model_dump(),
        "drifted": [item.feature for item in results if item.drifted],
        "features": [asdict(item) for item in results],
    }
    write_json(document, REPORT_JSON)
    with atomic_path(REPORT_HTML) as temporary:
        temporary.write_text(report_html(document), encoding="utf-8")
    try:
        run_id = log_report(document, results, config)
    except Exception as error:
        fail(f"drift: wrote {REPORT_JSON} and {REPORT_HTML} but cannot log them: {describe_tracking_error(error)}")
    verdict = f"drifted: {', '.join(document['drifted'])}" if document["drifted"] else "no feature drifted"
    sys.stdout.write(f"{verdict} ({len(results)} features; {REPORT_HTML}, MLflow run {run_id})\n")


if __name__ == "__main__":
    main()
