"""`make bench`: the pipeline's own overhead, measured against the floor.

In a temporary copy of the repository (its own MLflow store and DVC cache, the
same virtualenv), and interleaved so that machine noise spreads evenly, it measures
the wall time, peak memory and bytes written to disk of:

- **floor**: the pipeline's work in one plain Python process: each stage's own
  function in turn, writing the same tables, model, metrics and plots, with no
  DVC, no tracking and no process per stage;
- **bare** (the mixed tables of `--scale`): the same scikit-learn pipeline fitted
  in one plain script, with no file between its steps: the CSV read with pandas,
  prepared, featurized, split, cross-validated, fitted and scored in memory;
- **forced**: `make pipeline FORCE=1`;
- **unchanged**: `make pipeline` with nothing changed (DVC skips every stage);
- **per stage**: each stage process run as `make pipeline` runs it, with its
  import time (`python -X importtime`), against its largest table in memory and
  the size of its outputs;
- **batch scoring**: `make predict` on 1,000,000 rows (rows/s and peak memory).

`--scale` adds the same on a user's CSV of 2,000,000 rows x 10 features, and on
a mixed-type CSV of 1,000,000 rows (numbers with gaps, text categories, a date,
an id) for each task with the default estimator and 5-fold CV, each as a new user
would bring it (under data/external/, tracked with `dvc add`). On the mixed
tables the forced pipeline is measured against the bare script (goal: at most 1.5
times its time) and each stage's peak memory against its largest table (goal: at
most 3 times). Results go to reports/bench.md and reports/bench.json; the docs'
Benchmark page shows them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from src.cli import one_line_errors
from src.config import ConfigError, load_config, validate
from src.io import atomic_path, write_json
from src.logs import setup_logging
from src.ml.catalog import CLASSIFICATION, REGRESSION
from src.paths import PATHS, PROJECT_ROOT, pipeline_stages, stage_outputs
from src.tracking.tags import PARENT_RUN_ENV, RECORDS_ENV
from src.versions.runner import copy_work_tree

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

SCORING_ROWS, QUICK_SCORING_ROWS = 1_000_000, 10_000


def floor(config_path: Path) -> None:
    """Do the pipeline's work in this one process: the floor the pipeline is measured against.

    Each stage's own function runs in turn, without DVC, the tracking, or a
    process of its own, and writes the same files (tables, model, metrics, plots).
    """
    config = load_config(config_path)
    for stage in pipeline_stages():
        result = importlib.import_module(f"src.stages.{stage}").main.__wrapped__(config)
        write_json(result.metrics, PATHS.stage_metrics(stage))


def bare(config_path: Path, metrics_path: Path) -> None:
    """Fit the same scikit-learn pipeline in one plain script: what the forced pipeline is measured against.

    No DVC, no tracking and no file between the steps: the CSV of `data_load.source`
    read with pandas, prepared as data_load prepares it (so the columns have the
    types the pipeline sees), featurized (ids left out), split, cross-validated,
    fitted on the train rows and scored on the test rows, all in memory.

    Args:
        config_path: The params file; the source is read relative to its folder.
        metrics_path: Where the main metric's name, the CV scores and the test metrics are
            written (JSON: `main_metric`, `cv`, `test`), to compare with the pipeline's.
    """
    import pandas as pd

    from src.ml.catalog import main_metric
    from src.ml.features import featurize
    from src.ml.metrics import score
    from src.ml.models import build_model, cross_validate
    from src.ml.split import split_positions
    from src.ml.tables import prepare_table

    config = load_config(config_path)
    source, seed = config.data_load.source, config.base.random_state
    table = pd.read_csv(config_path.parent / source)
    raw, schema = prepare_table(table, config.data_load.target, config.data_load.id_columns, config.base.task, source)
    del table
    features = featurize(raw, config.featurize, schema.target, config.data_load.pixel_max, tuple(schema.id_columns))
    del raw
    labels = features.pop(schema.target)
    stratify = config.data_split.stratify and schema.task == CLASSIFICATION
    train_rows, test_rows = split_positions(labels, config.data_split, seed, stratify)
    train_features, train_labels = features.iloc[train_rows], labels.iloc[train_rows]
    metric = main_metric(config.evaluate.main_metric, schema.task).name
    model = build_model(config.train, schema.task, seed)
    scores = cross_validate(model, train_features, train_labels, schema.task, metric, config.train.cv_folds, seed)
    model.fit(train_features, train_labels)
    metrics = score(labels.iloc[test_rows], model.predict(features.iloc[test_rows]), schema.task)
    write_json({"main_metric": metric, "cv": scores, "test": metrics}, metrics_path)


@dataclass
class Measured:
    """One command's wall seconds, peak resident memory (MB) and bytes written to disk (MB)."""

    seconds: float
    peak_mb: float
    written_mb: float
    stderr: str = ""


