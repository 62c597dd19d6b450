"""`make drift NEW=... [REF=<tag or file>]`: has a new batch drifted from the data the model learnt from?

Each column the model takes is compared between the reference (by default the
raw table the champion's pipeline run started from, else the raw table at a git
tag, or any CSV or Parquet file) and the new batch, with the tests Evidently's data drift
report chooses by default: two-sample Kolmogorov-Smirnov for a numeric feature
(dates as days), chi-squared on the category counts for a categorical one (text,
booleans, a few whole numbers), the two-proportion z-test for one with two values
and for the share of missing values, wherever either sample has one (the model's
id columns are not compared). Every p-value is compared with `drift.p_value`
divided by the number of tests (Bonferroni), so a batch drawn from the
reference's distribution is reported drifted at most that often. Once the
smaller of the two samples has `drift.large_sample` rows, where a test finds
differences too small to matter, a feature must also have moved by the
distance Evidently uses alone there: the Wasserstein distance in reference
standard deviations (numeric), the Jensen-Shannon distance of the category
shares (categorical). The batch has drifted when any feature has.

The report says which test and distance judged each feature and why; it is
written as reports/drift.json and as reports/drift.html (one self-contained
page), logged to MLflow as a run of its own, and shown on the docs site.
"""

from __future__ import annotations

import argparse
import html
import io
import re
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from src.cli import fail, parse_config
from src.config import Config
from src.io import atomic_path, write_json
from src.ml.drift import FeatureDrift, compare, method_summary
from src.ml.sources import read_any
from src.paths import PATHS
from src.tracking.client import describe_tracking_error, import_mlflow
from src.tracking.tags import ROLE_TAG
from src.versions.workspace import check_output_path


def report_html(document: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (inline style, no scripts, nothing fetched).

    Args:
        document: The report as written to reports/drift.json.

    Returns:
        The page: the verdict, the method, and one row per feature with its test, distance and reason.
    """

    def number(value: float | None) -> str:
        return "—" if value is None else f"{value:.4g}"

    rows = "".join(
        f"<tr class='{'drifted' if item['drifted'] else 'stable'}'><td>{html.escape(item['feature'])}</td>"
        f"<td>{item['kind']}</td><td>{item['rows']}</td><td>{item['test']}</td><td>{number(item['statistic'])}</td>"
        f"<td>{number(item['p_value'])}</td><td>{number(item['threshold'])}</td><td>{item['distance'] or '—'}</td>"
        f"<td>{number(item['distance_value'])}</td><td>{number(item['distance_threshold'])}</td>"
        f"<td>{'drifted' if item['drifted'] else 'not drifted'}</td><td>{html.escape(item['reason'])}</td></tr>"
        for item in document["features"]
    )
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
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
td:first-child, td:last-child {{ text-align: left; }}
tr.drifted {{ background: #fce8e6; }} tr.stable {{ background: #e6f4ea; }}
</style></head><body>
<h1>Drift report</h1>
<p><strong>{verdict}</strong></p>
<p>Reference: {html.escape(document["reference"])} ({document["reference_rows"]} rows).
New batch: {html.escape(document["new"])} ({document["new_rows"]} rows).</p>
<p>{html.escape(document["method"])}</p>
<table><tr><th>feature</th><th>kind</th><th>rows</th><th>test</th><th>statistic</th><th>p-value</th>
<th>below</th><th>distance</th><th>value</th><th>from</th><th>verdict</th><th>reason</th></tr>
{rows}</table>
</body></html>
"""


def reference_table(ref: str, config: Config) -> tuple[pd.DataFrame, str]:
    """The reference table and its description: a file, the raw table at a git tag, or the champion's raw table.

    The champion takes raw rows (its featurize step is inside it), so its
    reference is the raw table its pipeline run started from.
    """
    from src.revisions import read_at_revision
    from src.tracking.tags import CHAMPION, RAW_DATA_HASH_TAG
    from src.versions.workspace import VersionError, cached_output

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


def metric_name(feature: str) -> str:
    """A feature's name as MLflow takes it in a metric's name: `age (missing)` becomes `age.missing`."""
    return re.sub(r"[^\w\-. :/]", "_", re.sub(r" \((\w+)\)$", r".\1", feature))


def log_report(document: dict[str, Any], results: list[FeatureDrift], config: Config) -> str:
    """Log the report as an MLflow run of its own: per-feature metrics, the verdict, both files."""
    client = import_mlflow().MlflowClient()
    from src.tracking.client import experiment_id_for

    experiment_id = experiment_id_for(client, config.mlflow.experiment_name)
    tags = {ROLE_TAG: "drift", "drift.reference": document["reference"], "drift.new": document["new"]}
    run = client.create_run(experiment_id, run_name="drift", tags=tags)
    from mlflow.entities import Metric

    timestamp = run.info.start_time
    metrics = [Metric("drifted_features", len(document["drifted"]), timestamp, 0)]
    for item in results:
        name = metric_name(item.feature)
        metrics.append(Metric(f"p_value.{name}", item.p_value, timestamp, 0))
        if item.distance_value is not None:
            metrics.append(Metric(f"distance.{name}", item.distance_value, timestamp, 0))
    client.log_batch(run.info.run_id, metrics=metrics)
    client.log_artifact(run.info.run_id, str(PATHS.drift_json))
    client.log_artifact(run.info.run_id, str(PATHS.drift_html))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def main(argv: list[str] | None = None) -> None:
    """`make drift NEW=... [REF=...]`; exits 0 whether or not there is drift, 1 when it cannot compare."""
    parser = argparse.ArgumentParser(prog="python -m src.service.drift", description=__doc__)
    parser.add_argument("--new", type=Path, required=True, help="the new batch, CSV or Parquet")
    parser.add_argument("--ref", default="", help="a git tag or a file (default: the champion's raw table)")
    arguments, config = parse_config(parser, argv)
    inputs = {"NEW": arguments.new} | ({"REF": Path(arguments.ref)} if arguments.ref else {})
    try:
        for report in (PATHS.drift_json, PATHS.drift_html):
            check_output_path(report, inputs, "the report", "copy the batch elsewhere and name the copy")
        new = read_any(arguments.new)
        reference, described = reference_table(arguments.ref, config)
        left_out = [config.data_load.target, *config.data_load.id_columns]
        features = [column for column in reference.columns if column not in left_out]
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
        "params": config.drift.model_dump(),
        "method": method_summary(results, config.drift),
        "drifted": [item.feature for item in results if item.drifted],
        "features": [asdict(item) for item in results],
    }
    write_json(document, PATHS.drift_json)
    with atomic_path(PATHS.drift_html) as temporary:
        temporary.write_text(report_html(document), encoding="utf-8")
    try:
        run_id = log_report(document, results, config)
    except Exception as error:
        written = f"{PATHS.drift_json} and {PATHS.drift_html}"
        fail(f"drift: wrote {written} but cannot log them: {describe_tracking_error(error)}")
    verdict = f"drifted: {', '.join(document['drifted'])}" if document["drifted"] else "no feature drifted"
    sys.stdout.write(f"{verdict} ({len(results)} features; {PATHS.drift_html}, MLflow run {run_id})\n")


if __name__ == "__main__":
    main()
