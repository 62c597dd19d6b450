"""The CI workflows the template ships, checked offline against their published schemas."""

import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

WORKFLOWS = {
    ".github/workflows/ci.yml": "vendor.github-workflows",
    ".gitlab-ci.yml": "vendor.gitlab-ci",
}


def validate(path, schema: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(("name", "schema"), WORKFLOWS.items())
def test_workflow_matches_its_schema(name, schema):
    result = validate(PROJECT_ROOT / name, schema)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "schema", "good", "bad"),
    [
        (".github/workflows/ci.yml", "vendor.github-workflows", "runs-on: ubuntu-latest", "runs-on: [[1]]"),
        (".gitlab-ci.yml", "vendor.gitlab-ci", "stage: test", "stage: {a: b}"),
    ],
)
def test_a_broken_workflow_is_caught(name, schema, good, bad, tmp_path):
    text = (PROJECT_ROOT / name).read_text()
    assert good in text
    broken = tmp_path / "broken.yml"
    broken.write_text(text.replace(good, bad, 1))
    assert validate(broken, schema).returncode != 0


@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_tests_runs_the_pipeline_and_posts_the_report(name):
    text = (PROJECT_ROOT / name).read_text()
    for command in ("bash .ci/run", "make pipeline", "make report BASE=", "cml comment create"):
        assert command in text, command
