"""`make sweep`: a grid of params, each point a DVC experiment and an MLflow parent run.

`make sweep SWEEP="train.C=0.1,1,10 data_split.test_size=0.2,0.3"` runs the six
points one after another with `dvc exp run --temp` (each in a temporary copy of
the workspace, which stays untouched). Every point gets its own parent run with
the usual nested stage runs, all tagged with the sweep's id; a failed point is
reported and the others go on. The sweep ends with the points ranked by the
main metric; `dvc exp apply <name>` brings a point into the workspace.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import yaml

from src.config import PROJECT_ROOT, Config, ConfigError, flatten, validate
from src.utils.cli import EXIT_BAD_CONFIG, fail, parse_config
from src.utils.git import git
from src.utils.mlflow_run import PARENT_RUN_ENV, RECORDS_ENV, import_mlflow, one_line, records_folder, tracking_uri

logger = logging.getLogger(__name__)

MAIN_METRIC = "accuracy"
SWEEP_TAG = "sweep"


@dataclass
class Point:
    """One point of the grid: its overrides, and once run, its outcome."""

    overrides: dict[str, Any]
    name: str = ""
    run_id: str = ""
    status: str = "not run"
    metric: float | None = None

    def describe(self) -> str:
        """The overrides as `key=value` words."""
        return " ".join(f"{key}={value}" for key, value in self.overrides.items())


def parse_grid(text: str) -> list[dict[str, Any]]:
    """Turn `a.b=1,2 c.d=x` into every combination: `[{a.b: 1, c.d: x}, {a.b: 2, c.d: x}]`.

    Values are read as YAML scalars, so `0.1` is a number and `true` a boolean.

    Raises:
        ConfigError: If a word is not `key=value[,value...]`.
    """
    axes: dict[str, list[Any]] = {}
    for word in text.split():
        key, separator, values = word.partition("=")
        if not separator or not key or not values:
            raise ConfigError(f"SWEEP: {word!r} is not key=value[,value...], e.g. train.C=0.1,1,10")
        axes[key] = [yaml.safe_load(value) for value in values.split(",")]
    if not axes:
        raise ConfigError('SWEEP is empty; give e.g. SWEEP="train.C=0.1,1,10 data_split.test_size=0.2,0.3"')
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """Return `config` with dotted-key overrides applied and validated.

    Raises:
        ConfigError: If a key does not exist or a value is not allowed, naming both.
    """
    document = config.model_dump()
    known = flatten(document)
    for key, value in overrides.items():
        if key not in known:
            raise ConfigError(f"SWEEP: unknown key {key}; keys look like train.C or data_split.test_size")
        section, name = key.split(".", 1)
        document[section][name] = value
    return validate(document, "SWEEP")


def experiment_revision(name: str) -> str:
    """Return the commit of the DVC experiment called `name`."""
    for line in git("for-each-ref", "refs/exps", "--format=%(refname) %(objectname)").splitlines():
        reference, commit = line.split()
        if reference.rsplit("/", 1)[-1] == name:
            return commit
    raise RuntimeError(f"DVC experiment {name} left no git reference")


def run_point(point: Point, config: Config, sweep_id: str) -> None:
    """Run one point: open its parent run, `dvc exp run --temp`, close the run."""
    from src.utils.finish_pipeline import close_parent
    from src.utils.start_pipeline import open_parent_run

    params_text = yaml.safe_dump(config.model_dump(), sort_keys=False)
    point.run_id = open_parent_run(
        config, params_text, run_name=point.name, tags={SWEEP_TAG: sweep_id, "sweep.point": point.describe()}
    )
    command = [sys.executable, "-m", "dvc", "exp", "run", "--temp", "--name", point.name]
    for key, value in point.overrides.items():
        command += ["--set-param", f"{key}={yaml.safe_dump(value).splitlines()[0]}"]
    # The temporary workspace is another directory: pass the store's absolute URI and the parent id.
    environment = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri(),
        PARENT_RUN_ENV: point.run_id,
        RECORDS_ENV: str(records_folder(point.run_id).parent),
    }
    logger.info("point %s: %s", point.name, point.describe())
    exit_code = subprocess.run(command, cwd=PROJECT_ROOT, env=environment, check=False).returncode
    revision = ""
    if exit_code == 0:
        try:
            revision = experiment_revision(point.name)
        except RuntimeError as error:
            logger.error("%s", error)
            exit_code = 1
    client = import_mlflow().MlflowClient()
    point.status = close_parent(client, point.run_id, exit_code, revision)
    point.metric = client.get_run(point.run_id).data.metrics.get(MAIN_METRIC)


def ranking(points: list[Point]) -> str:
    """Return the points as a markdown table, best main metric first, failed points last."""
    ordered = sorted(points, key=lambda point: (point.metric is None, -(point.metric or 0.0)))
    lines = [
        f"| rank | point | {MAIN_METRIC} | status | DVC experiment | MLflow run |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for rank, point in enumerate(ordered, start=1):
        metric = f"{point.metric:.4f}" if point.metric is not None else "-"
        lines.append(
            f"| {rank} | {point.describe()} | {metric} | {point.status} | {point.name} | {point.run_id or '-'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run every point of `--grid`, then print the ranking."""
    parser = argparse.ArgumentParser(prog="python -m src.utils.sweep", description=__doc__)
    parser.add_argument("--grid", required=True, help='e.g. "train.C=0.1,1,10 data_split.test_size=0.2,0.3"')
    arguments, config = parse_config(parser, argv)
    try:
        grid = parse_grid(arguments.grid)
        configs = [apply_overrides(config, overrides) for overrides in grid]
    except ConfigError as error:
        fail(str(error), EXIT_BAD_CONFIG)
    sweep_id = time.strftime("sweep-%Y%m%d-%H%M%S")
    points = [Point(overrides, name=f"{sweep_id}-{index}") for index, overrides in enumerate(grid, start=1)]
    logger.info("%s: %d points, tagged %s=%s in MLflow", sweep_id, len(points), SWEEP_TAG, sweep_id)
    for point, point_config in zip(points, configs, strict=True):
        try:
            run_point(point, point_config, sweep_id)
        except Exception as error:
            point.status = f"FAILED ({one_line(error)})"
        if point.status != "FINISHED":
            logger.error("point %s (%s) %s; going on with the others", point.name, point.describe(), point.status)
    sys.stdout.write(ranking(points))
    failed = [point for point in points if point.status != "FINISHED"]
    if failed:
        fail(f"{len(failed)} of {len(points)} points failed: {', '.join(point.name for point in failed)}")
    logger.info("bring a point into the workspace with `dvc exp apply <DVC experiment>`")


if __name__ == "__main__":
    main()
