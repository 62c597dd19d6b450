"""`make sweep`: a grid of params, each point a DVC experiment and an MLflow parent run.

`make sweep SWEEP="train.linear.C=0.1,1,10 data_split.test_size=0.2,0.3" [JOBS=N]` queues
the six points with `dvc exp run --queue` and runs them with DVC's own queue,
N at a time (`dvc queue start -j N`), each in a temporary copy of the workspace,
which stays untouched. Every point gets its own parent run with the usual nested
stage runs, all tagged with the sweep's id. Queued points all run with the
environment of the queue's workers, so a point's stages find their parent run
through the experiment's name (`DVC_EXP_NAME`, see `experiment_parent_run`).
Each point is reported as it ends; a failed point is reported with the end of
its log and the others go on. The sweep ends with the points ranked by the main
metric; `dvc exp apply <name>` brings a point into the workspace.

Ctrl-C or SIGTERM stops the sweep: DVC's queue workers, which run detached from
the terminal, are stopped with the experiments they run, the sweep's points are
taken off the queue, and every point not finished ends KILLED with its stage
runs (exit 130 or 143, one line). A sweep killed outright is cleaned up by the
next `make pipeline` or `make sweep` (see `src.pipeline.run.end_orphans`).
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

from src.cli import EXIT_BAD_CONFIG, EXIT_FAILED, Interrupted, InterruptFlag, Progress, fail, parse_config
from src.cluster import ClusterError, scheduler_address
from src.config import Config, ConfigError, flatten, validate
from src.ml.catalog import METRICS
from src.pipeline.fanout import SweepRefusedError, run_on_cluster
from src.pipeline.queue import QueueError, start_workers, statuses, stop
from src.tracking.client import describe_tracking_error, experiment_id_for, import_mlflow
from src.tracking.stage_runs import experiment_parent_file
from src.tracking.tags import MAIN_METRIC_TAG, NOTE_TAG, SWEEP_EXPERIMENT_TAG, SWEEP_TAG
from src.versions.runner import code_version, dvc, git

logger = logging.getLogger(__name__)


POLL_SECONDS = 2.0

RESTART_SECONDS = 12.0

MISSING_POLLS = 3
"""A point absent from DVC's queue this many polls in a row was taken off it: it ends FAILED."""


@dataclass
class Point:
    """One point of the grid: its overrides, and once run, its outcome."""

    overrides: dict[str, Any]
    name: str = ""
    run_id: str = ""
    status: str = "not run"
    metric_name: str = ""
    metric: float | None = None

    def describe(self) -> str:
        """The overrides as `key=value` words."""
        return " ".join(f"{key}={value}" for key, value in self.overrides.items())

    def take_outcome(self, run: Any) -> None:
        """Read how the point's parent run ended: its status, its main metric and that metric's value."""
        self.status = run.info.status
        self.metric_name = run.data.tags.get(MAIN_METRIC_TAG, "")
        self.metric = run.data.metrics.get(self.metric_name)

    def result(self) -> str:
        """The point's main metric and its value, `accuracy 0.9667`, or `-`."""
        return f"{self.metric_name} {self.metric:.4f}" if self.metric is not None else "-"

    def summary(self) -> str:
        """One line on how the point ended: its overrides, status and main metric."""
        return f"point {self.name} ({self.describe()}): {self.status}, {self.result()}"


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
            raise ConfigError(f"SWEEP: {word!r} is not key=value[,value...], e.g. train.linear.C=0.1,1,10")
        axes[key] = [yaml.safe_load(value) for value in values.split(",")]
    if not axes:
        raise ConfigError('SWEEP is empty; give e.g. SWEEP="train.linear.C=0.1,1,10 data_split.test_size=0.2,0.3"')
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """Return `config` with dotted-key overrides applied and validated.

    Raises:
        ConfigError: If a key does not exist or a value is not allowed, naming both.
    """
    import difflib

    document = config.model_dump()
    known = flatten(document)
    for key, value in overrides.items():
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"SWEEP: unknown key {key}; {hint}keys look like train.linear.C or data_split.test_size")
        *path, name = key.split(".")
        section = document
        for part in path:
            section = section[part]
        section[name] = value
    return validate(document, "SWEEP")


