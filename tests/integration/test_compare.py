"""Comparing runs: `make report` against a git revision, and `make sweep` over a grid."""

from __future__ import annotations

import pytest

from src.paths import pipeline_stages
from tests.integration.conftest import Project, new_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    base = tmp_path_factory.mktemp("compare")
    project = new_project(base / "repo", base / "remote")
    result = project.make("pipeline", RUN_NAME="before")
    assert result.returncode == 0, result.stderr
    project.run("git", "commit", "-qam", "results before", "--allow-empty", check=True)
    return project


def test_report_names_the_changed_param_both_metric_values_and_both_runs(project):
    before = project.parents()[0]
    project.set_param("train", "linear.C", 0.05)
    assert project.make("pipeline", RUN_NAME="after").returncode == 0
    after = project.parents()[0]
    old_accuracy, new_accuracy = before.data.metrics["accuracy"], after.data.metrics["accuracy"]
    assert new_accuracy != old_accuracy

    result = project.make("report")
    assert result.returncode == 0, result.stderr
    report = (project.root / "reports/report.md").read_text()
    assert result.stdout.strip() == report.strip()
    verdict = "better" if new_accuracy > old_accuracy else "worse"
    assert report.splitlines()[2] == (
        f"**accuracy** (higher is better): {old_accuracy:.4f} → {new_accuracy:.4f} "
        f"({new_accuracy - old_accuracy:+.4f}, {verdict})."
    )
    [param_row] = [line for line in report.splitlines() if "train.linear.C" in line]
    assert [cell.strip() for cell in param_row.split("|")[1:5]] == ["params.yaml", "train.linear.C", "1.0", "0.05"]
    [accuracy_row] = [line for line in report.splitlines() if "reports/metrics.json" in line and "accuracy" in line]
    _, _, old, new, change = (cell.strip() for cell in accuracy_row.split("|")[1:6])
    assert float(old) == pytest.approx(before.data.metrics["accuracy"], abs=1e-5)
    assert float(new) == pytest.approx(after.data.metrics["accuracy"], abs=1e-5)
    assert float(change) == pytest.approx(float(new) - float(old), abs=1e-4)
    assert before.info.run_id in report
    assert after.info.run_id in report
    for image in (
        "reports/report/HEAD_reports_plots_confusion_matrix.png",
        "reports/report/workspace_reports_plots_confusion_matrix.png",
    ):
        assert (project.root / image).read_bytes()[:4] == b"\x89PNG"
        assert image.removeprefix("reports/") in report


def test_report_refuses_an_unknown_base(project):
    result = project.make("report", BASE="no-such-tag")
    assert result.returncode != 0
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        "error: BASE=no-such-tag is not a git revision; give a commit, branch or tag (see `git tag`)"
    ]


def test_sweep_runs_each_point_as_an_experiment_with_its_own_parent_run_and_a_failed_point_lets_the_others_go_on(
    project,
):
    project.set_param("train", "linear.C", 1.0)
    project.run("git", "commit", "-qam", "back to C=1", check=True)
    result = project.make("sweep", SWEEP="train.linear.C=0.1,3 data_split.test_size=0.2,0.01")
    assert result.returncode != 0
    assert "error: 2 of 4 points failed" in result.stderr
    parents = project.runs("tags.sweep LIKE 'sweep-%'")
    assert len(parents) == 4
    finished = [parent for parent in parents if parent.data.params["data_split.test_size"] == "0.2"]
    assert {parent.data.params["train.linear.C"] for parent in finished} == {"0.1", "3.0"}
    for parent in finished:
        assert parent.info.status == "FINISHED"
        children = project.children(parent.info.run_id)
        assert {child.info.run_name for child in children} == set(pipeline_stages())
        assert {child.info.status for child in children} == {"FINISHED"}
        assert "accuracy" in parent.data.metrics
    failed = [parent for parent in parents if parent not in finished]
    assert [parent.info.status for parent in failed] == ["FAILED", "FAILED"]  # data_split refuses 1 test row
    assert project.runs("attributes.status = 'RUNNING'") == []
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 4
    ranked = sorted(finished, key=lambda parent: -parent.data.metrics["accuracy"])
    assert rows[0].startswith("| 1 | train.linear.C=")
    assert f"| accuracy {ranked[0].data.metrics['accuracy']:.4f} |" in rows[0]
    assert rows[0].endswith(f"| {ranked[0].info.run_id} |")
    assert rows[1].endswith(f"| {ranked[1].info.run_id} |")
    assert all("| FAILED |" in row and "data_split.test_size=0.01" in row for row in rows[2:])
    assert (project.root / "params.yaml").read_text().count("C: 1.0") == 1  # the workspace is untouched
    experiments = project.run(project.env()["VENV"] + "/bin/dvc", "exp", "list", "--name-only").stdout.split()
    assert len(experiments) == 2


def test_a_bad_sweep_key_stops_before_any_run(project):
    runs_before = len(project.runs())
    result = project.make("sweep", SWEEP="train.linear.c=0.1,1")
    assert result.returncode != 0
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        "error: SWEEP: unknown key train.linear.c; did you mean train.linear.C? keys look like train.linear.C or "
        "data_split.test_size"
    ]
    assert len(project.runs()) == runs_before
