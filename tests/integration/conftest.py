"""Run the real pipeline (make, git, DVC, MLflow) in a temporary copy of the repository."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from src.versions.runner import copy_work_tree
from tests.conftest import seed_store

# The virtualenv `make test` runs in; copies reuse it instead of installing their own.
VENV = Path(os.environ.get("PROJECT_VENV") or sys.prefix)


@dataclass
class Project:
    """A copy of the repository under tmp_path, with its own git repo, DVC remote and MLflow store."""

    root: Path
    remote: Path
    server: str = ""  # a tracking server's URL (team mode); the copy's own mlflow.db otherwise

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a user's shell would have, pointed at this copy."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("MLFLOW_", "PIPELINE_", "DVC_", "PROJECT_"))
            and key not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "VENV")
        }
        env.update(
            VENV=str(VENV),
            DVC_REMOTE_URL=str(self.remote),
            GIT_AUTHOR_NAME="Test",
            GIT_AUTHOR_EMAIL="test@example.com",
            GIT_COMMITTER_NAME="Test",
            GIT_COMMITTER_EMAIL="test@example.com",
        )
        env.update(extra)
        return env

    def run(self, *command: str, check: bool = False, **env: str) -> subprocess.CompletedProcess:
        """Run a command in the copy and capture its output."""
        return subprocess.run(
            command, cwd=self.root, env=self.env(**env), capture_output=True, text=True, check=check, timeout=600
        )

    def make(self, *targets: str, **env: str) -> subprocess.CompletedProcess:
        """Run make in the copy; `targets` may include VAR=value words."""
        return self.run("make", "--no-print-directory", *targets, **env)

    def param(self, section: str, key: str):
        """One value of the copy's params.yaml; `key` may be dotted (`linear.C`)."""
        value = yaml.safe_load((self.root / "params.yaml").read_text())[section]
        for part in key.split("."):
            value = value[part]
        return value

    def set_param(self, section: str, key: str, value) -> None:
        """Change one value of the copy's params.yaml; `key` may be dotted (`linear.C`)."""
        path = self.root / "params.yaml"
        params = yaml.safe_load(path.read_text())
        *parents, last = key.split(".")
        mapping = params[section]
        for part in parents:
            mapping = mapping[part]
        mapping[last] = value
        path.write_text(yaml.safe_dump(params, sort_keys=False))

    def pipeline_with(self, section: str, key: str, value) -> subprocess.CompletedProcess:
        """Run `make pipeline` with one param changed, then put the old value back."""
        before = self.param(section, key)
        self.set_param(section, key, value)
        try:
            return self.make("pipeline")
        finally:
            self.set_param(section, key, before)

    def spawn(self, *targets: str, stderr: int = subprocess.PIPE, **env: str) -> subprocess.Popen:
        """Start make in the copy in its own session, as a terminal runs it; stdout is captured.

        A server's stderr (a log line per request) should go to DEVNULL: an unread pipe fills and blocks it.
        """
        return subprocess.Popen(
            ["make", "--no-print-directory", *targets],
            cwd=self.root,
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )

    def git(self, *arguments: str) -> str:
        """Run git in the copy and return its stdout."""
        return self.run("git", *arguments, check=True).stdout

    @property
    def tracking_uri(self) -> str:
        return self.server or f"sqlite:///{self.root / 'mlflow.db'}"

    def client(self):
        """An MlflowClient on the copy's store."""
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def runs(self, filter_string: str = "") -> list:
        """Every run of every experiment in the copy's store, newest first."""
        client = self.client()
        experiments = [experiment.experiment_id for experiment in client.search_experiments()]
        return client.search_runs(experiments, filter_string=filter_string, order_by=["attributes.start_time DESC"])

    def logged_model(self, run):
        """The model logged by a stage run, loaded through mlflow.pyfunc."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        [model] = mlflow.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'",
            output_format="list",
        )
        return mlflow.pyfunc.load_model(f"models:/{model.model_id}")

    def parents(self) -> list:
        return self.runs("tags.`pipeline.role` = 'parent'")

    def children(self, parent_run_id: str) -> list:
        return self.runs(f"tags.mlflow.parentRunId = '{parent_run_id}'")


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The `error: ...` lines a command printed on stderr."""
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def output_md5(path: Path) -> str:
    """The hash DVC records for an output: its file's MD5, or for a folder the hash of its files' MD5s."""
    from src.ml.sources import dvc_directory_md5

    if path.is_dir():
        files = {file.relative_to(path).as_posix(): file for file in path.rglob("*") if file.is_file()}
        return dvc_directory_md5({name: hashlib.md5(file.read_bytes()).hexdigest() for name, file in files.items()})
    return hashlib.md5(path.read_bytes()).hexdigest()


def assert_outputs_match_lock(project: Project, revision: str = "") -> None:
    """Assert that every output dvc.lock records at `revision` (the working tree's if empty) is in the copy, as is."""
    text = project.git("show", f"{revision}:dvc.lock") if revision else (project.root / "dvc.lock").read_text()
    lock = yaml.safe_load(text)
    for stage in lock["stages"].values():
        for output in stage["outs"]:
            assert output_md5(project.root / output["path"]) == output["md5"], output["path"]


def linear(root: Path) -> None:
    """Train the copy's models with a logistic regression: seconds quicker per run than the default trees."""
    path = root / "params.yaml"  # edited as text: `make new` copies the comments
    text, count = re.subn(r"^(  estimator: )\S+", r"\g<1>linear", path.read_text(), count=1, flags=re.MULTILINE)
    assert count == 1, "params.yaml has no train.estimator line"
    path.write_text(text)


def new_project(root: Path, remote: Path, template_estimator: bool = False, store: bool = True) -> Project:
    """A committed copy of the repository at `root` with a DVC remote at `remote`.

    The copy trains a logistic regression, quicker than the template's default
    (gradient-boosted trees), unless `template_estimator`: the tests of what a user
    runs first (the template as it is, a table of their own) keep the default.
    It has an empty MLflow store already, unless `store` is False: the tests of a
    first run leave it to the pipeline to make.
    """
    project = Project(copy_work_tree(root, prepare=None if template_estimator else linear), remote)
    if store:
        seed_store(project.root)
    return project


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A fresh copy of the repository, nothing run yet."""
    return new_project(tmp_path / "repo", tmp_path / "remote")


@pytest.fixture(scope="module")
def piped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, subprocess.CompletedProcess]:
    """A copy of the repository after one `make pipeline`; tests only read it."""
    base = tmp_path_factory.mktemp("piped")
    project = new_project(base / "repo", base / "remote", template_estimator=True, store=False)
    return project, project.make("pipeline")


# The docs site and the MLflow UI as a person sees them: Debian's chromium driven by playwright.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium; skipped without Debian's chromium, except under CI=true, where that fails."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *arguments) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # a browser that closes a connection early is not an error of the site


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve a directory over HTTP on 127.0.0.1 and yield its base URL."""
    server = QuietServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def open_page(browser, url: str):
    """Open `url` in a new page and record its console errors and failed requests."""
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(f"console: {message.text}") if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url}"))
    page.on(
        "response",
        lambda response: problems.append(f"HTTP {response.status}: {response.url}") if response.status >= 400 else None,
    )
    page.goto(url, wait_until="load")
    return page, problems