def experiment_commit(references: str, name: str) -> str:
    """The commit of the DVC experiment `name` in `<commit> <ref>` lines (git for-each-ref, git ls-remote), or ""."""
    for line in references.splitlines():
        commit, reference = line.split(maxsplit=1)
        if reference.rsplit("/", 1)[-1] == name:
            return commit
    return ""


def experiment_revision(name: str) -> str:
    """Return the commit of the DVC experiment called `name`."""
    commit = experiment_commit(git("for-each-ref", "refs/exps", "--format=%(objectname) %(refname)"), name)
    if not commit:
        raise RuntimeError(f"DVC experiment {name} left no git reference")
    return commit


def open_point(point: Point, config: Config, sweep_id: str, tags: dict[str, str] | None = None) -> None:
    """Open the point's parent run, with every param of `config` and the sweep's tags (and `tags`).

    The parent carries the sweep's process id, host and project root, as a
    pipeline's does, so that a later `make pipeline` or `make sweep` ends it if
    this process is killed outright (see `end_orphans`).
    """
    from src.pipeline.run import process_tags
    from src.tracking.parent import open_parent_run

    params_text = yaml.safe_dump(config.model_dump(), sort_keys=False)
    run_tags = {
        **process_tags(),
        SWEEP_TAG: sweep_id,
        SWEEP_EXPERIMENT_TAG: point.name,
        "sweep.point": point.describe(),
        **(tags or {}),
    }
    point.run_id = open_parent_run(
        config, params_text, code_version(), run_name=point.name, tags=run_tags, command="make sweep"
    )


def queue_point(point: Point, config: Config, sweep_id: str) -> None:
    """Open the point's parent run, tell its stages where it is, and queue it with `dvc exp run --queue`.

    Raises:
        QueueError: If dvc does not queue the point.
    """
    open_point(point, config, sweep_id)
    experiment_parent_file(point.name).parent.mkdir(parents=True, exist_ok=True)
    experiment_parent_file(point.name).write_text(point.run_id)
    command = ["exp", "run", "--queue", "--name", point.name]
    for key, value in point.overrides.items():
        command += ["--set-param", f"{key}={yaml.safe_dump(value).splitlines()[0]}"]
    queued = dvc(*command, quiet=True)
    if queued.returncode:
        reason = (queued.stderr.strip() or "no message").splitlines()[-1]
        raise QueueError(f"dvc could not queue point {point.name}: {reason}")
    logger.info("queued point %s: %s (MLflow run %s)", point.name, point.describe(), point.run_id)


def close_point(point: Point, succeeded: bool) -> None:
    """Log the point's stage runs and metrics to its parent run and end it."""
    from src.tracking.parent import close_parent

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
    close_parent(client, point.run_id, exit_code, revision)
    point.take_outcome(client.get_run(point.run_id))
    experiment_parent_file(point.name).unlink(missing_ok=True)


def run_queue(points: list[Point], jobs: int, interrupts: InterruptFlag, progress: Progress | None = None) -> None:
    """Start `jobs` queue workers and close each point's parent run, and report it, as soon as the point ends.

    Once every point has ended, the workers are stopped unless DVC's queue
    holds other experiments (DVC's own workers wait a while for more work).
    Workers that were stopping as this sweep queued its points are replaced
    when points wait with none running.

    Args:
        points: The sweep's points, queued.
        jobs: How many queue workers to start.
        interrupts: The signals received so far.
        progress: Where the line of each point and the bar of points ended go (standard error by default).

    Raises:
        Interrupted: When a signal comes; the points not ended are left to `abandon`.
    """
    progress = progress or Progress()
    start_workers(jobs)
    pending = {point.name: point for point in points}
    missing = dict.fromkeys(pending, 0)
    idle_since = time.monotonic()
    while pending:
        interrupts.sleep(POLL_SECONDS)
        current = statuses()
        for name in list(pending):
            status = current.get(name, "")
            missing[name] = 0 if status else missing[name] + 1
            if status in ("Success", "Failed") or missing[name] >= MISSING_POLLS:
                point = pending.pop(name)
                if not status:
                    logger.error("point %s is no longer on DVC's queue (removed with `dvc queue remove`?)", name)
                close_point(point, status == "Success")
                progress.say(point.summary())
                ended = [other for other in points if other.name not in pending]
                failed = sum(other.status != "FINISHED" for other in ended)
                progress.step("sweep", len(ended), len(points), {"failed": failed}, unit="point")
                interrupts.check()
        if any(current.get(name) == "Running" for name in pending):
            idle_since = time.monotonic()
        elif pending and time.monotonic() - idle_since > RESTART_SECONDS:
            logger.info("points wait with no queue worker running; starting workers again")
            start_workers(jobs)
            idle_since = time.monotonic()
    progress.close("sweep")
    if not any(status in ("Queued", "Running") for status in statuses().values()):
        stop([])  # idle workers would linger until their own timeout, and race the next sweep


