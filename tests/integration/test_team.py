"""Team mode against the real trial stack: PostgreSQL, SeaweedFS (S3) and `mlflow server` with logins.

One copy of the repository starts the stack once (`make team-up`, on free ports)
and the tests run in file order against it: a pipeline, a tag and a second
clone, users and their rights, a sweep on two workers, and last `team-down`.
The copy lives in a folder the `postgres` user can enter (PostgreSQL refuses to
run as root, so the stack runs it as `postgres`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from src.paths import pipeline_stages
from src.team.stack import StackError, postgres_binaries
from tests.integration.conftest import VENV, Project, assert_outputs_match_lock, error_lines, new_project
from tests.integration.stranger import let_in, probe

pytestmark = pytest.mark.slow

STAGES = set(pipeline_stages())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def settings(project: Project) -> dict[str, str]:
    """The copy's team.env, as a dict."""
    lines = (project.root / "team.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def stack_processes(project: Project) -> list:
    """Every process the copy's stack runs, by the pid files: the parts and everything under them."""
    import psutil

    processes = []
    for pid_file in (project.root / ".team" / "pids").glob("*.json"):
        process = psutil.Process(json.loads(pid_file.read_text())["pid"])
        processes += [process, *process.children(recursive=True)]
    return processes


def processes_under(folder: Path) -> list[str]:
    """The command lines of running processes that name `folder` (PostgreSQL's data directory, a log)."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if str(folder) in command and "pytest" not in command:
            found.append(command)
    return found


def s3_keys(project: Project, bucket: str) -> list[str]:
    import boto3

    team = settings(project)
    s3 = boto3.client(
        "s3",
        endpoint_url=team["DVC_S3_ENDPOINT_URL"],
        aws_access_key_id=team["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=team["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def stop_part(project: Project, part: str) -> None:
    """Kill one part of the copy's stack at once, as a crash would (`make team-up` starts it again)."""
    import psutil

    process = psutil.Process(json.loads((project.root / ".team" / "pids" / f"{part}.json").read_text())["pid"])
    tree = [process, *process.children(recursive=True)]
    for each in tree:
        each.kill()
    psutil.wait_procs(tree, timeout=30)


def reachable_folder(prefix: str) -> Path:
    """A fresh folder under /tmp that the `postgres` user may enter."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(base.stat().st_mode | stat.S_IXOTH | stat.S_IROTH)
    return base


@pytest.fixture(scope="module")
def team() -> Iterator[Project]:
    try:
        postgres_binaries()
    except StackError as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(error))
    base = reachable_folder("team-test-")
    project = new_project(base / "repo", base / "remote")
    ports = {f"TEAM_{part}_PORT": str(free_port()) for part in ("MLFLOW", "S3", "POSTGRES")}
    result = project.make("team-up", **ports)
    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    try:
        assert result.returncode == 0, result.stderr
        team = settings(project)
        project.server = team["MLFLOW_TRACKING_URI"]
        os.environ["MLFLOW_TRACKING_USERNAME"] = team["MLFLOW_TRACKING_USERNAME"]
        os.environ["MLFLOW_TRACKING_PASSWORD"] = team["MLFLOW_TRACKING_PASSWORD"]
        project.up = result  # type: ignore[attr-defined]
        yield project
    finally:
        project.make("team-down")
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(base, ignore_errors=True)


def test_team_up_prints_the_url_and_writes_the_settings(team):
    team_env = settings(team)
    assert team.up.stdout.splitlines()[0].startswith("Team stack up in ")
    assert f"MLflow on {team_env['MLFLOW_TRACKING_URI']}" in team.up.stdout
    assert team_env["MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1:")
    assert team_env["DVC_REMOTE_URL"].startswith("s3://dvc-store/")
    assert len(team_env["MLFLOW_TRACKING_PASSWORD"]) >= 12
    assert stat.S_IMODE((team.root / "team.env").stat().st_mode) == 0o600
    status = team.make("team-status")
    assert status.returncode == 0, status.stdout
    assert [line.split()[0] for line in status.stdout.splitlines()[1:4]] == ["PostgreSQL", "S3", "MLflow"]
    assert status.stdout.count(" running ") == 3
    ui = team.make("ui")
    assert ui.returncode == 0
    assert ui.stdout.strip() == (
        f"In team mode the UI is the tracking server's: open {team_env['MLFLOW_TRACKING_URI']} and log in as admin"
    )


def test_the_stack_listens_on_127_0_0_1_only(team):
    for process in stack_processes(team):
        for connection in process.net_connections(kind="inet"):
            if connection.status == "LISTEN":
                assert connection.laddr.ip in ("127.0.0.1", "::1"), (process.name(), connection.laddr)


def test_settings_and_secrets_are_never_committed(team):
    assert team.git("status", "--porcelain", "--ignored=no") == ""
    assert team.run("git", "check-ignore", "team.env", ".team/stack.json").returncode == 0
    assert "secret_access_key" not in (team.root / ".dvc" / "config").read_text()


def test_pipeline_logs_to_the_server_with_the_model_in_the_s3_bucket(team):
    result = team.make("pipeline", RUN_NAME="team-run")
    assert result.returncode == 0, result.stderr
    [parent] = team.parents()
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "team-run"
    assert result.stdout.splitlines()[0] == parent.info.run_id
    assert "View run" not in result.stdout  # MLflow's client prints no run URLs into the output
    children = team.children(parent.info.run_id)
    assert {child.info.run_name for child in children} == STAGES
    assert {child.info.status for child in children} == {"FINISHED"}
    [train] = [child for child in children if child.info.run_name == "train"]
    model_files = [key for key in s3_keys(team, "mlflow-artifacts") if "/models/m-" in key]
    assert any(key.endswith("/artifacts/model.skops") for key in model_files), model_files
    model = team.logged_model(train)
    test = pd.read_parquet(team.root / "data/processed/test.parquet")
    features = test.drop(columns=["target"]).head(3)
    assert len(model.predict(features)) == 3
    # Where the data is goes into the committed DVC config, for every clone and other projects; the keys never do.
    shared = (team.root / ".dvc" / "config").read_text()
    team_env = settings(team)
    assert (
        f"url = {team_env['DVC_REMOTE_URL']}" in shared and f"endpointurl = {team_env['DVC_S3_ENDPOINT_URL']}" in shared
    )
    assert team_env["AWS_SECRET_ACCESS_KEY"] not in shared and team_env["AWS_ACCESS_KEY_ID"] not in shared


def test_tag_pushes_to_the_s3_remote_and_a_second_clone_pulls_it_byte_for_byte(team, tmp_path):
    result = team.make("tag", TAG="v1", MSG="team data")
    assert result.returncode == 0, result.stderr
    assert any(key.startswith("ml-research-template/files/md5/") for key in s3_keys(team, "dvc-store"))
    clone = Project(reachable_folder("team-clone-") / "repo", team.remote)
    try:
        team.run("git", "clone", "-q", str(team.root), str(clone.root), check=True)
        shutil.copy(team.root / "team.env", clone.root / "team.env")
        pulled = clone.make("pull")
        assert pulled.returncode == 0, pulled.stderr
        assert_outputs_match_lock(clone, "v1")
        assert not team.remote.exists()  # nothing went to a local folder
    finally:
        shutil.rmtree(clone.root.parent, ignore_errors=True)


def test_another_project_imports_the_tagged_data_with_the_keys_alone(team, tmp_path):
    """DVC's data-registry habits: `dvc import`, `dvc get`, `dvc.api.open` from a repository that never ran it."""
    assert 'remote "team"' in team.git("show", "v1:.dvc/config")  # make tag committed where the data is
    other = tmp_path / "other"
    other.mkdir()
    team_env = settings(team)
    keys = {
        "AWS_ACCESS_KEY_ID": team_env["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": team_env["AWS_SECRET_ACCESS_KEY"],
    }
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "DVC_", "MLFLOW_"))} | keys
    dvc = str(Path(team.env()["VENV"]) / "bin" / "dvc")
    python = str(Path(team.env()["VENV"]) / "bin" / "python")

    def run(*command: str):
        return subprocess.run(command, cwd=other, env=env, capture_output=True, text=True, timeout=300)

    assert run("git", "init", "-q").returncode == 0
    assert run(dvc, "init", "-q").returncode == 0
    raw = "data/raw/dataset.parquet"
    imported = run(dvc, "import", str(team.root), raw, "--rev", "v1", "-o", "iris.parquet")
    assert imported.returncode == 0, imported.stderr
    lock = yaml.safe_load(team.git("show", "v1:dvc.lock"))
    [md5] = [out["md5"] for out in lock["stages"]["data_load"]["outs"] if out["path"] == raw]
    assert hashlib.md5((other / "iris.parquet").read_bytes()).hexdigest() == md5
    assert run(dvc, "get", str(team.root), raw, "--rev", "v1", "-o", "got.parquet").returncode == 0
    assert (other / "got.parquet").read_bytes() == (other / "iris.parquet").read_bytes()
    opened = run(
        python,
        "-c",
        "import dvc.api, hashlib; "
        f"print(hashlib.md5(dvc.api.read({raw!r}, repo={str(team.root)!r}, rev='v1', mode='rb')).hexdigest())",
    )
    assert opened.stdout.strip() == md5, opened.stderr


