"""`make bench`: the pipeline's own overhead, measured against the floor.

In a temporary copy of the repository (its own MLflow store and DVC cache, the
same virtualenv), and interleaved so that machine noise spreads evenly, it times:

- **floor**: the same data load, features, split, fit and evaluation in one plain
  Python process, no DVC, no tracking;
- **forced**: `make pipeline FORCE=1`;
- **unchanged**: `make pipeline` with nothing changed (DVC skips every stage);
- **per stage**: wall time, import time (`python -X importtime`) and peak memory
  of each stage process, run as `make pipeline` runs it.

- **batch scoring**: `make predict` on 1,000,000 rows (rows/s and peak memory).

`--scale` does the same on a synthetic dataset of 1,000,000 rows x 20 features
against its own floor. Results go to reports/bench.md and reports/bench.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from src.config import load_config
from src.io import atomic_path
from src.logs import setup_logging
from src.paths import PATHS, PROJECT_ROOT, pipeline_stages
from src.tracking.tags import PARENT_RUN_ENV, RECORDS_ENV
from src.versions.runner import copy_work_tree

logger = logging.getLogger(__name__)

SCALE_ROWS, SCALE_FEATURES = 1_000_000, 20
SCORING_ROWS, QUICK_SCORING_ROWS = 1_000_000, 10_000


def floor(config_path: Path) -> None:
    """Run the pipeline's science in this one process: the floor the pipeline is measured against."""
    from src.ml.features import Featurizer, featurize, with_features
    from src.ml.metrics import evaluate
    from src.ml.models import fit
    from src.ml.split import split_positions
    from src.stages.data_load import load_source

    config = load_config(config_path)
    target = config.data_load.target
    raw, _ = load_source(config.data_load, config.base.random_state)
    features = featurize(raw, config.featurize, target, config.data_load.pixel_max)
    train_rows, test_rows = split_positions(features[target], config.data_split, config.base.random_state)
    estimator, _, _ = fit(features.iloc[train_rows], config.train, target, config.base.random_state)
    featurizer = Featurizer.from_params(config.featurize, config.data_load.pixel_max)
    model = with_features(featurizer.fit(raw.drop(columns=[target]).head(5)), estimator)
    evaluate(model, raw.iloc[test_rows], target)


def measure(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int, str]:
    """Run a command; return its wall seconds, peak resident memory in MB, and stderr.

    Raises:
        RuntimeError: If the command fails.
    """
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read() if process.stderr else ""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}): {stderr.strip()[-300:]}")
    return elapsed, usage.ru_maxrss // 1024, stderr


def import_seconds(importtime_log: str) -> float:
    """Sum the cumulative import time of the top-level imports in `python -X importtime` output."""
    total_us = 0
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|", 2)
            if not name.startswith("  ") and cumulative.strip().isdigit():
                total_us += int(cumulative)
    return total_us / 1e6


def summary(samples: list[float]) -> dict[str, float]:
    """Median, min and max of some timings."""
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


def batch_scoring(root: Path, env: dict[str, str], rows: int) -> dict[str, Any]:
    """Time `make predict` on `rows` rows resampled from the test table, with the model just trained.

    The wall time includes the start-up (imports, loading the model), as a user waits for it.
    """
    import numpy as np
    import pandas as pd

    measure(["make", "--no-print-directory", "promote", "FORCE=1"], root, env)
    test = pd.read_parquet(root / "data/processed/test.parquet").drop(
        columns=[load_config(root / "params.yaml").data_load.target]
    )
    generator = np.random.default_rng(0)
    table = test.sample(n=rows, replace=True, random_state=0).reset_index(drop=True)
    table += generator.normal(0, 0.01, size=table.shape)
    source, output = root / "batch.parquet", root / "scored.parquet"
    table.to_parquet(source, index=False)
    del table
    elapsed, peak, stderr = measure(
        ["make", "--no-print-directory", "predict", f"INPUT={source}", f"OUTPUT={output}"], root, env
    )
    if not output.exists():
        raise RuntimeError(f"make predict failed in the benchmark: {stderr.strip().splitlines()[-1:]}")
    return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed, "peak_mb": peak}


