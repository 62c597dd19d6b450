"""`make new DEST=../my-project NAME="My project"`: start a project of your own from this template.

The template's tracked files are copied into a fresh git repository at DEST with
the project's name in place of the template's (params' experiment and model
name, the Makefile, pyproject, the docs and README), without the example
results (dvc.lock, labelled batches), with an empty MLflow store and no DVC
cache or remote settings. The new project's quick tests then run there.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from src.cli import EXIT_BAD_CONFIG, fail
from src.logs import setup_logging
from src.paths import PROJECT_ROOT
from src.versions.runner import copy_work_tree

logger = logging.getLogger(__name__)

TEMPLATE_SLUG = "ml-research-template"
TEMPLATE_TITLE = "ML research template"
TEMPLATE_MODEL = "iris-classifier"
# The example results: the new project makes its own.
LEFT_OUT = re.compile(r"^(dvc\.lock|data/batches/.+\.(dvc|gitignore))$")
QUICK_TESTS = "-m 'not slow'"


def slug(name: str) -> str:
    """`My project!` -> `my-project`: the name as it appears in paths, MLflow and pyproject."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def rename(text: str, name: str) -> str:
    """Replace the template's names in a file's text with the project's."""
    return text.replace(TEMPLATE_SLUG, slug(name)).replace(TEMPLATE_MODEL, slug(name)).replace(TEMPLATE_TITLE, name)


def personalise(root: Path, name: str) -> None:
    """Rename the template's names in every text file of the copy, in place."""
    for path in root.rglob("*"):
        if ".git" in path.parts or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        renamed = rename(text, name)
        if renamed != text:
            path.write_text(renamed, encoding="utf-8")


def create(destination: Path, name: str) -> Path:
    """Create the project at `destination` and commit it; return its root.

    Raises:
        ValueError: If `destination` exists and is not empty, or the name has no letters or digits.
    """
    if not slug(name):
        raise ValueError(f"NAME needs letters or digits, got {name!r}")
    if destination.exists() and any(destination.iterdir()):
        raise ValueError(f"{destination} exists and is not empty; choose a new DEST")
    return copy_work_tree(
        destination,
        skip=LEFT_OUT,
        prepare=lambda root: personalise(root, name),
        message=f"{name}: a new project from the {TEMPLATE_TITLE}",
    )


def main(argv: list[str] | None = None) -> None:
    """`python -m src.new_project --dest DIR --name NAME [--no-test]`."""
    parser = argparse.ArgumentParser(prog="python -m src.new_project", description=__doc__)
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--no-test", action="store_true", help="skip the quick tests in the new project")
    arguments = parser.parse_args(argv)
    setup_logging()
    destination = arguments.dest.expanduser().resolve()
    if destination == PROJECT_ROOT or PROJECT_ROOT in destination.parents:
        fail(f"DEST must be outside this project, got {destination}", EXIT_BAD_CONFIG)
    try:
        root = create(destination, arguments.name)
    except ValueError as error:
        fail(str(error), EXIT_BAD_CONFIG)
    logger.info("created %s (%s) at %s", arguments.name, slug(arguments.name), root)
    if not arguments.no_test:
        # The quick tests run in this template's virtualenv: same pinned requirements, no second install.
        environment = {key: value for key, value in os.environ.items() if not key.startswith(("MAKE", "MFLAGS"))}
        environment["VENV"] = environment.get("PROJECT_VENV", sys.prefix)
        for key in ("MLFLOW_TRACKING_URI", "PIPELINE_RECORDS_DIR", "PROJECT_VENV"):
            environment.pop(key, None)
        tests = subprocess.run(
            ["make", "--no-print-directory", "test", f"PYTEST_ARGS={QUICK_TESTS}"],
            cwd=root,
            env=environment,
            check=False,
        )
        if tests.returncode:
            fail(f"the new project's quick tests failed (see above); it is at {root}")
    sys.stdout.write(f"New project at {root}: cd there and run `make pipeline`.\n")


if __name__ == "__main__":
    main()
