"""What ships with the template: the Dockerfile (no container engine here: checked statically) and pyproject."""

from __future__ import annotations

import re
import shlex
import tomllib

from tests.conftest import PROJECT_ROOT

DOCKERFILE = (PROJECT_ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    """The arguments of every `name` instruction, continuation lines joined."""
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(f"{name} ")]


def make_targets() -> set[str]:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE))


def test_the_base_image_is_a_pinned_slim_python_3_11():
    [base] = instructions("FROM")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base


def test_every_copy_source_exists_and_secrets_stay_out():
    for arguments in instructions("COPY"):
        sources = [word for word in shlex.split(arguments) if not word.startswith("--")][:-1]
        for source in sources:
            assert (PROJECT_ROOT / source).exists(), source
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
    assert {".venv", "team.env", ".team", "mlflow.db", ".dvc/config.local", ".dvc/cache"} <= set(ignored)


def test_a_non_root_user_runs_an_existing_make_target():
    users = instructions("USER")
    assert users and users[-1] not in ("root", "0")
    assert DOCKERFILE.index("USER ") < DOCKERFILE.index("ENTRYPOINT")
    [entrypoint] = instructions("ENTRYPOINT")
    [command] = instructions("CMD")
    assert entrypoint == '["make"]'
    assert set(re.findall(r'"([a-z-]+)"', command)) <= make_targets()
    for arguments in instructions("RUN"):
        for target in re.findall(r"\bmake ([a-z-]+)", arguments):
            assert target in make_targets(), target


def test_pyproject_names_the_package_and_takes_its_dependencies_from_the_in_files():
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    assert project["project"]["name"] == "ml-research-template"
    assert project["project"]["dynamic"] == ["dependencies", "optional-dependencies"]
    dynamic = project["tool"]["setuptools"]["dynamic"]
    assert dynamic["dependencies"]["file"] == ["requirements.in"]
    assert {extra: files["file"] for extra, files in dynamic["optional-dependencies"].items()} == {
        "team": ["requirements-team.in"],
        "dev": ["requirements-dev.in"],
    }