def bench(repeats: int, rows: int | None, warm_up: bool = True, scoring_rows: int = 0) -> dict[str, Any]:
    """Run the benchmark in a temporary copy and return the results.

    Args:
        repeats: How many times each measurement is repeated (interleaved).
        rows: Use the synthetic source with this many rows (None: the template's params).
        warm_up: Run the pipeline once before measuring (the first run creates the store).
        scoring_rows: Also time `make predict` on this many rows (0: not).
    """
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        root = copy_work_tree(Path(scratch) / "repo")
        env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_TRACKING_URI", "MAKE"))}
        env.update(DVC_REMOTE_URL=str(Path(scratch) / "remote"), VENV=str(Path(sys.prefix)))
        params_file = root / "params.yaml"
        if rows is not None:
            params = yaml.safe_load(params_file.read_text())
            params["data_load"].update(source="synthetic", synthetic_rows=rows, synthetic_features=SCALE_FEATURES)
            params["featurize"]["pairwise_products"] = False
            params["train"].update(estimator="logistic_regression", cv_folds=3)
            params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        python = str(Path(sys.prefix) / "bin" / "python")
        make = ["make", "--no-print-directory", "pipeline"]
        if warm_up:
            measure([*make, "FORCE=1"], root, env)  # the store, the DVC cache, the OS file cache
        timings: dict[str, list[float]] = {"floor": [], "forced": [], "unchanged": []}
        peaks: dict[str, int] = {}
        for _ in range(repeats):
            for name, command in (
                ("floor", [python, "-m", "src.bench", "--floor"]),
                ("forced", [*make, "FORCE=1"]),
                ("unchanged", make),
            ):
                elapsed, peak, _ = measure(command, root, env)
                timings[name].append(elapsed)
                peaks[name] = max(peaks.get(name, 0), peak)
        stages = {}
        # As under `make pipeline`: the stage leaves a record instead of logging to MLflow itself.
        stage_env = env | {PARENT_RUN_ENV: "bench", RECORDS_ENV: str(Path(scratch) / "records")}
        for stage in pipeline_stages():
            walls, imports, stage_peak = [], [], 0
            for _ in range(repeats):
                command = [python, "-X", "importtime", "-m", f"src.stages.{stage}", "--config", "params.yaml"]
                elapsed, peak, stderr = measure(command, root, stage_env)
                walls.append(elapsed)
                imports.append(import_seconds(stderr))
                stage_peak = max(stage_peak, peak)
            stages[stage] = {"wall": summary(walls), "imports": summary(imports), "peak_mb": stage_peak}
        scoring = batch_scoring(root, env, scoring_rows) if scoring_rows else None
    results = {name: summary(samples) | {"peak_mb": peaks[name]} for name, samples in timings.items()}
    floor_median = results["floor"]["median"]
    return {
        "dataset": f"synthetic {rows:,} x {SCALE_FEATURES}" if rows is not None else "template params.yaml",
        "repeats": repeats,
        "runs": results,
        "ratios": {name: results[name]["median"] / floor_median for name in ("forced", "unchanged")},
        "stages": stages,
        "batch_scoring": scoring,
        "machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
    }


def markdown(results: list[dict[str, Any]]) -> str:
    """Render benchmark results as markdown tables."""
    lines = ["# Benchmark", ""]
    for result in results:
        lines += [
            f"## {result['dataset']} ({result['repeats']} interleaved repeats, {result['machine']})",
            "",
            "| run | median s | min s | max s | x floor | peak MB |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, run in result["runs"].items():
            ratio = result["ratios"].get(name, 1.0)
            spread = f"{run['median']:.2f} | {run['min']:.2f} | {run['max']:.2f}"
            lines.append(f"| {name} | {spread} | {ratio:.1f} | {run['peak_mb']} |")
        lines += ["", "| stage process | wall s | imports s | peak MB |", "| --- | --- | --- | --- |"]
        for stage, numbers in result["stages"].items():
            lines.append(
                f"| {stage} | {numbers['wall']['median']:.2f} | {numbers['imports']['median']:.2f} | "
                f"{numbers['peak_mb']} |"
            )
        scoring = result.get("batch_scoring")
        if scoring:
            lines += [
                "",
                "| batch scoring (`make predict`, Parquet) | rows | wall s | rows/s | peak MB |",
                "| --- | --- | --- | --- | --- |",
                f"| with start-up and model load | {scoring['rows']:,} | {scoring['seconds']:.2f} | "
                f"{scoring['rows_per_s']:,.0f} | {scoring['peak_mb']} |",
            ]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line of `make bench`."""
    parser = argparse.ArgumentParser(prog="python -m src.bench", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each measurement (default: 3)")
    parser.add_argument("--quick", action="store_true", help="one repeat, no warm-up: a smoke test of the benchmark")
    parser.add_argument("--scale", action="store_true", help="also run on 1,000,000 synthetic rows x 20 features")
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.floor:
        floor(Path("params.yaml"))
        return
    setup_logging()
    repeats = 1 if arguments.quick else max(arguments.repeats, 3)
    scoring_rows = QUICK_SCORING_ROWS if arguments.quick else SCORING_ROWS
    results = [bench(repeats, None, warm_up=not arguments.quick, scoring_rows=scoring_rows)]
    if arguments.scale:
        results.append(bench(repeats, SCALE_ROWS))
    text = markdown(results)
    with atomic_path(PROJECT_ROOT / PATHS.bench_json) as temporary:
        temporary.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    with atomic_path(PROJECT_ROOT / PATHS.bench_md) as temporary:
        temporary.write_text(text, encoding="utf-8")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
