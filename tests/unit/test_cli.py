"""The signal handling entry points share: a child an interrupt reaches, and steps it must not split."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from src.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, ChildRunner, Interrupted, signals_deferred

# A child that starts a grandchild and waits for it: SIGINT must reach both, or the grandchild runs on.
CHILD_WITH_GRANDCHILD = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(60)'])"


def test_a_sigterm_to_this_process_stops_the_child_and_its_children_then_raises():
    runner = ChildRunner()
    children: list[psutil.Process] = []

    def terminate() -> None:
        deadline = time.monotonic() + 30
        while len(children) < 2 and time.monotonic() < deadline:  # the child and the grandchild are up
            time.sleep(0.05)
            if runner.process is not None:
                top = psutil.Process(runner.process.pid)
                children[:] = [top, *top.children(recursive=True)]
        os.kill(os.getpid(), signal.SIGTERM)  # to this process only, as `kill` does

    threading.Thread(target=terminate, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(Interrupted) as raised:
        runner.run([sys.executable, "-c", CHILD_WITH_GRANDCHILD], cwd=os.getcwd(), capture=True)
    assert time.monotonic() - started < 15
    assert raised.value.exit_code == EXIT_TERMINATED
    assert len(children) == 2
    assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children)
    assert signal.getsignal(signal.SIGTERM) is not runner._interrupt  # this process's own handler is back


def test_a_child_that_ends_by_itself_gives_its_exit_code_and_output(tmp_path):
    completed = ChildRunner().run([sys.executable, "-c", "print('done'); raise SystemExit(3)"], tmp_path, capture=True)
    assert (completed.returncode, completed.stdout) == (3, "done\n")


def test_signals_are_held_back_in_a_deferred_block_and_reported_after():
    with signals_deferred() as received:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        reached_the_end = True
    assert reached_the_end
    assert received == [signal.SIGINT, signal.SIGTERM]
    assert Interrupted(received[0]).exit_code == EXIT_INTERRUPTED
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_child_started_with_signals_deferred_runs_out_of_reach_of_the_terminal(tmp_path):
    print_session = [sys.executable, "-c", "import os; print(os.getsid(0))"]
    with signals_deferred():
        shielded = ChildRunner().run(print_session, tmp_path, capture=True)
    outside = ChildRunner().run(print_session, tmp_path, capture=True)
    assert int(outside.stdout) == os.getsid(0)
    assert int(shielded.stdout) != os.getsid(0)  # a session of its own: a Ctrl-C to the group misses it


# A stage whose cleanup fails as a Ctrl-C unwinds it, as a writer closed half-way can.
STAGE_FAILING_AS_INTERRUPTED = """
import os, signal, time
from src.cli import run_stage
from src.tracking.stage_runs import mlflow_stage

@mlflow_stage("data_load")
def main(config):
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)
    finally:
        raise OSError("the file was closed half-way")

run_stage(main, ["--config", "params.yaml"])
"""


def test_a_stage_whose_cleanup_fails_as_an_interrupt_unwinds_it_ends_killed_not_failed(tmp_path):
    from src.paths import PROJECT_ROOT

    env = {**os.environ, "PIPELINE_PARENT_RUN_ID": "parent", "PIPELINE_RECORDS_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", STAGE_FAILING_AS_INTERRUPTED],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == EXIT_INTERRUPTED, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: stage data_load interrupted; it wrote no output"
    record = json.loads((tmp_path / "parent" / "data_load.json").read_text())
    assert record["status"] == "KILLED"
    assert record["error"] == "SIGINT, then OSError: the file was closed half-way"