def abandon(points: list[Point], exit_code: int, note: str) -> None:
    """Stop the queue and end every point not ended yet: FINISHED if it got there, else as `exit_code` says.

    The queue is stopped first, so that each stage has left its last record:
    a point's parent then gets its stage runs, KILLED where the stage was
    interrupted, and `note` saying why it ended.

    Args:
        points: The sweep's points; those with a parent run still open are ended.
        exit_code: 130 or 143 (KILLED) for an interrupt, 1 (FAILED) for an error.
        note: Why the sweep stopped, for the runs' `pipeline.note` tag.

    Raises:
        QueueError: If DVC's queue cannot be stopped or cleared; the runs are ended all the same.
    """
    from src.tracking.parent import close_parent

    open_points = [point for point in points if point.run_id and point.status == "not run"]
    try:
        stop([point.name for point in points])
    finally:
        current = statuses() if open_points else {}
        client = import_mlflow().MlflowClient()
        for point in open_points:
            if current.get(point.name) == "Success":
                close_point(point, succeeded=True)
            else:
                client.set_tag(point.run_id, NOTE_TAG, note)
                point.status = close_parent(client, point.run_id, exit_code)
                experiment_parent_file(point.name).unlink(missing_ok=True)
            logger.info("%s", point.summary())


def wind_down(sweep_id: str, points: list[Point], exit_code: int, why: str) -> str:
    """Stop the queue, end the points not ended, and say in one line what the sweep that stopped left.

    Args:
        sweep_id: The sweep's id.
        points: Its points.
        exit_code: 130 or 143 for an interrupt, 1 for an error.
        why: How the sweep stopped, e.g. `interrupted (SIGTERM)`.
    """
    from src.tracking.parent import outcome

    logger.warning("sweep %s: stopping DVC's queue workers and ending the points not finished", why)
    try:
        abandon(points, exit_code, f"the sweep was {why}")
    except Exception as error:
        left = f"could not stop DVC's queue: {describe_tracking_error(error)}; see `dvc queue status`"
    else:
        left = "DVC's queue workers are stopped and its points are off the queue"
    ended = outcome(exit_code)
    counts = [
        f"{sum(point.status == 'FINISHED' for point in points)} of {len(points)} points finished",
        f"{sum(point.status == ended for point in points)} ended {ended} with their stage runs",
    ]
    never = sum(not point.run_id for point in points)
    if never:
        counts.append(f"{never} never queued")
    return f"sweep {sweep_id} {why}: {', '.join(counts)}; {left}"


def cluster_ending(sweep_id: str, points: list[Point], error: BaseException, signum: int) -> tuple[str, int]:
    """The one line, and the exit code, of a cluster sweep that stopped on `error` or a signal."""
    code = Interrupted(signum).exit_code if signum else getattr(error, "exit_code", EXIT_FAILED)
    if not any(point.run_id for point in points):
        if signum:
            return f"sweep {sweep_id} interrupted ({Interrupted(signum)}) before any point started", code
        known = isinstance(error, SweepRefusedError | ClusterError)
        return (str(error) if known else describe_tracking_error(error)), code
    counts = [f"{sum(point.status == 'FINISHED' for point in points)} of {len(points)} points finished"]
    for status, said in (("KILLED", "ended KILLED"), ("FAILED", "FAILED")):
        ended = sum(point.status == status for point in points)
        counts += [f"{ended} {said}"] if ended else []
    if isinstance(error, ClusterError) and not signum:  # the cluster itself failed: say so, and how to start it
        restart = "start the cluster again (`make cluster-up` for the trial one) and run the sweep again"
        return f"sweep {sweep_id} stopped: {error}; {', '.join(counts)}; {restart}", code
    why = f"interrupted ({Interrupted(signum)})" if signum else f"stopped on {describe_tracking_error(error)}"
    return f"sweep {sweep_id} {why}: {', '.join(counts)}; the cluster keeps running", code


