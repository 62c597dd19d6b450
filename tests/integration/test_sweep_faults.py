"""A sweep that is interrupted or killed: real make, DVC queue workers, MLflow and signals.

DVC's queue workers run in process groups of their own, so these tests look,
after each fault, for any process left in the copy (by its working directory or
command line), any run left RUNNING, and anything DVC's queue still shows
running or queued. The tests share one copy; each checks its own sweep's runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from tests.integration.conftest import Project, new_project

pytestmark = pytest.mark.slow

GRID = "train.linear.C=0.1,1,10"
STOPPED = "DVC's queue workers are stopped and its points are off the queue"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    base = tmp_path_factory.mktemp("sweep-faults")
    project = new_project(base / "repo", base / "remote")
    yield project
    for process in leftovers(project):  # a failed test leaves nothing running
        with contextlib.suppress(psutil.Error):
            process.kill()


class Output:
    """Read a spawned process's stdout and stderr as they come, each line with the time it came."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.lines: dict[str, list[tuple[float, str]]] = {"stdout": [], "stderr": []}
        self.threads = [
            threading.Thread(target=self._read, args=(name, getattr(process, name)), daemon=True) for name in self.lines
        ]
        for thread in self.threads:
            thread.start()

    def _read(self, name: str, stream) -> None:
        for line in stream:
            self.lines[name].append((time.time(), line.rstrip("\n")))

    def wait_for(self, pattern: str, timeout: float = 240) -> float:
        """Wait for a stderr line matching `pattern`; return when it came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for when, line in list(self.lines["stderr"]):
                if re.search(pattern, line):
                    return when
            if self.process.poll() is not None and not any(thread.is_alive() for thread in self.threads):
                break
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r} on stderr:\n{self.text('stderr')}")

    def wait(self, timeout: float) -> int:
        self.process.wait(timeout=timeout)
        for thread in self.threads:
            thread.join(timeout=10)
        return self.process.returncode

    def text(self, name: str) -> str:
        return "\n".join(line for _, line in self.lines[name])


def wait_for_a_stage(project: Project, timeout: float = 240) -> None:
    """Wait until a stage runs in a sweep point (its record says RUNNING).

    Stages DVC restores from its run cache never run, so which one depends on
    what ran before: train always runs for a value of train.linear.C not seen before.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in (project.root / ".pipeline").glob("*/*.json"):
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
                if json.loads(record.read_text())["status"] == "RUNNING":
                    return
        time.sleep(0.1)
    raise AssertionError(f"no stage started within {timeout} s")


def leftovers(project: Project) -> list[psutil.Process]:
    """Every live process of the copy: working inside it, or naming it on its command line."""
    root = str(project.root)
    found = []
    for process in psutil.process_iter(["cmdline", "cwd", "status"]):
        if process.info["status"] in (None, psutil.STATUS_ZOMBIE):
            continue
        cwd = process.info["cwd"] or ""
        if cwd == root or cwd.startswith(root + os.sep) or any(root in word for word in process.info["cmdline"] or []):
            found.append(process)
    return found


def queue_status(project: Project) -> dict[str, str]:
    """`dvc queue status` of the copy: experiment name -> status."""
    result = project.run(project.env()["VENV"] + "/bin/dvc", "queue", "status", check=True)
    rows = [line.split() for line in result.stdout.splitlines()[1:] if line.strip() and "Worker status" not in line]
    return {row[1]: row[-1] for row in rows}


def sweep_parents(project: Project, stderr: str) -> list:
    [sweep_id] = set(re.findall(r"(sweep-\d{8}-\d{6}): \d+ points", stderr))
    return sorted(project.runs(f"tags.sweep = '{sweep_id}'"), key=lambda run: run.info.run_name)


def assert_nothing_left(project: Project, names: list[str]) -> None:
    """No run RUNNING, no process of the copy alive, and none of `names` running or queued on DVC's queue."""
    assert project.runs("attributes.status = 'RUNNING'") == []
    assert [" ".join(process.info["cmdline"] or []) for process in leftovers(project)] == []
    status = queue_status(project)
    assert {name: status[name] for name in names if status.get(name) in ("Running", "Queued")} == {}


def stage_statuses(project: Project, parent) -> dict[str, str]:
    return {child.info.run_name: child.info.status for child in project.children(parent.info.run_id)}


def assert_stopped_mid_pipeline(project: Project, parent) -> None:
    """The stages that ran before the stop FINISHED, the one running then KILLED, none after it.

    Stages DVC restored from its run cache (an earlier point ran them) leave no run.
    """
    children = project.children(parent.info.run_id)
    statuses = {child.info.run_name: child.info.status for child in children}
    errors = {child.info.run_name: child.data.tags.get("error", "") for child in children}
    order = ["data_load", "featurize", "data_split", "train", "evaluate"]
    ran = [stage for stage in order if stage in statuses]
    assert len(ran) == len(statuses)
    assert [statuses[stage] for stage in ran] == ["FINISHED"] * (len(ran) - 1) + ["KILLED"], errors