def test_an_s3_endpoint_that_is_down_at_tag_leaves_no_commit_and_no_tag(team):
    team.set_param("data_split", "test_size", 0.25)
    assert team.make("pipeline").returncode == 0
    head = team.git("rev-parse", "HEAD")
    endpoint = f"http://127.0.0.1:{free_port()}"
    result = team.make("tag", f"DVC_S3_ENDPOINT_URL={endpoint}", TAG="v2", MSG="endpoint down")  # beats team.env
    assert result.returncode != 0
    [line] = error_lines(result)
    assert line.startswith(
        f"error: dvc push to the DVC remote s3://dvc-store/ml-research-template (S3 endpoint {endpoint}) failed: "
    )
    assert "; nothing was committed or tagged: " in line
    assert team.git("rev-parse", "HEAD") == head
    assert team.git("tag").split() == ["v1"]
    team.run("git", "checkout", "HEAD", "--", "params.yaml", "dvc.lock", check=True)


def test_an_s3_that_is_down_at_pipeline_is_named_and_leaves_no_run_running(team):
    stop_part(team, "s3")
    try:
        result = team.make("pipeline", FORCE="1")
        assert result.returncode != 0
        s3_url = settings(team)["DVC_S3_ENDPOINT_URL"]
        assert error_lines(result) == [
            f"error: cannot open the MLflow parent run at {team.server}: the S3 endpoint {s3_url}, where the "
            "tracking server keeps artifacts, does not answer; start it again (`make team-up` for the trial stack)"
        ]
        assert ": running" not in result.stderr  # no stage started
        assert team.runs("attributes.status = 'RUNNING'") == []
    finally:
        assert team.make("team-up").returncode == 0


READER_PASSWORD: list[str] = [""]