# Runs the command measured and prints its exit code and resource usage. A process's peak memory
# counts that of the process it was forked from (Linux keeps it through exec), so the command is
# started from this small process, not from the benchmark, whose memory grows as it reads tables.
SPAWNER = """
import json, os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_maxrss, usage.ru_oublock]))
"""


def measure(command: list[str], cwd: Path, env: dict[str, str]) -> Measured:
    """Run a command and measure it with its children (the kernel's resource usage of the process tree).

    Raises:
        RuntimeError: If the command fails.
    """
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-S", "-c", SPAWNER, *command], cwd=cwd, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    exit_code, peak_kb, output_blocks = json.loads(completed.stdout.strip().splitlines()[-1])
    if exit_code != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({exit_code}): {completed.stderr.strip()[-300:]}")
    # Linux counts output blocks of 512 bytes: the bytes the process tree wrote to files on disk.
    return Measured(elapsed, peak_kb / 1024, output_blocks * 512 / 1e6, completed.stderr)


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
    """Median, min and max of some measurements."""
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


@dataclass
class Case:
    """A dataset the benchmark runs the pipeline on.

    Attributes:
        name: What the results call it.
        params: params.yaml keys to change, by section; a mapping merges into the one it
            names (`{"train": {"linear": {"C": 0.5}}}` changes only `train.linear.C`).
        prepare: Called with the copy's root and environment before the first run (to bring data).
        stage_repeats: Repeats of the per-stage measurements.
        scoring_rows: Rows for `make predict` (0: not timed).
        bare: Also measure the bare script (`bare`) and compare the forced pipeline with it.
    """

    name: str
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    prepare: Callable[[Path, dict[str, str]], None] | None = None
    stage_repeats: int = 3
    scoring_rows: int = 0
    bare: bool = False