@pytest.mark.parametrize(
    ("name", "signum", "to_group"),
    [("sigterm to make", signal.SIGTERM, False), ("ctrl-c", signal.SIGINT, True)],
)
def test_an_interrupted_sweep_stops_its_queue_and_ends_every_point_killed(project, name, signum, to_group):
    process = project.spawn("sweep", f"SWEEP={GRID}")
    wait_for_a_stage(project)
    sent = time.monotonic()
    if to_group:
        os.killpg(process.pid, signum)
    else:
        os.kill(process.pid, signum)
    _, stderr = process.communicate(timeout=120)
    assert time.monotonic() - sent < 30, stderr
    # make dies of the signal once the sweep has exited 128 + signal: a shell shows $? = 130 or 143.
    assert process.returncode == -signum
    assert f"sweep] Error {128 + signum}" in stderr
    assert "Traceback" not in stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert re.fullmatch(
        rf"error: sweep sweep-\d+-\d+ interrupted \({signal.Signals(signum).name}\): 0 of 3 points finished, "
        rf"3 ended KILLED with their stage runs; {STOPPED}",
        line,
    )
    parents = sweep_parents(project, stderr)
    assert [parent.info.status for parent in parents] == ["KILLED"] * 3
    assert {parent.data.tags["pipeline.note"] for parent in parents} == {
        f"the sweep was interrupted ({signal.Signals(signum).name})"
    }
    assert_stopped_mid_pipeline(project, parents[0])
    assert stage_statuses(project, parents[1]) == stage_statuses(project, parents[2]) == {}
    for parent in parents:
        assert re.search(rf"point {parent.info.run_name} \(train\.linear\.C=[\d.]+\): KILLED, -", stderr)
    assert_nothing_left(project, [parent.info.run_name for parent in parents])


def test_a_sweep_interrupted_while_it_queues_ends_the_points_it_queued(project):
    process = project.spawn("sweep", f"SWEEP={GRID}")
    output = Output(process)
    output.wait_for(r"queued point sweep-\d+-\d+-1:")
    os.kill(process.pid, signal.SIGTERM)
    assert output.wait(timeout=120) == -signal.SIGTERM
    stderr = output.text("stderr")
    assert "Traceback" not in stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert re.fullmatch(
        r"error: sweep sweep-\d+-\d+ interrupted \(SIGTERM\): 0 of 3 points finished, "
        rf"([12]) ended KILLED with their stage runs, ([12]) never queued; {STOPPED}",
        line,
    )
    parents = sweep_parents(project, stderr)
    assert {parent.info.status for parent in parents} == {"KILLED"}
    assert len(parents) == int(re.search(r"(\d) ended KILLED", line).group(1))
    assert_nothing_left(project, [parent.info.run_name for parent in parents])


def test_after_a_hard_kill_make_pipeline_stops_the_workers_left_and_ends_the_points(project):
    process = project.spawn("sweep", "SWEEP=train.linear.C=0.2,2")
    wait_for_a_stage(project)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    # DVC's workers live in process groups of their own: the kill did not reach them.
    assert any("queue-worker" in process.info["cmdline"] for process in leftovers(project))
    orphans = project.runs("attributes.status = 'RUNNING' and tags.`pipeline.role` = 'parent'")
    assert len(orphans) == 2

    result = project.make("pipeline")
    assert result.returncode == 0, result.stderr
    for orphan in orphans:
        said = f"ended run {orphan.info.run_id} KILLED: the sweep that ran it (point {orphan.info.run_name}) was killed"
        assert said in result.stderr
        ended = project.client().get_run(orphan.info.run_id)
        assert ended.info.status == "KILLED"
        pid = ended.data.tags["pipeline.pid"]
        assert ended.data.tags["pipeline.note"] == f"ended by a later make pipeline: process {pid} was gone"
        assert not psutil.pid_exists(int(pid))
    assert project.parents()[0].info.status == "FINISHED"
    assert_nothing_left(project, [orphan.info.run_name for orphan in orphans])


def test_after_a_hard_kill_and_a_reboot_the_next_sweep_clears_the_queue_and_reports_each_point_as_it_ends(project):
    process = project.spawn("sweep", "SWEEP=train.linear.C=0.3,3")
    wait_for_a_stage(project)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    for survivor in leftovers(project):  # what a reboot does to DVC's workers
        survivor.kill()
    deadline = time.monotonic() + 10
    while leftovers(project) and time.monotonic() < deadline:
        time.sleep(0.2)
    orphans = sorted(
        project.runs("attributes.status = 'RUNNING' and tags.`pipeline.role` = 'parent'"),
        key=lambda run: run.info.run_name,
    )
    stale = [orphan.info.run_name for orphan in orphans]
    assert queue_status(project)[stale[0]] == "Running"  # for good: its worker is gone

    process = project.spawn("sweep", "SWEEP=train.linear.C=0.5,5,50")
    output = Output(process)
    assert output.wait(timeout=600) == 0, output.text("stderr")
    stderr = output.text("stderr")
    for orphan in orphans:
        ended = project.client().get_run(orphan.info.run_id)
        assert ended.info.status == "KILLED"
        assert ended.data.tags["pipeline.note"].startswith("ended by a later make sweep: process ")
    assert_stopped_mid_pipeline(project, orphans[0])
    assert stage_statuses(project, orphans[1]) == {}  # the queued point of the killed sweep never ran

    first, second, third = sweep_parents(project, stderr)
    assert first.info.status == second.info.status == third.info.status == "FINISHED"
    reported = output.wait_for(
        rf"point {first.info.run_name} \(train\.linear\.C=0\.5\): FINISHED, "
        rf"accuracy {first.data.metrics['accuracy']:.4f}$"
    )
    third_stages = {child.info.run_name: child for child in project.children(third.info.run_id)}
    # The first point was reported while the last was still to run, not at the end (points end a poll apart).
    assert reported < third_stages["evaluate"].info.end_time / 1000
    assert first.info.run_id in output.text("stdout")  # the ranking still comes at the end
    assert_nothing_left(project, [*stale, *(point.info.run_name for point in (first, second, third))])
    experiments = project.run(project.env()["VENV"] + "/bin/dvc", "exp", "list", "--name-only").stdout.split()
    assert stale[1] not in experiments
    assert list((project.root / ".pipeline/experiments").iterdir()) == []