def test_a_read_only_user_is_refused_before_any_stage_and_leaves_no_run(team):
    created = team.make("team-user", NAME="reader", ROLE="read")
    assert created.returncode == 0, created.stderr
    assert (
        "Created user reader with READ on experiment 'iris-classifier' and registered model 'iris-classifier'"
    ) in created.stdout
    password = created.stdout.split("MLFLOW_TRACKING_PASSWORD=")[1].split()[0]
    READER_PASSWORD[0] = password
    runs_before = len(team.runs())
    lock_before = (team.root / "dvc.lock").read_text()
    result = team.make("pipeline", "MLFLOW_TRACKING_USERNAME=reader", f"MLFLOW_TRACKING_PASSWORD={password}", FORCE="1")
    assert result.returncode != 0
    assert error_lines(result) == [
        f"error: cannot open the MLflow parent run at {team.server}: user 'reader' may not create or change runs "
        "in this experiment (HTTP 403): an admin can give it the right with `make team-user NAME=reader ROLE=edit`"
    ]
    assert ": running" not in result.stderr  # no stage started
    assert len(team.runs()) == runs_before
    assert (team.root / "dvc.lock").read_text() == lock_before


def rest(team: Project, method: str, path: str, body: dict | None, user: str, password: str) -> int:
    """The HTTP status the tracking server answers `user` with, for one REST call."""
    import base64
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{team.server}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={
            "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_read_user_can_write_nothing_on_the_server(team):
    """Every kind of write the REST API takes, as `read`: each refused, nothing changed; reads still work."""
    [run] = team.runs("attributes.run_name = 'team-run'")
    experiment_id, run_id, model = run.info.experiment_id, run.info.run_id, "iris-classifier"
    api, grant = "/api/2.0/mlflow", {"username": "reader", "resource_type": "experiment", "permission": "EDIT"}
    writes = {
        "create an experiment": ("POST", f"{api}/experiments/create", {"name": "planted"}),
        "rename the experiment": (
            "POST",
            f"{api}/experiments/update",
            {"experiment_id": experiment_id, "new_name": "x"},
        ),
        "delete the experiment": ("POST", f"{api}/experiments/delete", {"experiment_id": experiment_id}),
        "create a run": ("POST", f"{api}/runs/create", {"experiment_id": experiment_id}),
        "log a metric": (
            "POST",
            f"{api}/runs/log-metric",
            {"run_id": run_id, "key": "planted", "value": 1, "timestamp": 0},
        ),
        "tag a run": ("POST", f"{api}/runs/set-tag", {"run_id": run_id, "key": "planted", "value": "x"}),
        "delete a run": ("POST", f"{api}/runs/delete", {"run_id": run_id}),
        "create a registered model": ("POST", f"{api}/registered-models/create", {"name": "planted"}),
        "describe the model": ("PATCH", f"{api}/registered-models/update", {"name": model, "description": "x"}),
        "register a version": (
            "POST",
            f"{api}/model-versions/create",
            {"name": model, "source": "s3://x", "run_id": run_id},
        ),
        "move an alias": (
            "POST",
            f"{api}/registered-models/alias",
            {"name": model, "alias": "champion", "version": "1"},
        ),
        "delete the model": ("DELETE", f"{api}/registered-models/delete", {"name": model}),
        "upload an artifact": ("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/planted.txt", None),
        "create a user": ("POST", f"{api}/users/create", {"username": "planted", "password": "planted-password-1"}),
        "grant itself EDIT": (
            "POST",
            "/api/3.0/mlflow/users/permissions/grant",
            {**grant, "resource_id": experiment_id},
        ),
    }
    answers = {what: rest(team, *call, "reader", READER_PASSWORD[0]) for what, call in writes.items()}
    assert {what: status for what, status in answers.items() if status != 403} == {}
    assert rest(team, "GET", f"/api/2.0/mlflow/runs/get?run_id={run_id}", None, "reader", READER_PASSWORD[0]) == 200
    after = team.client().get_run(run_id)
    assert after.info.lifecycle_stage == "active" and "planted" not in after.data.tags
    assert "planted" not in after.data.metrics
    assert team.client().get_experiment_by_name("planted") is None
    assert [each.name for each in team.client().search_registered_models()] == [model]


def test_a_read_user_may_not_promote_and_an_edit_user_promotes(team):
    """The role covers the registered model too: read may look, edit may move the champion."""
    assert team.make("team-user", NAME="reader", ROLE="read").returncode == 0  # made in the test before
    login = ["MLFLOW_TRACKING_USERNAME=reader", f"MLFLOW_TRACKING_PASSWORD={READER_PASSWORD[0]}"]
    refused = team.make("promote", *login)
    assert refused.returncode != 0
    assert error_lines(refused) == [
        "error: cannot promote: user 'reader' may not change registered model 'iris-classifier' (HTTP 403): "
        "an admin can give it the right with `make team-user NAME=reader ROLE=edit`"
    ]
    granted = team.make("team-user", NAME="reader", ROLE="edit")
    assert (
        "User reader exists; it now has EDIT on experiment 'iris-classifier' and registered model 'iris-classifier'"
    ) in granted.stdout, granted.stderr
    promoted = team.make("promote", *login)
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.startswith("moved champion of iris-classifier to version 1 ")


def test_a_wrong_password_is_refused_with_http_401_and_writes_nothing(team):
    runs_before = len(team.runs())
    result = team.make("pipeline", "MLFLOW_TRACKING_PASSWORD=not-the-password", FORCE="1")
    assert result.returncode != 0
    assert error_lines(result) == [
        f"error: cannot open the MLflow parent run at {team.server}: the tracking server refused the login of "
        "user 'admin' (HTTP 401): check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in team.env"
    ]
    assert len(team.runs()) == runs_before


def test_a_sweep_on_two_workers_gives_each_point_its_parent_run_on_the_server(team):
    result = team.make("sweep", SWEEP="train.linear.C=0.5,2", JOBS="2")
    assert result.returncode == 0, result.stderr
    parents = team.runs("tags.sweep LIKE 'sweep-%'")
    assert {parent.data.params["train.linear.C"] for parent in parents} == {"0.5", "2.0"}
    for parent in parents:
        assert parent.info.status == "FINISHED"
        children = team.children(parent.info.run_id)
        assert {child.info.run_name for child in children} == STAGES
        assert "accuracy" in parent.data.metrics
    assert "2 points, 2 at a time" in result.stderr


def listening_ports(processes: list) -> list[int]:
    """The TCP ports the processes listen on."""
    return sorted(
        {
            connection.laddr.port
            for process in processes
            for connection in process.net_connections(kind="inet")
            if connection.status == "LISTEN"
        }
    )


def secrets_of(project: Project) -> dict[str, str]:
    """Every secret the stack holds: passwords, S3 keys, the Flask key, as named in stack.json."""
    saved = json.loads((project.root / ".team" / "stack.json").read_text())
    return {name: value for name, value in saved.items() if isinstance(value, str) and value}


def test_no_listener_of_the_stack_lets_another_account_in_without_a_key(team):
    """As another account of the machine: every port answers only 'alive' without a key, no file or socket opens."""
    team_dir = team.root / ".team"
    ports = listening_ports(stack_processes(team))
    assert len(ports) >= 10  # PostgreSQL, MLflow, S3, and SeaweedFS's master, volume, filer, admin (HTTP and gRPC)
    files = [team.root / "team.env", team_dir, *team_dir.glob("*"), *(team_dir / "tls").glob("*")]
    sockets = [*team_dir.glob("s3/sockets/*.sock"), *Path(tempfile.gettempdir()).glob("seaweedfs-*-grpc-*.sock")]
    found = probe(ports, files, sockets, postgres=json.loads((team_dir / "stack.json").read_text())["postgres_port"])
    assert let_in(found) == {}
    assert found["postgres"] == {"kind": "R", "code": 10}  # PostgreSQL asks for a password (SCRAM), lets no one in
    assert {path: answer for path, answer in found["files"].items() if answer != "PermissionError"} == {}
    assert {path: answer for path, answer in found["sockets"].items() if answer == "connected"} == {}


def test_no_secret_on_a_command_line_in_a_log_or_in_a_file_others_can_read(team):
    secrets = secrets_of(team)
    import psutil

    shown = [
        " ".join(process.info["cmdline"] or [])
        for process in psutil.process_iter(["cmdline"])
        if any(value in " ".join(process.info["cmdline"] or []) for value in secrets.values())
    ]
    assert shown == []
    team_dir = team.root / ".team"

    def others_may(path: Path, bits: int) -> bool:
        return bool(stat.S_IMODE(path.lstat().st_mode) & bits)

    def reachable(path: Path) -> bool:  # every folder from .team down to the path lets group or others pass
        return all(
            others_may(folder, 0o011) for folder in path.parents if folder == team_dir or team_dir in folder.parents
        )

    open_to_others = {
        str(path.relative_to(team.root)): oct(stat.S_IMODE(path.lstat().st_mode))
        for path in [team.root / "team.env", *team_dir.rglob("*")]
        if not path.is_symlink() and others_may(path, 0o066) and reachable(path)
    }
    assert open_to_others == {}
    allowed = 0o710 if os.geteuid() == 0 else 0o700  # as root, PostgreSQL's account passes through to its folder
    assert stat.S_IMODE(team_dir.stat().st_mode) == allowed
    logged = {
        str(log.relative_to(team.root)): name
        for log in [*team_dir.glob("logs/*"), *team_dir.glob("s3/logs/*")]
        if log.is_file()
        for name, value in secrets.items()
        if value in log.read_text(errors="replace")
    }
    assert logged == {}


def test_a_part_alive_but_silent_is_named_and_started_again(team):
    """A tracking server that no longer answers (stopped, not dead): named by team-status, by any target within
    seconds, and team-up starts it again."""
    import psutil

    mlflow_server = psutil.Process(json.loads((team.root / ".team" / "pids" / "mlflow.json").read_text())["pid"])
    tree = [mlflow_server, *mlflow_server.children(recursive=True)]
    for process in tree:
        process.suspend()
    try:
        status = team.make("team-status")
        assert status.returncode != 0
        states = [line[16:24].strip() for line in status.stdout.splitlines()[1:4]]  # the column after the part's
        assert states == ["running", "running", "silent"], status.stdout
        started = time.monotonic()
        history = team.make("history")
        assert time.monotonic() - started < 15
        assert error_lines(history) == [
            f"error: make history: the tracking server {team.server} does not answer; "
            "start it again (`make team-up` for the trial stack)"
        ]
        up = team.make("team-up")
        assert up.returncode == 0, up.stderr
        assert "MLflow runs but does not answer; starting it again" in up.stderr
    finally:
        for process in tree:
            with contextlib.suppress(psutil.Error):
                process.resume()
    assert not any(process.is_running() for process in tree)
    assert team.make("team-status").stdout.count(" running ") == 3
    assert team.make("history").returncode == 0


@pytest.fixture(scope="module")
def cluster(team) -> Iterator[Project]:
    """The team copy with a bare git remote it has pushed to, and a trial Dask cluster of two workers."""
    remote = team.root.parent / "git-remote.git"
    team.run("git", "init", "-q", "--bare", str(remote), check=True)
    team.run("git", "remote", "add", "origin", str(remote), check=True)
    if not (team.root / "data/processed/train.parquet").exists():  # run alone, without the tests above
        assert team.make("pipeline").returncode == 0
    assert team.make("dvc-setup").returncode == 0  # the S3 remote goes into the committed .dvc/config
    team.run("git", "add", "-A", check=True)
    team.run("git", "commit", "-q", "--allow-empty", "-m", "Team mode settings", check=True)
    team.run("git", "push", "-q", "-u", "origin", "HEAD", check=True)
    team.git_remote = remote  # type: ignore[attr-defined]
    began = time.monotonic()
    result = team.make("cluster-up", WORKERS="2")
    team.cluster_seconds = time.monotonic() - began  # type: ignore[attr-defined]
    assert result.returncode == 0, result.stderr
    team.cluster_up = result  # type: ignore[attr-defined]
    try:
        yield team
    finally:
        team.make("cluster-down")


def cluster_processes(project: Project) -> list:
    """Every process of the copy's trial cluster, by its pid files: scheduler, nannies, workers."""
    import psutil

    processes = []
    for pid_file in (project.root / ".team" / "pids").glob("dask-*.json"):
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(json.loads(pid_file.read_text())["pid"])
            processes += [process, *process.children(recursive=True)]
    return processes


def point_processes() -> list:
    """The sweep points running on a worker (`python -m src.pipeline.point`)."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        if "src.pipeline.point" in (process.info["cmdline"] or []):
            found.append(process)
    return found


def test_the_trial_cluster_listens_on_127_0_0_1_only_and_writes_the_setting(cluster):
    assert cluster.cluster_up.stdout.startswith("Dask cluster up in ")
    address = settings(cluster)["DASK_SCHEDULER"]
    assert address.startswith("tls://127.0.0.1:")
    # The client's certificate, signed by the stack's CA, readable by this account only.
    for name in ("DASK_TLS_CA_FILE", "DASK_TLS_CERT", "DASK_TLS_KEY"):
        path = Path(settings(cluster)[name])
        assert path.parent == cluster.root / ".team" / "tls" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((cluster.root / ".team" / "tls").stat().st_mode) == 0o700
    processes = cluster_processes(cluster)
    assert len(processes) >= 5  # the scheduler, and a nanny and its worker twice (and their helpers)
    listening = [
        connection.laddr
        for process in processes
        for connection in process.net_connections(kind="inet")
        if connection.status == "LISTEN"
    ]
    assert len(listening) >= 6  # scheduler and dashboard, each nanny, each worker and its HTTP server
    assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening
    status = cluster.make("cluster-status")
    assert status.returncode == 0, status.stderr
    assert "(2 workers joined), dashboard off" in status.stdout


def tls_without_certificate(port: int) -> str:
    """What a TLS client that shows no certificate gets from `port`: the error that ended it, or what it read."""
    import ssl

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw) as tls:
            tls.sendall(b"\x00" * 8)
            return f"read {tls.recv(8)!r}"
    except OSError as error:
        return type(error).__name__


def http_answer(port: int, path: str) -> int | str:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError as error:
        return type(error).__name__


def test_the_trial_cluster_lets_in_no_client_without_a_certificate_of_its_ca(cluster, tmp_path):
    from distributed import Client
    from distributed.security import Security

    from src.team.certs import issue

    address = settings(cluster)["DASK_SCHEDULER"]
    ports = listening_ports(cluster_processes(cluster))
    paths = ["/", "/status", "/health", "/metrics", "/info/main/workers.html", "/json/identity.json", "/api/v1"]
    answers = {port: {path: http_answer(port, path) for path in paths} for port in ports}
    web = {port for port, answered in answers.items() if any(isinstance(status, int) for status in answered.values())}
    assert len(web) == 3  # Dask's HTTP port of the scheduler and of each worker, dashboard or not: it serves nothing
    assert {port: answers[port] for port in web} == {port: dict.fromkeys(paths, 404) for port in web}
    refused = {port: tls_without_certificate(port) for port in set(ports) - web}
    assert len(refused) >= 5  # the scheduler, each nanny and each worker
    assert {port: answer for port, answer in refused.items() if answer.startswith("read")} == {}, refused

    def connects(timeout: float = 2, **options) -> str:  # a refused client waits out its whole timeout
        try:
            with Client(options.pop("to", address), timeout=timeout, **options) as client:
                return str(client.run_on_scheduler(lambda: 1 + 1))
        except Exception as error:
            return type(error).__name__

    other_ca = issue(tmp_path / "other", "intruder")
    foreign = Security(
        tls_ca_file=str(other_ca.ca), tls_client_cert=str(other_ca.cert), tls_client_key=str(other_ca.key)
    )
    team = settings(cluster)
    signed_elsewhere = Security(
        tls_ca_file=team["DASK_TLS_CA_FILE"], tls_client_cert=str(other_ca.cert), tls_client_key=str(other_ca.key)
    )
    right = Security(
        tls_ca_file=team["DASK_TLS_CA_FILE"], tls_client_cert=team["DASK_TLS_CERT"], tls_client_key=team["DASK_TLS_KEY"]
    )
    tries = {
        "plain tcp": connects(to=address.replace("tls://", "tcp://")),
        "no certificate": connects(),
        "a certificate of another CA": connects(security=foreign),
        "one signed by another CA, trusting the right one": connects(security=signed_elsewhere),
        "a self-signed one": connects(security=Security.temporary()),
    }
    assert {what: answer for what, answer in tries.items() if answer == "2"} == {}, tries
    assert connects(security=right, timeout=30) == "2"
    # Another account of the machine, holding no key, gets nothing either: no port, no key file, no clone.
    keys = [cluster.root / "team.env", *(Path(team[name]) for name in ("DASK_TLS_CA_FILE", "DASK_TLS_KEY"))]
    found = probe(ports, [*keys, cluster.root / ".team" / "points"])
    assert let_in(found) == {}
    assert {path: answer for path, answer in found["files"].items() if answer != "PermissionError"} == {}


def test_a_cluster_sweep_is_refused_in_one_line_when_the_workers_could_not_run_it(cluster):
    runs_before = len(cluster.runs())
    free = free_port()
    cases = {
        "DASK_SCHEDULER=tcp://10.20.30.40:8786": "plain tcp off this machine",
        f"DASK_SCHEDULER=tcp://127.0.0.1:{free}": "set DASK_ALLOW_PLAINTEXT=1 if no one else has an account here",
        f"DASK_SCHEDULER=tls://127.0.0.1:{free}": "cannot reach the Dask scheduler at",
    }
    for setting, message in cases.items():
        began = time.monotonic()
        result = cluster.make("sweep", setting, SWEEP="train.linear.C=0.5,2")
        assert result.returncode != 0
        assert len(error_lines(result)) == 1 and message in result.stderr, result.stderr
        assert time.monotonic() - began < 15  # a scheduler that does not answer is named at once, not after retries
    worker = cluster.make("worker", SCHEDULER="tcp://10.20.30.40:8786")
    assert worker.returncode == 2 and "plain tcp off this machine" in worker.stderr, worker.stderr
    params = cluster.root / "params.yaml"
    original = params.read_text()
    params.write_text(original.replace("C: 1.0", "C: 3.0"))
    try:
        dirty = cluster.make("sweep", SWEEP="train.linear.C=0.5,2")
    finally:
        params.write_text(original)
    assert dirty.returncode == 2
    assert len(error_lines(dirty)) == 1 and "uncommitted changes (params.yaml)" in dirty.stderr, dirty.stderr
    cluster.run("git", "commit", "-q", "--allow-empty", "-m", "Not pushed", check=True)
    try:
        unpushed = cluster.make("sweep", SWEEP="train.linear.C=0.5,2")
    finally:
        cluster.run("git", "reset", "-q", "--hard", "HEAD~1", check=True)
    assert unpushed.returncode == 2
    assert len(error_lines(unpushed)) == 1 and "is not on the git remote origin" in unpushed.stderr, unpushed.stderr
    assert len(cluster.runs()) == runs_before  # nothing was opened


def test_a_cluster_sweep_survives_a_killed_worker_and_gives_one_experiment_and_run_per_point(cluster):
    import psutil

    began = time.monotonic()
    sweep = cluster.spawn("sweep", SWEEP="train.linear.C=0.5,2", stderr=subprocess.PIPE)
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and time.monotonic() < deadline and sweep.poll() is None:
        for point in point_processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                if any("exp" in child.cmdline() for child in point.children()):  # `dvc exp run` has started
                    killed = point.parent()
                    killed.kill()
                    break
        time.sleep(0.2)
    stdout, stderr = sweep.communicate(timeout=400)
    seconds = time.monotonic() - began
    assert killed is not None, stderr
    assert sweep.returncode == 0, stderr
    parents = cluster.runs("tags.`sweep.cluster` LIKE 'tls://%'")
    assert len(parents) == 2, [parent.info.run_name for parent in parents]
    assert {parent.data.params["train.linear.C"] for parent in parents} == {"0.5", "2.0"}
    assert sorted(parent.data.tags["sweep.attempt"] for parent in parents) == ["1", "2"]
    for parent in parents:
        assert parent.info.status == "FINISHED", parent.data.tags
        children = cluster.children(parent.info.run_id)
        assert sorted(child.info.run_name for child in children) == sorted(STAGES)
        assert {child.info.status for child in children} == {"FINISHED"}
        assert f"point {parent.info.run_name} (" in stderr
    assert stdout.index("| 1 |") < stdout.index("| 2 |")  # the ranking
    assert not point_processes()  # nothing of a point outlives it, the killed one included
    # One experiment ref per point on the git remote, its outputs in the S3 bucket, and fetched here.
    names = {parent.info.run_name for parent in parents}
    refs = cluster.run("git", "ls-remote", str(cluster.git_remote), "refs/exps/*", check=True).stdout.splitlines()
    assert sorted(line.rsplit("/", 1)[-1] for line in refs) == sorted(names)
    keys = set(s3_keys(cluster, "dvc-store"))
    for line in refs:
        commit = line.split()[0]
        lock = yaml.safe_load(cluster.run("git", "show", f"{commit}:dvc.lock", check=True).stdout)
        [model] = [out for out in lock["stages"]["train"]["outs"] if out["path"] == "models/model.joblib"]
        assert f"ml-research-template/files/md5/{model['md5'][:2]}/{model['md5'][2:]}" in keys
    assert names <= set(cluster.run(str(VENV / "bin" / "dvc"), "exp", "list", "--name-only", check=True).stdout.split())
    # Cross-validation on the cluster (the point's folds went to it) scores as this machine does, on the
    # point's own params and training table (from its commit and this clone's DVC cache, which `dvc exp pull` filled).
    from src.config import validate
    from src.io import read_features
    from src.ml.models import fit

    [point] = [parent for parent in parents if parent.data.params["train.linear.C"] == "0.5"]
    commit = {line.rsplit("/", 1)[-1]: line.split()[0] for line in refs}[point.info.run_name]
    config = validate(yaml.safe_load(cluster.git("show", f"{commit}:params.yaml")), "params.yaml")
    lock = yaml.safe_load(cluster.git("show", f"{commit}:dvc.lock"))
    [table] = [out for out in lock["stages"]["data_split"]["outs"] if out["path"] == "data/processed/train.parquet"]
    cached = cluster.root / ".dvc/cache/files/md5" / table["md5"][:2] / table["md5"][2:]
    features, labels = read_features(cached, "data_split", config.data_load.target)
    _, here, _ = fit(features, labels, config.train, "classification", "accuracy", config.base.random_state)
    assert config.train.linear.C == 0.5
    assert {name: point.data.metrics[name] for name in here} == here
    [train] = [child for child in cluster.children(point.info.run_id) if child.info.run_name == "train"]
    assert train.data.tags["train.parallel_work"] == settings(cluster)["DASK_SCHEDULER"]
    timings = Path(os.environ.get("CLUSTER_TIMINGS", "/dev/null"))
    timings.write_text(f"cluster up {cluster.cluster_seconds:.1f} s; sweep with a killed worker {seconds:.1f} s\n")


def test_a_point_that_runs_again_after_its_experiment_was_pushed_logs_nothing(cluster):
    # As when the scheduler runs a point again while its first attempt still runs: the later push loses.
    [first] = [
        parent
        for parent in cluster.runs("tags.`sweep.cluster` LIKE 'tls://%'")
        if parent.data.params["train.linear.C"] == "2.0" and parent.info.status == "FINISHED"
    ]
    name = first.info.run_name
    remote = str(cluster.git_remote)
    before = cluster.run("git", "ls-remote", remote, f"refs/exps/*/{name}", check=True).stdout
    duplicate = cluster.client().create_run(first.info.experiment_id, run_name=name).info.run_id
    clone = cluster.root.parent / "duplicate"
    cluster.run("git", "clone", "-q", remote, str(clone), check=True)
    cluster.run("git", "-C", str(clone), "checkout", "-q", "--detach", first.data.tags["git.commit"], check=True)
    team = settings(cluster)
    command = [str(VENV / "bin" / "python"), "-m", "src.pipeline.point", "--name", name]
    command += ["--parent-run-id", duplicate, "--set", "train.linear.C=2.0"]
    environment = cluster.env(**team, PATH=f"{VENV / 'bin'}:{os.environ['PATH']}")
    environment["PIPELINE_RECORDS_DIR"] = str(clone / ".pipeline")
    point = subprocess.run(command, cwd=clone, capture_output=True, text=True, timeout=300, env=environment)
    outcome = json.loads(point.stdout.splitlines()[-1])
    assert point.returncode == 3 and outcome["status"] == "LOST", point.stdout + point.stderr
    assert cluster.run("git", "ls-remote", remote, f"refs/exps/*/{name}", check=True).stdout == before
    run = cluster.client().get_run(duplicate)
    assert run.info.status == "RUNNING" and not cluster.children(duplicate)  # it logged nothing
    assert cluster.client().get_run(first.info.run_id).data.tags["sweep.attempt"] in ("1", "2")
    cluster.client().set_terminated(duplicate, "KILLED")
    shutil.rmtree(clone)


def sweep_with_a_point_running(cluster: Project, grid: str) -> subprocess.Popen:
    """Start `make sweep SWEEP=grid` on the cluster; return once a point runs its DVC experiment on a worker."""
    import psutil

    sweep = cluster.spawn("sweep", SWEEP=grid, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    started = False
    while not started and time.monotonic() < deadline and sweep.poll() is None:
        with contextlib.suppress(psutil.NoSuchProcess):
            started = any("exp" in child.cmdline() for point in point_processes() for child in point.children())
        time.sleep(0.2)
    assert started
    return sweep


def test_ctrl_c_on_a_cluster_sweep_ends_its_points_killed_and_keeps_the_cluster(cluster):
    sweep = sweep_with_a_point_running(cluster, "train.linear.C=0.25,4")
    os.killpg(sweep.pid, signal.SIGINT)  # Ctrl-C in the terminal
    _, stderr = sweep.communicate(timeout=120)
    assert sweep.returncode == -signal.SIGINT and "sweep] Error 130" in stderr, stderr  # make dies of the signal
    [line] = error_lines(subprocess.CompletedProcess(sweep.args, sweep.returncode, "", stderr))
    assert "interrupted (SIGINT)" in line and "the cluster keeps running" in line, line
    parents = [
        parent
        for parent in cluster.runs("tags.`sweep.cluster` LIKE 'tls://%'")
        if parent.data.params["train.linear.C"] in ("0.25", "4.0")
    ]
    assert len(parents) == 2
    assert {parent.info.status for parent in parents} == {"KILLED"}
    for parent in parents:
        assert all(child.info.status != "RUNNING" for child in cluster.children(parent.info.run_id))
    assert not point_processes()
    assert "(2 workers joined)" in cluster.make("cluster-status").stdout


def test_a_scheduler_killed_mid_sweep_ends_it_in_one_line_with_the_statuses_mlflow_holds(cluster):
    sweep = sweep_with_a_point_running(cluster, "train.linear.C=0.125,8")
    stop_part(cluster, "dask-scheduler")  # as a crash, or the OOM killer, would
    stdout, stderr = sweep.communicate(timeout=120)
    assert sweep.returncode != 0
    [line] = error_lines(subprocess.CompletedProcess(sweep.args, sweep.returncode, "", stderr))
    address = settings(cluster)["DASK_SCHEDULER"]
    assert line.startswith("error: sweep sweep-") and f"the Dask scheduler at {address} stopped answering" in line
    assert line.endswith("start the cluster again (`make cluster-up` for the trial one) and run the sweep again")
    assert "Traceback" not in stderr and "distributed." not in stderr, stderr
    # The table and MLflow agree on each point, and no run is left RUNNING.
    shown = {row.split("|")[6].strip(): row.split("|")[4].strip() for row in stdout.splitlines()[2:]}
    parents = {
        parent.info.run_id: parent
        for parent in cluster.runs("tags.`sweep.cluster` LIKE 'tls://%'")
        if parent.data.params["train.linear.C"] in ("0.125", "8.0")
    }
    assert len(shown) == 2 and shown == {run_id: parent.info.status for run_id, parent in parents.items()}
    assert set(shown.values()) <= {"FAILED", "FINISHED"}
    for run_id in parents:
        assert all(child.info.status != "RUNNING" for child in cluster.children(run_id))
    # The points' processes end as their workers close, and leave no clone behind.
    deadline = time.monotonic() + 60
    while point_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not point_processes()
    assert {path.name for path in (cluster.root / ".team" / "points").iterdir()} <= {"dvc-cache"}
    # The next commands name the dead scheduler and how to start it again; make cluster-up does.
    status = cluster.make("cluster-status")
    assert status.returncode != 0 and "team.env still names this scheduler, which is not running" in status.stdout
    again = cluster.make("sweep", SWEEP="train.linear.C=0.125,8")
    assert error_lines(again) == [
        f"error: cannot reach the Dask scheduler at {address} (DASK_SCHEDULER in team.env): nothing answers there "
        "(ConnectionRefusedError); start it with `make cluster-up`, or check the address"
    ]
    up = cluster.make("cluster-up", WORKERS="2")
    assert up.returncode == 0, up.stderr
    assert settings(cluster)["DASK_SCHEDULER"] != address


def test_cluster_down_leaves_no_process_and_takes_the_setting_out(cluster):
    import psutil

    processes = cluster_processes(cluster)
    assert processes
    result = cluster.make("cluster-down")
    assert result.returncode == 0, result.stderr
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert not alive
    assert not {"DASK_SCHEDULER", "DASK_TLS_CA_FILE", "DASK_TLS_CERT", "DASK_TLS_KEY"} & set(settings(cluster))
    assert not cluster_processes(cluster)


def test_a_tracking_server_lost_after_the_last_stage_records_the_run_finished_later(team):
    process = team.spawn("pipeline", "FORCE=1", RUN_NAME="server-lost")
    deadline = time.monotonic() + 300
    while not any(
        json.loads(record.read_text()).get("status") == "FINISHED"
        for record in (team.root / ".pipeline").glob("*/evaluate.json")
    ):
        assert time.monotonic() < deadline and process.poll() is None, "evaluate did not finish"
        time.sleep(0.1)
    stop_part(team, "mlflow")  # every stage succeeded; the pipeline has not recorded them yet
    _, stderr = process.communicate(timeout=300)
    assert process.returncode != 0
    [line] = error_lines(subprocess.CompletedProcess([], 1, "", stderr))
    assert f"the tracking server {team.server} does not answer" in line
    assert line.endswith("records them and ends the run FINISHED")
    [run_id] = [path.parent.name for path in (team.root / ".pipeline").glob("*/outcome.json")]

    assert team.make("team-up").returncode == 0
    later = team.make("history")  # any target, once the server is back
    assert later.returncode == 0, later.stderr
    assert f"recorded run {run_id} late: FINISHED" in later.stderr
    run = team.client().get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "server-lost"
    assert run.data.tags["pipeline.note"].startswith("closed late by make history: the pipeline ended at ")
    assert "accuracy" in run.data.metrics
    children = team.children(run_id)
    assert {child.info.run_name: child.info.status for child in children} == dict.fromkeys(STAGES, "FINISHED")
    assert team.runs("attributes.status = 'RUNNING'") == []
    assert not (team.root / ".pipeline" / run_id).exists()


def test_team_down_stops_everything_and_keeps_every_byte(team, tmp_path):
    processes = stack_processes(team)
    assert len(processes) >= 4  # PostgreSQL has helper processes, the MLflow server a worker
    down = team.make("team-down")
    assert down.returncode == 0, down.stderr
    assert [process for process in processes if process.is_running()] == []
    assert processes_under(team.root) == []
    assert team.make("team-status").returncode != 0
    up = team.make("team-up")
    assert up.returncode == 0, up.stderr
    assert [run.info.run_name for run in team.parents() if run.info.run_name == "team-run"] == ["team-run"]
    # S3's objects survived too: a fresh clone pulls v1's data byte for byte, and the champion still loads.
    clone = Project(reachable_folder("team-clone-") / "repo", team.remote)
    try:
        team.run("git", "clone", "-q", "--branch", "v1", str(team.root), str(clone.root), check=True)
        shutil.copy(team.root / "team.env", clone.root / "team.env")
        pulled = clone.make("pull")
        assert pulled.returncode == 0, pulled.stderr
        assert_outputs_match_lock(clone, "v1")
    finally:
        shutil.rmtree(clone.root.parent, ignore_errors=True)
    import mlflow

    mlflow.set_tracking_uri(team.server)
    champion = mlflow.pyfunc.load_model("models:/iris-classifier@champion")
    rows = pd.read_parquet(team.root / "data/processed/test.parquet").drop(columns=["target"]).head(3)
    assert len(champion.predict(rows)) == 3


def test_a_part_that_cannot_start_is_named_and_nothing_is_left_running(team):
    base = reachable_folder("team-fail-")
    other = new_project(base / "repo", base / "remote")
    try:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            taken = str(busy.getsockname()[1])
            result = other.make(
                "team-up", TEAM_MLFLOW_PORT=str(free_port()), TEAM_S3_PORT=taken, TEAM_POSTGRES_PORT=str(free_port())
            )
        assert result.returncode != 0
        assert error_lines(result) == [
            f"error: port {taken} for S3 (SeaweedFS) is taken by another program (another trial stack?): "
            "start this one on a free port with `TEAM_S3_PORT=<port> make team-up`; stopped what had started"
        ]
        assert processes_under(other.root) == []
        assert not (other.root / "team.env").exists()
    finally:
        other.make("team-down")
        shutil.rmtree(base, ignore_errors=True)