def merged(params: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Return `params` with `changes` merged in: a mapping merges key by key, any other value replaces.

    Args:
        params: params.yaml as parsed.
        changes: The keys to change, nested as in params.yaml.

    Returns:
        A new mapping; `params` is left as it was.
    """
    result = dict(params)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


BARE_GOAL, MEMORY_GOAL = 1.5, 3.0
"""The goals of `--scale` on the mixed tables: the forced pipeline's wall time against the
bare script's, and each stage's peak memory against its largest table."""


def bring_csv(table: pd.DataFrame, source: str, root: Path, env: dict[str, str]) -> None:
    """Write `table` as a CSV at `source` in the copy at `root` and track it with `dvc add`, as a user would."""
    table.to_csv(root / source, index=False)
    python_bin = Path(sys.prefix) / "bin"
    subprocess.run([python_bin / "dvc", "add", "--quiet", source], cwd=root, env=env, check=True)


LARGE_ROWS, LARGE_FEATURES = 2_000_000, 10
LARGE_SOURCE = "data/external/large.csv"


def bring_large_csv(root: Path, env: dict[str, str]) -> None:
    """Write a CSV of LARGE_ROWS x LARGE_FEATURES under data/external/ and track it with `dvc add`, as a user would."""
    from src.ml.sources import make_synthetic

    bring_csv(make_synthetic(LARGE_ROWS, LARGE_FEATURES, "target", random_state=0), LARGE_SOURCE, root, env)


def large_case() -> Case:
    """The 2,000,000-row case of `--scale`: the template's params, fewer CV folds and boosting iterations."""
    return Case(
        name=f"your CSV, {LARGE_ROWS:,} rows x {LARGE_FEATURES} features",
        params={
            "data_load": {"source": LARGE_SOURCE},
            "train": {"cv_folds": 2, "hist_gradient_boosting": {"max_iter": 10}},
        },
        prepare=bring_large_csv,
        stage_repeats=1,
    )


MIXED_ROWS = 1_000_000
MIXED_NUMBERS = 8
"""Numeric columns of the mixed table, `num_1` to `num_8`, each with MIXED_MISSING of its values missing."""
MIXED_MISSING = 0.1
MIXED_CATEGORIES = {"segment": 5, "region": 50, "product": 300, "store": 1000}
"""The text columns of the mixed table and how many values each may take (a skewed draw: the rarest are rare)."""
MIXED_DATE, MIXED_ID, MIXED_TARGET = "order_date", "order_id", "label"


def mixed_table(rows: int, task: str, random_state: int = 0) -> pd.DataFrame:
    """Generate a deterministic table of mixed types, as a user's CSV holds them, with a label that can be learnt.

    The same seed gives the same feature columns for both tasks; only the label differs.

    Args:
        rows: Number of rows.
        task: `classification` (a label of `yes` or `no`) or `regression` (a number with
            fractions), each depending on some numbers, some categories, the date and noise.
        random_state: The seed.

    Returns:
        `order_id` (unique whole numbers), `order_date` (ISO text, `YYYY-MM-DD`),
        `num_1`... (numbers, MIXED_MISSING of each missing), the text columns of
        MIXED_CATEGORIES, then `label`.
    """
    import numpy as np
    import pandas as pd

    generator = np.random.default_rng(random_state)
    days = generator.integers(0, 4 * 365, size=rows)
    columns: dict[str, Any] = {
        MIXED_ID: generator.permutation(rows) + 100_000,
        MIXED_DATE: (np.datetime64("2021-01-01") + days).astype(str).astype(object),
    }
    numbers = generator.normal(0.0, 1.0, size=(rows, MIXED_NUMBERS)) * generator.uniform(1, 100, MIXED_NUMBERS)
    # The label is drawn from the values before the gaps are made: a missing value hides what drove it.
    shown = numbers.round(3)
    for position in range(MIXED_NUMBERS):
        shown[generator.choice(rows, size=round(rows * MIXED_MISSING), replace=False), position] = np.nan
        columns[f"num_{position + 1}"] = shown[:, position]
    effects = {}
    for name, count in MIXED_CATEGORIES.items():
        weights = 1 / np.arange(1, count + 1) ** 0.8
        codes = generator.choice(count, size=rows, p=weights / weights.sum())
        columns[name] = np.array([f"{name}_{code}" for code in range(count)], dtype=object)[codes]
        effects[name] = generator.normal(0.0, 1.0, size=count)[codes]
    standard = numbers / numbers.std(axis=0)
    signal = (
        standard[:, 0]
        - 0.7 * standard[:, 1]
        + 0.5 * standard[:, 2] * standard[:, 3]
        + 0.8 * effects["segment"]
        + 0.5 * effects["store"]
        + 0.4 * effects["product"]
        + 0.5 * np.sin(2 * np.pi * days / 365)
    )
    if task == CLASSIFICATION:
        chance = 1 / (1 + np.exp(-signal))
        labels = np.where(generator.random(rows) < chance, "yes", "no").astype(object)
    else:
        labels = (100 + 20 * signal + 0.01 * days + generator.normal(0.0, 5.0, size=rows)).round(2)
    return pd.DataFrame(columns).assign(**{MIXED_TARGET: labels})


def mixed_case(task: str, rows: int = MIXED_ROWS) -> Case:
    """A mixed-type case of `--scale`: the template's params (its default estimator, 5-fold CV) on `mixed_table`.

    The CSV is written under data/external/ and tracked with `dvc add`, as a user
    would bring it; `order_id` is listed in `data_load.id_columns` and the task is
    told from the label (`base.task: auto`). The bare script is measured too.

    Args:
        task: `classification` or `regression`.
        rows: Rows of the table.
    """
    source = f"data/external/mixed_{task}.csv"

    def bring(root: Path, env: dict[str, str]) -> None:
        bring_csv(mixed_table(rows, task), source, root, env)

    return Case(
        name=f"mixed types, {rows:,} rows, {task}",
        params={
            "data_load": {"source": source, "target": MIXED_TARGET, "id_columns": [MIXED_ID]},
            "train": {"cv_folds": 5},
        },
        prepare=bring,
        stage_repeats=1,
        bare=True,
    )


def table_mb(path: Path) -> float:
    """The size in memory (MB) of the Parquet table at `path`, as pandas holds it."""
    import pandas as pd

    return float(pd.read_parquet(path).memory_usage(deep=True).sum()) / 1e6


def stage_files(stage: str) -> tuple[list[Path], list[Path]]:
    """The tables (Parquet deps and outs) and the output files of `stage`, from dvc.yaml."""
    definition = pipeline_stages()[stage]
    outs = [Path(path) for path in stage_outputs(definition)]
    tables = [Path(path) for path in [*definition.get("deps", []), *map(str, outs)] if str(path).endswith(".parquet")]
    return tables, outs


def files_mb(root: Path, paths: list[Path]) -> float:
    """The size on disk (MB) of the files at `paths` under `root` (those that exist)."""
    return sum((root / path).stat().st_size for path in paths if (root / path).is_file()) / 1e6


def stage_figures(root: Path, env: dict[str, str], repeats: int) -> dict[str, dict[str, Any]]:
    """Measure each stage process as `make pipeline` runs it, against its largest table and its outputs."""
    python = str(Path(sys.prefix) / "bin" / "python")
    figures = {}
    for stage in pipeline_stages():
        runs = []
        for _ in range(repeats):
            command = [python, "-X", "importtime", "-m", f"src.stages.{stage}", "--config", "params.yaml"]
            runs.append(measure(command, root, env))
        tables, outs = stage_files(stage)
        largest = max((table_mb(root / table) for table in tables), default=0.0)
        peak = max(run.peak_mb for run in runs)
        written = max(run.written_mb for run in runs)
        outputs = files_mb(root, outs)
        figures[stage] = {
            "wall": summary([run.seconds for run in runs]),
            "imports": summary([import_seconds(run.stderr) for run in runs]),
            "peak_mb": peak,
            "largest_table_mb": largest,
            "peak_x_table": peak / largest if largest >= 1 else None,  # a table of a few rows: no ratio
            "written_mb": written,
            "outputs_mb": outputs,
            "written_x_outputs": written / outputs if outputs >= 1 else None,  # a few bytes of output: no ratio
        }
    return figures


def outputs_mb(root: Path) -> float:
    """The size on disk (MB) of every output dvc.lock records: what the pipeline must write."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return files_mb(root, [Path(out["path"]) for stage in lock["stages"].values() for out in stage.get("outs", [])])


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
    run = measure(["make", "--no-print-directory", "predict", f"INPUT={source}", f"OUTPUT={output}"], root, env)
    if not output.exists():
        raise RuntimeError(f"make predict failed in the benchmark: {run.stderr.strip().splitlines()[-1:]}")
    return {"rows": rows, "seconds": run.seconds, "rows_per_s": rows / run.seconds, "peak_mb": run.peak_mb}


def bench(case: Case, repeats: int, warm_up: bool = True) -> dict[str, Any]:
    """Run the benchmark of one case in a temporary copy and return the results.

    Args:
        case: The dataset and params to run the pipeline on.
        repeats: How many times each run is repeated (interleaved).
        warm_up: Run the pipeline once before measuring (the first run creates the store).

    Raises:
        ConfigError: If the case's params do not validate (before any data is brought).
        RuntimeError: If a measured command fails.
    """
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        root = copy_work_tree(Path(scratch) / "repo")
        env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_TRACKING_URI", "MAKE"))}
        env.update(DVC_REMOTE_URL=str(Path(scratch) / "remote"), VENV=str(Path(sys.prefix)))
        if case.params:
            params_file = root / "params.yaml"
            params = merged(yaml.safe_load(params_file.read_text()), case.params)
            validate(params, f"{case.name}: params.yaml")
            params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        if case.prepare is not None:
            measure(["make", "--no-print-directory", "dvc-setup"], root, env)
            case.prepare(root, env)
        python = str(Path(sys.prefix) / "bin" / "python")
        make = ["make", "--no-print-directory", "pipeline"]
        if warm_up:
            measure([*make, "FORCE=1"], root, env)  # the store, the DVC cache, the OS file cache
        bare_metrics = Path(scratch) / "bare_metrics.json"
        commands = {
            "floor": [python, "-m", "src.bench", "--floor"],
            "forced": [*make, "FORCE=1"],
            "unchanged": make,
        }
        if case.bare:
            commands["bare"] = [python, "-m", "src.bench", "--bare", str(bare_metrics)]
        runs: dict[str, list[Measured]] = {name: [] for name in commands}
        for _ in range(repeats):
            for name, command in commands.items():
                runs[name].append(measure(command, root, env))
        outputs = outputs_mb(root)
        science = None
        if case.bare:  # the same science: the test metrics of the pipeline's last run and of the bare script
            science = {
                "pipeline": json.loads((root / PATHS.metrics).read_text()),
                "bare": json.loads(bare_metrics.read_text()),
            }
        # As under `make pipeline`: the stage leaves a record instead of logging to MLflow itself.
        stage_env = env | {PARENT_RUN_ENV: "bench", RECORDS_ENV: str(Path(scratch) / "records")}
        stages = stage_figures(root, stage_env, case.stage_repeats)
        scoring = batch_scoring(root, env, case.scoring_rows) if case.scoring_rows else None
    results = {
        name: summary([run.seconds for run in samples])
        | {
            "peak_mb": max(run.peak_mb for run in samples),
            "written_mb": statistics.median(run.written_mb for run in samples),
        }
        for name, samples in runs.items()
    }
    floor_median = results["floor"]["median"]
    return {
        "dataset": case.name,
        "repeats": repeats,
        "runs": results,
        "ratios": {name: results[name]["median"] / floor_median for name in results if name != "floor"},
        "forced_x_bare": results["forced"]["median"] / results["bare"]["median"] if case.bare else None,
        "science": science,
        "outputs_mb": outputs,
        "stages": stages,
        "batch_scoring": scoring,
        "machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
    }


def ratio(value: float | None) -> str:
    """A ratio as the tables show it."""
    return "" if value is None else f"{value:.1f}"


def goal_lines(result: dict[str, Any]) -> list[str]:
    """The lines that hold a case's figures against the goals: the forced pipeline against the bare script, memory.

    Args:
        result: One case's results (see `bench`).

    Returns:
        Markdown lines, each after a blank line: none for a case without a bare script
        or a table large enough for a memory ratio.
    """
    lines = []
    forced_x_bare = result.get("forced_x_bare")
    if forced_x_bare is not None:
        line = (
            f"The forced pipeline takes {forced_x_bare:.2f}x the bare script's time "
            f"(goal: at most {BARE_GOAL}x{'' if forced_x_bare <= BARE_GOAL else '; missed'})."
        )
        science = result["science"]
        metric = science["bare"]["main_metric"]
        line += (
            f" Test {metric}: {science['pipeline'].get(metric, float('nan')):.4g} (pipeline), "
            f"{science['bare']['test'][metric]:.4g} (bare script)."
        )
        lines += ["", line]
    memory = {stage: numbers["peak_x_table"] for stage, numbers in result["stages"].items()}
    if any(value is not None for value in memory.values()):
        over = [
            f"{stage} ({value:.1f}x)" for stage, value in memory.items() if value is not None and value > MEMORY_GOAL
        ]
        verdict = f"above it: {', '.join(over)}" if over else "every stage within it"
        lines += ["", f"Peak memory against the largest table (goal: at most {MEMORY_GOAL:.0f}x): {verdict}."]
    return lines


def markdown(results: list[dict[str, Any]]) -> str:
    """Render benchmark results as markdown tables."""
    lines = ["# Benchmark", ""]
    for result in results:
        lines += [
            f"## {result['dataset']} ({result['repeats']} interleaved repeats, {result['machine']})",
            "",
            f"The pipeline's outputs take {result['outputs_mb']:,.1f} MB on disk.",
            "",
            "| run | median s | min s | max s | x floor | peak MB | written MB |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, run in result["runs"].items():
            spread = f"{run['median']:.2f} | {run['min']:.2f} | {run['max']:.2f}"
            lines.append(
                f"| {name} | {spread} | {ratio(result['ratios'].get(name, 1.0))} | {run['peak_mb']:,.0f} | "
                f"{run['written_mb']:,.1f} |"
            )
        lines += [
            "",
            "| stage process | wall s | imports s | peak MB | on 150 rows MB | largest table MB | peak x table "
            "| written MB | outputs MB | written x outputs |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for stage, numbers in result["stages"].items():
            small = numbers.get("small_data_peak_mb")
            lines.append(
                f"| {stage} | {numbers['wall']['median']:.2f} | {numbers['imports']['median']:.2f} | "
                f"{numbers['peak_mb']:,.0f} | {'' if small is None else f'{small:,.0f}'} | "
                f"{numbers['largest_table_mb']:,.1f} | {ratio(numbers['peak_x_table'])} | "
                f"{numbers['written_mb']:,.1f} | {numbers['outputs_mb']:,.1f} | {ratio(numbers['written_x_outputs'])} |"
            )
        lines += goal_lines(result)
        scoring = result.get("batch_scoring")
        if scoring:
            lines += [
                "",
                "| batch scoring (`make predict`, Parquet) | rows | wall s | rows/s | peak MB |",
                "| --- | --- | --- | --- | --- |",
                f"| with start-up and model load | {scoring['rows']:,} | {scoring['seconds']:.2f} | "
                f"{scoring['rows_per_s']:,.0f} | {scoring['peak_mb']:,.0f} |",
            ]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line of `make bench`."""
    parser = argparse.ArgumentParser(prog="python -m src.bench", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each measurement (default: 3)")
    parser.add_argument("--quick", action="store_true", help="one repeat, no warm-up: a smoke test of the benchmark")
    parser.add_argument(
        "--scale",
        action="store_true",
        help=f"also run on a CSV of {LARGE_ROWS:,} rows x {LARGE_FEATURES} features and on mixed-type CSVs of "
        f"{MIXED_ROWS:,} rows (classification, regression)",
    )
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare", type=Path, metavar="METRICS_JSON", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.floor:
        floor(Path("params.yaml"))
        return
    if arguments.bare:
        bare(Path("params.yaml"), arguments.bare)
        return
    setup_logging()
    repeats = 1 if arguments.quick else max(arguments.repeats, 3)
    template = Case(
        name="template params.yaml",
        stage_repeats=repeats,
        scoring_rows=QUICK_SCORING_ROWS if arguments.quick else SCORING_ROWS,
    )
    with one_line_errors("make bench", ConfigError, RuntimeError):
        results = [bench(template, repeats, warm_up=not arguments.quick)]
        if arguments.scale:
            for case in (large_case(), mixed_case(CLASSIFICATION), mixed_case(REGRESSION)):
                result = bench(case, repeats)
                for stage, numbers in result["stages"].items():  # what the stage process costs with next to no data
                    numbers["small_data_peak_mb"] = results[0]["stages"][stage]["peak_mb"]
                results.append(result)
    text = markdown(results)
    with atomic_path(PROJECT_ROOT / PATHS.bench_json) as temporary:
        temporary.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    with atomic_path(PROJECT_ROOT / PATHS.bench_md) as temporary:
        temporary.write_text(text, encoding="utf-8")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