def ranking(points: list[Point]) -> str:
    """Return the points as a markdown table, best first on their main metric (in its direction), failed points last.

    Points whose main metric differs (a sweep over tasks) are ranked each among those of their metric.
    """
    metrics = list(dict.fromkeys(point.metric_name for point in points if point.metric is not None))

    def order(point: Point) -> tuple[int, int, float]:
        if point.metric is None:
            return (1, 0, 0.0)
        sign = -1.0 if METRICS[point.metric_name].higher_is_better else 1.0
        return (0, metrics.index(point.metric_name), sign * point.metric)

    lines = [
        "| rank | point | main metric | status | DVC experiment | MLflow run |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for rank, point in enumerate(sorted(points, key=order), start=1):
        lines.append(
            f"| {rank} | {point.describe()} | {point.result()} | {point.status} | {point.name} | "
            f"{point.run_id or '-'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run every point of `--grid`, reporting each as it ends, then print the ranking.

    Exits 2 on a bad grid or params.yaml (before any run exists), 1 when a point
    failed or the sweep could not go on, and 130 (Ctrl-C) or 143 (SIGTERM) when
    interrupted: then DVC's queue workers are stopped, the sweep's points are
    off the queue, and every point not finished is KILLED with its stage runs.
    """
    parser = argparse.ArgumentParser(prog="python -m src.pipeline.sweep", description=__doc__)
    parser.add_argument("--grid", required=True, help='e.g. "train.linear.C=0.1,1,10 data_split.test_size=0.2,0.3"')
    parser.add_argument("--jobs", default="1", help="how many points run at once (default: 1)")
    arguments, config = parse_config(parser, argv)
    interrupts = InterruptFlag()
    interrupts.install()
    if not arguments.jobs.isdigit() or int(arguments.jobs) < 1:
        fail(f"JOBS must be a whole number of at least 1, got {arguments.jobs!r}", EXIT_BAD_CONFIG)
    try:
        grid = parse_grid(arguments.grid)
        configs = [apply_overrides(config, overrides) for overrides in grid]
    except ConfigError as error:
        fail(str(error), EXIT_BAD_CONFIG)
    try:
        address = scheduler_address()
    except ClusterError as error:
        fail(str(error), EXIT_BAD_CONFIG)
    from src.pipeline.run import CheckoutLock, LockedError, end_orphans

    lock = CheckoutLock("make sweep")
    try:
        lock.acquire()
    except LockedError as error:
        fail(str(error))
    sweep_id = time.strftime("sweep-%Y%m%d-%H%M%S")
    points = [Point(overrides, name=f"{sweep_id}-{index}") for index, overrides in enumerate(grid, start=1)]
    try:
        client = import_mlflow().MlflowClient()
        end_orphans(client, experiment_id_for(client, config.mlflow.experiment_name), "make sweep")
        if address:
            run_on_cluster(address, points, configs, sweep_id, interrupts)
        else:
            logger.info(
                "%s: %d points, %s at a time, tagged %s=%s", sweep_id, len(points), arguments.jobs, SWEEP_TAG, sweep_id
            )
            for point, point_config in zip(points, configs, strict=True):
                interrupts.check()
                queue_point(point, point_config, sweep_id)
            run_queue(points, int(arguments.jobs), interrupts)
    except (Exception, Interrupted) as error:
        # A signal is recorded by `interrupts`, or raised as Interrupted by a dvc command it reached.
        signum = error.signum if isinstance(error, Interrupted) else interrupts.signum
        if address:
            if any(point.run_id for point in points):
                sys.stdout.write(ranking(points))  # each status as MLflow holds it
            fail(*cluster_ending(sweep_id, points, error, signum))
        if signum:
            stopped = Interrupted(signum)
            fail(wind_down(sweep_id, points, stopped.exit_code, f"interrupted ({stopped})"), stopped.exit_code)
        fail(wind_down(sweep_id, points, EXIT_FAILED, f"stopped on {describe_tracking_error(error)}"))
    sys.stdout.write(ranking(points))
    failed = [point for point in points if point.status != "FINISHED"]
    if failed:
        fail(f"{len(failed)} of {len(points)} points failed: {', '.join(point.name for point in failed)}")
    logger.info("bring a point into the workspace with `dvc exp apply <DVC experiment>`")


if __name__ == "__main__":
    main()
