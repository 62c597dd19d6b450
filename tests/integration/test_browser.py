"""The docs site and the MLflow UI, as a person sees them: in headless Chromium.

Chromium is Debian's (`apt-get install chromium`, as .ci/run does), driven by
playwright. Without it these tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest

from src.paths import pipeline_stages
from tests.integration.conftest import Project, new_project, open_page, serve

pytestmark = pytest.mark.slow

STAGES = list(pipeline_stages())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A copy after `make pipeline` and `make docs`."""
    base = tmp_path_factory.mktemp("browser")
    project = new_project(base / "repo", base / "remote")
    result = project.make("pipeline", RUN_NAME="seen-in-browser")
    assert result.returncode == 0, result.stderr
    result = project.make("docs")
    assert result.returncode == 0, result.stderr
    return project


def test_make_docs_builds_strictly(project):
    site = project.root / "site"
    assert (site / "index.html").exists()
    assert (site / "results.html").exists()
    assert (site / "generated/confusion_matrix.png").exists()
    assert (site / "your-table.html").exists()


def test_every_page_loads_with_no_errors_and_no_broken_links_or_images(project, browser):
    site = project.root / "site"
    pages = sorted(path.relative_to(site).as_posix() for path in site.glob("*.html") if path.name != "404.html")
    assert len(pages) >= 8
    with serve(site) as base:
        for name in pages:
            page, problems = open_page(browser, base + name)
            links = page.eval_on_selector_all("a[href]", "anchors => anchors.map(a => a.href)")
            images = page.eval_on_selector_all(
                "img", "images => images.map(i => [i.currentSrc || i.src, i.complete && i.naturalWidth > 0])"
            )
            page.close()
            assert problems == [], name
            for link in links:
                parsed = urlparse(link)
                if link.startswith(base):
                    target = site / parsed.path.lstrip("/")
                    target = target / "index.html" if target.is_dir() else target
                    assert target.exists(), f"{name} links to missing {link}"
            for source, loaded in images:
                assert loaded, f"{name}: image {source} did not load"


def test_results_page_shows_the_accuracy_and_the_confusion_matrix(project, browser):
    accuracy = json.loads((project.root / "reports/metrics.json").read_text())["accuracy"]
    with serve(project.root / "site") as base:
        page, problems = open_page(browser, urljoin(base, "results.html"))
        accuracy_row = page.locator("tr", has=page.get_by_role("cell", name="accuracy", exact=True)).inner_text()
        matrix_width = page.eval_on_selector("img[alt^='Confusion matrix']", "image => image.naturalWidth")
        page.close()
    assert accuracy_row.split() == ["evaluate", "accuracy", f"{accuracy:.4f}"]
    assert matrix_width > 100
    assert problems == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def other_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        address = probe.getsockname()[0]
        return None if address.startswith("127.") else address
    return None


def wait_for_page(url: str, process: subprocess.Popen, timeout: float = 90) -> str:
    """Wait until `url` answers, while `process` (the server's make) runs; return the page."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
            return answer.read().decode()
        assert process.poll() is None, f"{url}: the server exited with {process.returncode}"
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout} s")


@pytest.fixture(scope="module")
def mlflow_ui(project) -> Iterator[tuple[subprocess.Popen, int]]:
    """`make ui` running in the copy, as a user starts it in a terminal."""
    port = free_port()
    process = project.spawn("ui", f"PORT={port}", stderr=subprocess.DEVNULL)
    wait_for_page(f"http://127.0.0.1:{port}/health", process)
    yield process, port
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def login(project) -> dict[str, str]:
    """The admin's login of `make ui`, from the file its first start made."""
    password = (project.root / ".mlflow-ui/password").read_text(encoding="utf-8").strip()
    return {"username": "admin", "password": password}


def status(url: str, credentials: dict[str, str] | None = None) -> int:
    """The HTTP status `url` answers a GET with, with the basic-auth login given or none."""
    request = urllib.request.Request(url)
    if credentials:
        pair = f"{credentials['username']}:{credentials['password']}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def test_make_ui_prints_the_url_and_answers_on_loopback_only(mlflow_ui):
    process, port = mlflow_ui
    assert process.stdout.readline().strip() == (
        f"MLflow UI on http://127.0.0.1:{port}: log in as admin with the password in .mlflow-ui/password"
        " (Ctrl-C stops it)"
    )
    address = other_address()
    if address is None:
        pytest.skip("this machine has no interface besides loopback")
    with pytest.raises(OSError), socket.create_connection((address, port), timeout=2):
        pass


def test_make_ui_answers_nothing_without_its_login_kept_for_this_account_alone(project, mlflow_ui):
    process, port = mlflow_ui
    folder = project.root / ".mlflow-ui"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("password", "secret-key", "auth.ini", "auth.db"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    assert ".mlflow-ui" not in project.git("status", "--porcelain", "--untracked-files=all")
    admin = login(project)
    base = f"http://127.0.0.1:{port}"
    for path in ("/", "/api/2.0/mlflow/experiments/search?max_results=1", "/ajax-api/2.0/mlflow/runs/search"):
        assert status(base + path) == 401, path
    assert status(base + "/api/2.0/mlflow/experiments/search?max_results=1", {**admin, "password": "not it"}) == 401
    assert status(base + "/api/2.0/mlflow/experiments/search?max_results=1", admin) == 200
    assert status(base + "/health") == 200
    hidden = {admin["password"], (folder / "secret-key").read_text(encoding="utf-8").strip()}
    command_lines = []  # of every process make ui started, as ps shows them to any account
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if os.getpgid(int(path.parent.name)) == process.pid:
                command_lines.append(path.read_bytes().decode(errors="replace"))
    assert any("basic-auth" in line for line in command_lines)
    for line in command_lines:
        assert not any(secret in line for secret in hidden), line


def test_mlflow_ui_lists_the_parent_run_and_its_five_stage_runs(project, browser, mlflow_ui):
    _, port = mlflow_ui
    [parent] = project.parents()
    assert parent.info.run_name == "seen-in-browser"
    context = browser.new_context(http_credentials=login(project), viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{port}/#/experiments/{parent.info.experiment_id}/runs")
    row = page.locator("div[role=row]", has_text="seen-in-browser")
    row.wait_for(timeout=60_000)
    for stage in STAGES:
        assert page.get_by_text(stage, exact=True).count() == 0
    row.locator("button[data-component-id*='runnamecellrenderer']").click()
    for stage in STAGES:
        page.get_by_text(stage, exact=True).first.wait_for(timeout=30_000)
    context.close()


def test_ctrl_c_stops_everything_make_ui_started(mlflow_ui):
    process, port = mlflow_ui
    os.killpg(process.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
    process.wait(timeout=30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.3)
    else:
        pytest.fail("processes of make ui are still running after Ctrl-C")
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_make_docs_serve_serves_the_site_on_loopback(project):
    port = free_port()
    process = project.spawn("docs-serve", f"DOCS_PORT={port}", stderr=subprocess.DEVNULL)
    try:
        assert "ML research template" in wait_for_page(f"http://127.0.0.1:{port}/", process)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.communicate(timeout=30)
