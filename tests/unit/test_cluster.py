"""The Dask setting's rules, team.env's edits, the worker's venv check and the point folders, without a cluster."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from src.cluster import ClusterError, check_address, dask_environment, parallel_work, scheduler_address
from src.paths import PROJECT_ROOT
from src.pipeline.fanout import WorkerWatch, check_venv, claim_folder, lock_file, lock_hash, remove_stale_points
from src.team import cluster, stack


@pytest.fixture
def plaintext(monkeypatch):
    """A machine whose owner allows plain tcp (DASK_ALLOW_PLAINTEXT=1)."""
    monkeypatch.setenv("DASK_ALLOW_PLAINTEXT", "1")


@pytest.mark.parametrize(
    ("given", "taken"),
    [
        ("tcp://127.0.0.1:8786", "tcp://127.0.0.1:8786"),
        ("127.0.0.1:8786", "tcp://127.0.0.1:8786"),
        ("tcp://localhost:8786", "tcp://localhost:8786"),
        ("tcp://127.8.9.10:1234", "tcp://127.8.9.10:1234"),
        ("tcp://[::1]:8786", "tcp://[::1]:8786"),
        (" tcp://127.0.0.1:8786 ", "tcp://127.0.0.1:8786"),
    ],
)
def test_a_scheduler_on_this_machine_may_be_plain_tcp_if_its_owner_allows_it(given, taken, plaintext):
    assert check_address(given) == taken


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:8786", "127.0.0.1:8786", "tcp://[::1]:8786"])
def test_plain_tcp_on_this_machine_is_refused_in_one_line_naming_the_switch(address, monkeypatch):
    monkeypatch.delenv("DASK_ALLOW_PLAINTEXT", raising=False)
    with pytest.raises(ClusterError, match="is plain tcp: any account on this machine could run code") as refused:
        check_address(address)
    assert "\n" not in str(refused.value)
    assert "set DASK_ALLOW_PLAINTEXT=1 if no one else has an account here" in str(refused.value)
    monkeypatch.setenv("DASK_ALLOW_PLAINTEXT", "yes")  # only 1 says it
    with pytest.raises(ClusterError, match="DASK_ALLOW_PLAINTEXT=1"):
        check_address(address)


@pytest.mark.parametrize(
    "address", ["tcp://10.0.0.5:8786", "192.168.1.2:8786", "tcp://scheduler.example.org:8786", "tcp://[fe80::1]:8786"]
)
def test_plain_tcp_off_this_machine_is_refused_in_one_line_even_if_plaintext_is_allowed(address, plaintext):
    with pytest.raises(ClusterError, match="plain tcp off this machine") as refused:
        check_address(address)
    assert "\n" not in str(refused.value) and "tls://" in str(refused.value)


@pytest.mark.parametrize("address", ["ws://127.0.0.1:8786", "tcp://127.0.0.1", "tcp://:8786", "127.0.0.1:port"])
def test_a_malformed_address_is_named(address):
    with pytest.raises(ClusterError, match="is not a scheduler address"):
        check_address(address)


def test_tls_needs_the_three_files_team_env_names(tmp_path, monkeypatch):
    for name in ("DASK_TLS_CA_FILE", "DASK_TLS_CERT", "DASK_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ClusterError, match="needs DASK_TLS_CA_FILE"):
        check_address("tls://scheduler.example.org:8786")
    for name in ("DASK_TLS_CA_FILE", "DASK_TLS_CERT"):
        (tmp_path / name).write_text("pem")
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.setenv("DASK_TLS_KEY", str(tmp_path / "missing.pem"))
    with pytest.raises(ClusterError, match="needs DASK_TLS_KEY"):
        check_address("tls://scheduler.example.org:8786")
    (tmp_path / "key.pem").write_text("pem")
    monkeypatch.setenv("DASK_TLS_KEY", str(tmp_path / "key.pem"))
    assert check_address("tls://scheduler.example.org:8786") == "tls://scheduler.example.org:8786"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_scheduler_that_does_not_answer_is_named_in_one_line_at_once(plaintext, monkeypatch):
    address = f"tcp://127.0.0.1:{free_port()}"
    monkeypatch.setenv("DASK_SCHEDULER", address)
    began = time.monotonic()
    with pytest.raises(ClusterError) as refused:
        scheduler_address()
    assert time.monotonic() - began < 2
    assert str(refused.value) == (
        f"cannot reach the Dask scheduler at {address} (DASK_SCHEDULER in team.env): nothing answers there "
        "(ConnectionRefusedError); start it with `make cluster-up`, or check the address"
    )


def test_dask_reads_the_clusters_certificates_from_its_own_variables(tmp_path):
    files = {"ca_file": "/c/ca.crt", "cert": "/c/me.crt", "key": "/c/me.key"}
    environment = dask_environment(files)
    assert environment == {
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": "/c/ca.crt",
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": "/c/me.crt",
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": "/c/me.key",
    }
    code = (
        "from distributed.security import Security; s = Security(); "
        "print(s.require_encryption, s.tls_ca_file, s.tls_client_cert, s.tls_client_key)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **environment}, capture_output=True, text=True, check=True
    )
    assert shown.stdout.split() == ["True", "/c/ca.crt", "/c/me.crt", "/c/me.key"]


def test_the_trial_cluster_speaks_tls_with_no_dashboard_and_its_workers_show_their_certificates():
    files = {role: {"ca_file": "/t/ca.crt", "cert": f"/t/{role}.crt", "key": f"/t/{role}.key"} for role in "swc"}
    settings = cluster.ClusterSettings(8786, 8787, 2, {"scheduler": files["s"], "worker": files["w"]})
    assert settings.address == "tls://127.0.0.1:8786" and settings.dashboard.startswith("off")
    scheduler = cluster.scheduler_command(settings)
    assert scheduler[scheduler.index("--protocol") + 1] == "tls" and "--no-dashboard" in scheduler
    assert scheduler[scheduler.index("--tls-cert") + 1] == "/t/s.crt"
    assert scheduler[scheduler.index("--dashboard-address") + 1] == "127.0.0.1:8787"  # its HTTP port, on loopback
    worker = cluster.worker_command(settings.address, "w1", 1, "127.0.0.1", files["w"])
    assert worker[worker.index("--protocol") + 1] == "tls" and worker[worker.index("--tls-key") + 1] == "/t/w.key"
    environment = cluster.worker_environment(settings.address, files["c"])
    assert environment["DASK_TLS_CERT"] == environment["DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT"] == "/t/c.crt"
    assert environment["DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES"] == "[]"  # its HTTP port serves nothing
    plain = cluster.ClusterSettings(8786, 8787, 2)
    assert plain.address == "tcp://127.0.0.1:8786" and plain.dashboard == "http://127.0.0.1:8787/status"
    assert "--protocol" not in cluster.scheduler_command(plain)
    assert cluster.worker_environment(plain.address)["DASK_ALLOW_PLAINTEXT"] == "1"
    assert plain.team_env() == {"DASK_SCHEDULER": "tcp://127.0.0.1:8786"}


def test_without_the_setting_the_block_runs_here_and_a_bad_one_is_refused(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER", raising=False)
    with parallel_work() as address:
        assert address == ""
    monkeypatch.setenv("DASK_SCHEDULER", "tcp://10.0.0.5:8786")
    with pytest.raises(ClusterError, match="plain tcp"), parallel_work():
        pass


def test_the_train_stage_does_not_import_dask_when_no_cluster_is_set():
    code = "import sys, src.stages.train; print('distributed' in sys.modules, 'dask' in sys.modules)"
    imported = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert imported.split() == ["False", "False"]


def test_cluster_settings_are_added_replaced_and_removed_in_team_env(tmp_path, monkeypatch):
    team_env = tmp_path / "team.env"
    monkeypatch.setattr(cluster, "TEAM_ENV", team_env)
    cluster.set_team_env({"DASK_SCHEDULER": "tls://127.0.0.1:1", "DASK_TLS_CERT": "/c.crt"})
    assert team_env.read_text() == "DASK_SCHEDULER=tls://127.0.0.1:1\nDASK_TLS_CERT=/c.crt\n"
    assert team_env.stat().st_mode & 0o777 == 0o600
    team_env.write_text(
        "# team\nMLFLOW_TRACKING_URI=http://x\nDASK_SCHEDULER=tls://127.0.0.1:1\nDASK_TLS_CERT=/c.crt\n"
    )
    cluster.set_team_env({"DASK_SCHEDULER": "tls://127.0.0.1:2"})
    assert team_env.read_text() == (
        "# team\nMLFLOW_TRACKING_URI=http://x\nDASK_TLS_CERT=/c.crt\nDASK_SCHEDULER=tls://127.0.0.1:2\n"
    )
    cluster.set_team_env({"DASK_SCHEDULER": "", "DASK_TLS_CERT": ""})
    assert team_env.read_text() == "# team\nMLFLOW_TRACKING_URI=http://x\n"
    team_env.write_text("DASK_SCHEDULER=tcp://127.0.0.1:2\n")
    cluster.set_team_env({"DASK_SCHEDULER": ""})
    assert not team_env.exists()  # it held nothing else: no empty team.env switches make to team mode


def test_team_up_keeps_the_cluster_setting_of_a_team_env_without_a_server(tmp_path, monkeypatch):
    team_env = tmp_path / "team.env"
    monkeypatch.setattr(stack, "TEAM_ENV", team_env)
    team_env.write_text("DASK_SCHEDULER=tcp://127.0.0.1:1\n")
    stack.write_team_env(stack.Settings(admin_password="p", s3_access_key_id="k", s3_secret_access_key="s"), "demo")
    written = team_env.read_text()
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:5100\n" in written
    assert written.endswith("DASK_SCHEDULER=tcp://127.0.0.1:1\n")


def test_a_point_folder_is_removed_once_no_process_holds_it(tmp_path, monkeypatch):
    from src.pipeline import fanout

    monkeypatch.setattr(fanout, "POINTS_DIR", tmp_path)
    held, lock = claim_folder("sweep-1-1")
    (held / "repo").mkdir()
    # A point's process holds its folder too (it inherits the lock), and outlives the worker that made it.
    point = subprocess.Popen(["sleep", "30"], pass_fds=(lock,))
    os.close(lock)
    gone, lock = claim_folder("sweep-1-2")
    os.close(lock)  # its worker and point died: nothing holds it
    (tmp_path / "dvc-cache").mkdir()  # shared by every point: never removed
    (tmp_path / "by-hand").mkdir()  # no lock at all
    assert remove_stale_points() == ["by-hand", gone.name]
    assert held.is_dir() and lock_file(held).exists() and not gone.exists() and not lock_file(gone).exists()
    point.kill()
    point.wait()
    assert remove_stale_points() == [held.name]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dvc-cache"]


def test_points_waiting_with_no_worker_to_take_them_stop_the_sweep_after_a_while():
    watch = WorkerWatch("tls://127.0.0.1:8786", seconds=60)
    watch.seen(0, watch.last_seen + 59)
    watch.seen(1, watch.last_seen + 59)  # a nanny restarted the worker: the wait starts again
    watch.seen(0, watch.last_seen + 59)
    with pytest.raises(ClusterError) as stopped:
        watch.seen(0, watch.last_seen + 60)
    assert str(stopped.value) == (
        "no worker of the Dask cluster at tls://127.0.0.1:8786 has taken sweep points for 60 s "
        "(they died, or were stopped)"
    )


def test_a_sweep_whose_scheduler_died_says_so_in_one_line_with_each_status():
    from src.cluster import SchedulerLostError
    from src.pipeline.sweep import Point, cluster_ending

    points = [Point({"train.linear.C": c}, name=f"s-{c}", run_id=f"r{c}") for c in (1, 2, 3)]
    points[0].status, points[1].status, points[2].status = "FINISHED", "FAILED", "FAILED"
    lost = SchedulerLostError("the Dask scheduler at tls://127.0.0.1:1 stopped answering mid-sweep")
    line, code = cluster_ending("s", points, lost, 0)
    assert code == 1
    assert line == (
        "sweep s stopped: the Dask scheduler at tls://127.0.0.1:1 stopped answering mid-sweep; 1 of 3 points "
        "finished, 2 FAILED; start the cluster again (`make cluster-up` for the trial one) and run the sweep again"
    )


def test_a_worker_venv_must_hold_the_commits_lock(tmp_path):
    clone, venv = tmp_path / "clone", tmp_path / "venv"
    clone.mkdir()
    venv.mkdir()
    (clone / "requirements.txt").write_text("pandas==3.1.1\n")
    (venv / ".installed-runtime-0123456789abcdef").touch()
    with pytest.raises(RuntimeError, match="does not hold the lock of commit abcdef12") as refused:
        check_venv(venv, clone, "abcdef1234")
    assert "make venv" in str(refused.value)
    (venv / f".installed-runtime-{lock_hash(clone / 'requirements.txt')}").touch()
    check_venv(venv, clone, "abcdef1234")


def test_the_stamp_hash_is_the_one_make_computes():
    made = subprocess.run(
        "cat requirements.txt | sha256sum | cut -c1-16", shell=True, cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert lock_hash(PROJECT_ROOT / "requirements.txt") == made.stdout.strip()


def test_make_pipeline_names_a_wrong_scheduler_before_any_run(tmp_path):
    environment = {
        **os.environ,
        "DASK_SCHEDULER": "tcp://10.0.0.5:8786",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db",
    }
    ended = subprocess.run(
        [sys.executable, "-m", "src.pipeline", "--config", "params.yaml"],
        cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True,
    )  # fmt: skip
    assert ended.returncode == 2
    [line] = ended.stderr.splitlines()
    assert line.startswith("error: DASK_SCHEDULER=tcp://10.0.0.5:8786 is plain tcp off this machine")
    assert not (tmp_path / "m.db").exists()  # no run was opened


def test_an_experiment_is_found_by_name_in_local_and_remote_reference_lines():
    from src.pipeline.sweep import experiment_commit

    local = "aaa111 refs/exps/ab/cdef/sweep-1-1\nbbb222 refs/exps/ab/cdef/sweep-1-10\n"
    remote = "ccc333\trefs/exps/ab/cdef/sweep-1-1\n"
    assert experiment_commit(local, "sweep-1-1") == "aaa111"
    assert experiment_commit(local, "sweep-1-10") == "bbb222"
    assert experiment_commit(remote, "sweep-1-1") == "ccc333"
    assert experiment_commit(remote, "sweep-1-2") == ""
    assert experiment_commit("", "sweep-1-1") == ""


def test_a_cluster_sweep_outside_team_mode_is_refused_before_git_or_any_run(monkeypatch):
    from src.pipeline.fanout import SweepRefusedError, check_ready

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/nowhere.db")
    with pytest.raises(SweepRefusedError, match="needs team mode") as refused:
        check_ready("origin")
    assert "\n" not in str(refused.value) and refused.value.exit_code == 2
