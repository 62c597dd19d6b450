"""The "Make it yours" recipes of docs/architecture.md, applied as the page writes them to a copy of the project.

Each code block of a recipe starts with a comment that says where it goes: `# <file>: before "<line>"`,
`# <file>: after "<line>"` (the first line of the file that starts with that text), `# <file>: at the end`
or `# <file>: a new file`; then `make format`, as the page says. A recipe must change exactly the files its
`Files:` line names; together they must pass `make lint`, the science's quick tests and a pipeline that uses
what they added.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from src.paths import pipeline_stages
from tests.conftest import PROJECT_ROOT
from tests.integration.conftest import Project, new_project

pytestmark = pytest.mark.slow

PAGE = PROJECT_ROOT / "docs" / "architecture.md"

PLACE = re.compile(r'^# (?P<file>\S+): (?:(?P<where>before|after) "(?P<anchor>.*)"|(?P<whole>at the end|a new file))$')

SCIENCE_TESTS = [
    "tests/unit/test_stages.py",
    "tests/unit/test_config.py",
    "tests/unit/test_encoding.py",
    "tests/unit/test_architecture.py",
    "tests/unit/test_pipeline_definition.py",
]
"""The quick tests that try every declared estimator, metric and source, the params and the house's rules."""


@dataclass
class Edit:
    file: str
    where: str  # before, after, at the end, a new file
    anchor: str
    text: str


@dataclass
class Recipe:
    name: str
    files: list[str] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)


def recipes(page: str) -> list[Recipe]:
    """The recipes of the page's "Make it yours" part: each `###` heading, its `Files:` line and its code blocks."""
    part = page.split("## Make it yours", 1)[1]
    found: list[Recipe] = []
    for section in re.split(r"^### ", part, flags=re.M)[1:]:
        heading, _, body = section.partition("\n")
        recipe = Recipe(heading.strip())
        files = re.search(r"^Files: (.+)\.$", body, re.M)
        recipe.files = re.findall(r"`([^`]+)`", files.group(1)) if files else []
        for block in re.findall(r"^```\w*\n(.*?)^```$", body, re.M | re.S):
            first, _, text = block.partition("\n")
            place = PLACE.match(first)
            assert place, f"{recipe.name}: a code block does not start with where it goes: {first!r}"
            where = place["where"] or place["whole"]
            recipe.edits.append(Edit(place["file"], where, place["anchor"] or "", text))
        found.append(recipe)
    return found


def apply(root: Path, edit: Edit) -> None:
    """Put one block where its first line says."""
    path = root / edit.file
    if edit.where == "a new file":
        assert not path.exists(), f"{edit.file} exists already"
        path.write_text(edit.text)
        return
    lines = path.read_text().splitlines(keepends=True)
    if edit.where == "at the end":
        path.write_text("".join(lines) + edit.text)
        return
    matches = [number for number, line in enumerate(lines) if line.startswith(edit.anchor)]
    assert matches, f"{edit.file} has no line starting with {edit.anchor!r}"
    at = matches[0] + (1 if edit.where == "after" else 0)
    path.write_text("".join(lines[:at]) + edit.text + "".join(lines[at:]))


def changed_files(project: Project) -> list[str]:
    """The files of the copy that differ from its last commit, new ones included."""
    return sorted(line[3:] for line in project.git("status", "--porcelain", "--untracked-files=all").splitlines())


def test_the_page_has_a_recipe_for_each_kind_of_change_each_naming_its_files():
    names = [recipe.name for recipe in recipes(PAGE.read_text())]
    assert names == ["An estimator", "A metric", "A data source", "A feature", "A stage"]
    for recipe in recipes(PAGE.read_text()):
        assert recipe.files and recipe.edits, recipe.name
        assert sorted({edit.file for edit in recipe.edits}) == sorted(recipe.files), recipe.name


def test_every_recipe_applied_as_written_passes_lint_the_quick_tests_and_a_pipeline_using_it(tmp_path):
    project = new_project(tmp_path / "repo", tmp_path / "remote", template_estimator=True)  # params.yaml as it ships
    for recipe in recipes(PAGE.read_text()):
        for edit in recipe.edits:
            apply(project.root, edit)
        assert project.make("format").returncode == 0  # as the page says: it spaces the new code as ruff wants
        assert changed_files(project) == sorted(recipe.files), recipe.name
        project.run("git", "add", "-A", check=True)
        project.run("git", "commit", "-qm", recipe.name, check=True)

    lint = project.make("lint")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    python = project.env()["VENV"] + "/bin/python"
    quick = project.run(python, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-m", "not slow", *SCIENCE_TESTS)
    assert quick.returncode == 0, quick.stdout[-3000:]
    for tried in (  # the new declarations are tried like the template's own
        "test_stages.py::test_every_declared_estimator_learns_iris[extra_trees]",
        "test_stages.py::test_every_declared_estimator_for_regression_beats_the_mean[extra_trees]",
        "test_encoding.py::test_every_declared_estimator_saves_with_skops_and_loads_when_only_our_types_are_trusted[",
        "test_stages.py::test_every_declared_source_gives_a_labelled_table_data_load_takes[moons]",
    ):
        assert f"PASSED tests/unit/{tried}" in quick.stdout, tried

    project.set_param("data_load", "source", "moons")
    project.set_param("featurize", "squares", True)
    project.set_param("train", "estimator", "extra_trees")
    project.set_param("evaluate", "main_metric", "cohen_kappa")
    result = project.make("pipeline")
    assert result.returncode == 0, result.stderr
    [parent] = project.parents()
    assert parent.info.status == "FINISHED"
    children = {child.info.run_name: child for child in project.children(parent.info.run_id)}
    assert set(children) == {*pipeline_stages(), "profile"}
    assert {child.info.status for child in children.values()} == {"FINISHED"}
    assert children["profile"].data.metrics["complete_rows"] == 1.0
    assert children["featurize"].data.metrics["n_features_out"] == 4  # x, y and their squares
    assert children["train"].data.params["train.extra_trees.n_estimators"] == "100"
    assert parent.data.tags["main_metric"] == "cohen_kappa"
    assert [line for line in result.stderr.splitlines() if line.startswith("results: cohen_kappa ")]
