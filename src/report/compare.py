"""`make report`: what changed since a git revision, and did it help.

The numbers come from DVC itself (`dvc params diff`, `dvc metrics diff`,
`dvc plots diff`); this module only puts them on one page, reports/report.md:
a headline on the run's main metric (better or worse, in its direction), the
params and metrics that changed, the plots of the task side by side and the
MLflow parent runs of both sides.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from src.cli import fail
from src.io import atomic_path
from src.lockfile import LOCK_FILE, output_hashes, output_tag, read_lock
from src.logs import setup_logging
from src.paths import PATHS, PROJECT_ROOT
from src.versions.runner import GitError, dvc, git

logger = logging.getLogger(__name__)

WORKSPACE = "workspace"


def dvc_markdown(*arguments: str) -> str:
    """Run a dvc diff command at the project root and return its stdout."""
    completed = dvc(*arguments, quiet=True)
    if completed.returncode != 0:
        reason = (completed.stderr.strip().splitlines() or ["failed"])[-1]
        raise RuntimeError(f"dvc {arguments[0]} {arguments[1]} failed: {reason}")
    return completed.stdout.strip()


def metrics_hash(lock: dict[str, Any]) -> str:
    """Return the hash dvc.lock records for reports/metrics.json ('' if none)."""
    return output_hashes(lock).get(str(PATHS.metrics), "")


def run_for(lock: dict[str, Any]) -> str:
    """Return the newest FINISHED parent run whose metrics.json hash matches `lock`, as `id (name)`."""
    wanted = metrics_hash(lock)
    if not wanted:
        return "none (no results in dvc.lock)"
    from src.tracking.client import import_mlflow
    from src.tracking.tags import ROLE_TAG

    client = import_mlflow().MlflowClient()
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    runs = client.search_runs(
        experiments,
        filter_string=(
            f"tags.`{output_tag(PATHS.metrics)}` = '{wanted}' and tags.`{ROLE_TAG}` = 'parent' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return f"`{runs[0].info.run_id}` ({runs[0].info.run_name})" if runs else "none found in this MLflow store"


def image_rows(plots: dict[str, Any], base: str) -> list[str]:
    """Return a markdown table row per image plot (reports/plots/): the plot at `base` and in the workspace."""
    rows = []
    for path, entries in sorted(plots.get("data", {}).items()):
        if Path(path).parent != PATHS.plots:
            continue
        cells = {base: "(none)", WORKSPACE: "(none)"}
        for entry in entries:
            for revision in entry.get("revisions", []):
                relative = Path(entry["url"]).resolve().relative_to((PROJECT_ROOT / PATHS.report_md.parent).resolve())
                cells[revision] = f"![{Path(path).stem} at {revision}]({relative.as_posix()})"
        rows.append(f"| {Path(path).stem} | {cells[base]} | {cells[WORKSPACE]} |")
    return rows


def headline(base: str) -> str:
    """One line on the main metric: its value at `base` and in the workspace, and whether that is better.

    The main metric is the workspace's (`evaluate.main_metric`, or the task's default), with its direction.
    """
    from src.config import load_config
    from src.ml.catalog import main_metric
    from src.ml.tables import TableSchema

    schema_file = PROJECT_ROOT / PATHS.schema
    if not schema_file.exists():
        return "No results in the workspace yet: run `make pipeline`."
    metric = main_metric(
        load_config(PROJECT_ROOT / "params.yaml").evaluate.main_metric, TableSchema.load(schema_file).task
    )
    changes = json.loads(dvc_markdown("metrics", "diff", base, "--all", "--json") or "{}")
    value = changes.get(str(PATHS.metrics), {}).get(metric.name)
    if value is None:
        return f"**{metric.name}** ({metric.direction} is better): not in `{PATHS.metrics}` on either side."
    old, new = value.get("old"), value.get("new")
    if old is None or new is None:
        return f"**{metric.name}** ({metric.direction} is better): {new if old is None else old} on one side only."
    verdict = (
        "better" if (new > old) == metric.higher_is_better and new != old else "no better" if new == old else "worse"
    )
    return f"**{metric.name}** ({metric.direction} is better): {old:.4f} → {new:.4f} ({new - old:+.4f}, {verdict})."


def build_report(base: str) -> str:
    """Compare the workspace with the git revision `base` and return the report as markdown.

    Raises:
        GitError: If `base` is not a git revision.
    """
    commit = git("rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")
    params = dvc_markdown("params", "diff", base, "--md")
    metrics = dvc_markdown("metrics", "diff", base, "--md")
    plots = json.loads(dvc_markdown("plots", "diff", base, "--json", "-o", str(PATHS.report_plots)) or "{}")
    base_lock = yaml.safe_load(git("show", f"{commit}:{LOCK_FILE}")) if _has_lock(commit) else {}
    workspace_lock = read_lock()
    return "\n".join(
        [
            f"# What changed: `{base}` ({commit[:8]}) → workspace",
            "",
            headline(base),
            "",
            "## Params that changed",
            "",
            params or "No params changed.",
            "",
            "## Metrics, before → after",
            "",
            metrics or "No metrics changed.",
            "",
            "## Plots",
            "",
            f"| plot | `{base}` | workspace |",
            "| --- | --- | --- |",
            *(image_rows(plots, base) or ["| (none) | | |"]),
            "",
            "## MLflow runs",
            "",
            "| side | parent run |",
            "| --- | --- |",
            f"| `{base}` | {run_for(base_lock)} |",
            f"| workspace | {run_for(workspace_lock)} |",
            "",
        ]
    )


def _has_lock(commit: str) -> bool:
    try:
        git("cat-file", "-e", f"{commit}:{LOCK_FILE}")
    except GitError:
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    """Write reports/report.md comparing the workspace with `--base`, and print it."""
    parser = argparse.ArgumentParser(prog="python -m src.report.compare", description=__doc__)
    parser.add_argument("--base", default="HEAD", help="the git revision or tag to compare with (default: HEAD)")
    arguments = parser.parse_args(argv)
    setup_logging()
    try:
        report = build_report(arguments.base)
    except GitError:
        fail(f"BASE={arguments.base} is not a git revision; give a commit, branch or tag (see `git tag`)", 2)
    except RuntimeError as error:
        fail(str(error))
    with atomic_path(PROJECT_ROOT / PATHS.report_md) as temporary:
        temporary.write_text(report, encoding="utf-8")
    sys.stdout.write(report)
    logger.info("wrote %s", PATHS.report_md)


if __name__ == "__main__":
    main()
