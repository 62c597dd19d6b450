"""`make sweep`: a grid of params, each point a DVC experiment and an MLflow parent run.

`make sweep SWEEP="train.C=0.1,1,10 data_split.test_size=0.2,0.3" [JOBS=N]` queues
the six points with `dvc exp run --queue` and runs them with DVC's own queue,
N at a time (`dvc queue start -j N`), each in a temporary copy of the workspace,
which stays untouched. Every point gets its own parent run with the usual nested
stage runs, all tagged with the sweep's id. Queued points all run with the
environment of the queue's workers, so a point's stages find their parent run
through the experiment's name (`DVC_EXP_NAME`, see `experiment_parent_run`). A
failed point is reported with the end of its log and the others go on. The
sweep ends with the points ranked by the main metric; `dvc exp apply <name>`
brings a point into the workspace.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

import yaml

from src.config import PROJECT_ROOT, Config, ConfigError, flatten, validate
from src.utils.cli import EXIT_BAD_CONFIG, EXIT_INTERRUPTED, fail, parse_config
from src.utils.data_versions import dvc
from src.utils.git import git
from src.utils.mlflow_run import describe_tracking_error, experiment_parent_file, import_mlflow

logger = logging.getLogger(__name__)

MAIN_METRIC = "accuracy"
SWEEP_TAG = "sweep"
POLL_SECONDS = 2.0
RESTART_SECONDS = 12.0


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


def queue_point(point: Point, config: Config, sweep_id: str) -> None:
    """Open the point's parent run, tell its stages where it is, and queue it with `dvc exp run --queue`."""
    from src.utils.start_pipeline import open_parent_run

    params_text = yaml.safe_dump(config.model_dump(), sort_keys=False)
    point.run_id = open_parent_run(
        config, params_text, run_name=point.name, tags={SWEEP_TAG: sweep_id, "sweep.point": point.describe()}
    )
    experiment_parent_file(point.name).parent.mkdir(parents=True, exist_ok=True)
    experiment_parent_file(point.name).write_text(point.run_id)
    command = ["exp", "run", "--queue", "--name", point.name]
    for key, value in point.overrides.items():
        command += ["--set-param", f"{key}={yaml.safe_dump(value).splitlines()[0]}"]
    queued = dvc(*command, quiet=True)
    if queued.returncode:
        reason = (queued.stderr.strip() or "no message").splitlines()[-1]
        raise RuntimeError(f"dvc could not queue point {point.name}: {reason}")
    logger.info("queued point %s: %s (MLflow run %s)", point.name, point.describe(), point.run_id)


def queue_statuses() -> dict[str, str]:
    """The status DVC's queue gives each experiment by name: Queued, Running, Success or Failed."""
    from dvc.repo import Repo

    with Repo(str(PROJECT_ROOT)) as repo:
        return {entry.get("name") or "": entry["status"] for entry in repo.experiments.celery_queue.status()}


def close_point(point: Point, succeeded: bool) -> None:
    """Log the point's stage runs and metrics to its parent run and end it."""
    from src.utils.finish_pipeline import close_parent

    exit_code, revision = (0, "") if succeeded else (1, "")
    if succeeded:
        try:
            revision = experiment_revision(point.name)
        except RuntimeError as error:
            logger.error("%s", error)
            exit_code = 1
    if exit_code:
        log = dvc("queue", "logs", point.name, quiet=True).stdout
        sys.stderr.write("".join(f"  {point.name}: {line}\n" for line in log.splitlines()[-8:]))
    client = import_mlflow().MlflowClient()
    point.status = close_parent(client, point.run_id, exit_code, revision)
    point.metric = client.get_run(point.run_id).data.metrics.get(MAIN_METRIC)
    experiment_parent_file(point.name).unlink(missing_ok=True)


def run_queue(points: list[Point], jobs: int) -> None:
    """Start `jobs` queue workers and close each point's parent run as soon as the point ends.

    DVC's workers stop by themselves once the queue is empty; workers of an
    earlier sweep that were stopping as this one queued its points are replaced
    when points wait with none running. On an interrupt the running points are
    killed, the others taken off the queue, and their parent runs end KILLED.
    """
    from src.utils.cli import EXIT_INTERRUPTED
    from src.utils.finish_pipeline import close_parent

    dvc("queue", "start", "--jobs", str(jobs), quiet=True)
    pending = {point.name: point for point in points}
    idle_since = time.monotonic()
    try:
        while pending:
            time.sleep(POLL_SECONDS)
            statuses = queue_statuses()
            for name, status in statuses.items():
                if name in pending and status in ("Success", "Failed"):
                    point = pending.pop(name)
                    close_point(point, status == "Success")
                    logger.info("point %s (%s) %s", point.name, point.describe(), point.status)
            if any(statuses.get(name) == "Running" for name in pending):
                idle_since = time.monotonic()
            elif pending and time.monotonic() - idle_since > RESTART_SECONDS:
                logger.info("points wait with no queue worker running; starting workers again")
                dvc("queue", "start", "--jobs", str(jobs), quiet=True)
                idle_since = time.monotonic()
    except KeyboardInterrupt:
        logger.warning("interrupted: killing the queued points")
        dvc("queue", "kill", *pending, quiet=True)
        dvc("queue", "remove", *pending, quiet=True)
        dvc("queue", "stop", quiet=True)
        client = import_mlflow().MlflowClient()
        for point in pending.values():
            point.status = close_parent(client, point.run_id, EXIT_INTERRUPTED)
        raise


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
    parser.add_argument("--jobs", default="1", help="how many points run at once (default: 1)")
    arguments, config = parse_config(parser, argv)
    if not arguments.jobs.isdigit() or int(arguments.jobs) < 1:
        fail(f"JOBS must be a whole number of at least 1, got {arguments.jobs!r}", EXIT_BAD_CONFIG)
    try:
        grid = parse_grid(arguments.grid)
        configs = [apply_overrides(config, overrides) for overrides in grid]
    except ConfigError as error:
        fail(str(error), EXIT_BAD_CONFIG)
    sweep_id = time.strftime("sweep-%Y%m%d-%H%M%S")
    points = [Point(overrides, name=f"{sweep_id}-{index}") for index, overrides in enumerate(grid, start=1)]
    logger.info("%s: %d points, %s at a time, tagged %s=%s", sweep_id, len(points), arguments.jobs, SWEEP_TAG, sweep_id)
    try:
        for point, point_config in zip(points, configs, strict=True):
            queue_point(point, point_config, sweep_id)
        run_queue(points, int(arguments.jobs))
    except KeyboardInterrupt:
        fail("sweep interrupted; its runs not finished are KILLED", EXIT_INTERRUPTED)
    except Exception as error:
        fail(f"sweep {sweep_id} stopped: {describe_tracking_error(error)}")
    sys.stdout.write(ranking(points))
    failed = [point for point in points if point.status != "FINISHED"]
    if failed:
        fail(f"{len(failed)} of {len(points)} points failed: {', '.join(point.name for point in failed)}")
    logger.info("bring a point into the workspace with `dvc exp apply <DVC experiment>`")


if __name__ == "__main__":
    main()
