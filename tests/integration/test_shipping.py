"""Shipping the template: `make new`, the git hooks, and `pip install -e .`."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.integration.conftest import VENV, new_project

pytestmark = pytest.mark.slow


def test_make_new_creates_a_named_project_whose_quick_tests_pass(tmp_path):
    project = new_project(tmp_path / "template", tmp_path / "remote")
    destination = tmp_path / "my project"
    result = project.make("new", f"DEST={destination}", "NAME=Flower Lab")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"New project at {destination}: cd there and run `make pipeline`."
    assert " passed" in result.stdout and " failed" not in result.stdout  # its own quick tests ran
    params = yaml.safe_load((destination / "params.yaml").read_text())
    assert params["mlflow"]["experiment_name"] == params["registry"]["model_name"] == "flower-lab"
    assert yaml.safe_load((destination / "mkdocs.yaml").read_text())["site_name"] == "Flower Lab"
    assert (destination / "README.md").read_text().startswith("# Flower Lab")
    assert "PROJECT_NAME ?= flower-lab" in (destination / "Makefile").read_text()
    for left_out in ("dvc.lock", "mlflow.db", "mlruns", ".dvc/config.local", ".dvc/cache", ".venv"):
        assert not (destination / left_out).exists(), left_out
    log = subprocess.run(["git", "log", "--format=%s"], cwd=destination, capture_output=True, text=True, check=True)
    assert log.stdout.splitlines() == ["Flower Lab: a new project from the ML research template"]
    status = subprocess.run(["git", "status", "--porcelain"], cwd=destination, capture_output=True, text=True)
    assert status.stdout == ""  # the quick tests left nothing behind
    again = project.make("new", f"DEST={destination}", "NAME=Flower Lab")
    assert again.returncode != 0
    assert f"error: {destination} exists and is not empty; choose a new DEST" in again.stderr


def test_pre_commit_is_clean_on_the_template_and_make_hooks_installs_the_hooks(tmp_path):
    project = new_project(tmp_path / "repo", tmp_path / "remote")
    result = project.run(str(VENV / "bin" / "pre-commit"), "run", "--all-files", PROJECT_VENV=str(VENV))
    assert result.returncode == 0, result.stdout
    assert result.stdout.count("Passed") == 5
    assert project.make("hooks").returncode == 0
    for hook in ("pre-commit", "pre-push", "post-checkout"):
        assert (project.root / ".git" / "hooks" / hook).exists(), hook
    (project.root / "src" / "sloppy.py").write_text("import os\n")
    sloppy = project.run(str(VENV / "bin" / "pre-commit"), "run", "--files", "src/sloppy.py", PROJECT_VENV=str(VENV))
    assert sloppy.returncode != 0
    assert "F401" in sloppy.stdout


def test_the_source_installs_from_the_lock_with_pip_install_e(tmp_path):
    project = new_project(tmp_path / "repo", tmp_path / "remote")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    # The lock first, hashes checked (the build backend, setuptools, is in it), then the package alone.
    sync = subprocess.run(
        [VENV / "bin" / "uv", "pip", "sync", "--python", python, "--require-hashes", project.root / "requirements.txt"],
        capture_output=True,
        text=True,
    )
    assert sync.returncode == 0, sync.stderr
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "-e", project.root],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    # The package's dependencies (requirements.in's ranges) are met by the lock's versions.
    checked = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout
    where = subprocess.run(
        [python, "-c", "import importlib.util; print(importlib.util.find_spec('src.config').origin)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip() == str(project.root / "src" / "config.py")
