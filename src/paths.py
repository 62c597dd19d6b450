"""Where things are: the project root, the files each stage reads and writes, and dvc.yaml's stages."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Paths:
    """Where each stage reads and writes, and where the commands write beside it, relative to the project root.

    dvc.yaml declares the stages' paths as deps and outs (a unit test keeps the
    two in step); the commands' files, named in COMMAND_OUTPUTS, are ignored by
    git and DVC.
    """

    raw: Path = Path("data/raw/dataset.parquet")
    schema: Path = Path("data/raw/schema.json")
    features: Path = Path("data/processed/features.parquet")
    train: Path = Path("data/processed/train.parquet")
    test: Path = Path("data/processed/test.parquet")
    batches: Path = Path("data/batches")
    model: Path = Path("models/model.joblib")
    metrics: Path = Path("reports/metrics.json")
    learning_curve: Path = Path("reports/learning_curve.csv")
    plots: Path = Path("reports/plots")
    stage_metrics_dir: Path = Path("reports/stages")
    drift_json: Path = Path("reports/drift.json")
    drift_html: Path = Path("reports/drift.html")
    bench_md: Path = Path("reports/bench.md")
    bench_json: Path = Path("reports/bench.json")
    report_md: Path = Path("reports/report.md")
    report_plots: Path = Path("reports/report")

    @property
    def confusion_matrix_png(self) -> Path:
        """Classification: the test rows' confusion matrix."""
        return self.plots / "confusion_matrix.png"

    @property
    def samples_png(self) -> Path:
        """Images: a grid of test images with their true and predicted labels."""
        return self.plots / "samples.png"

    @property
    def predicted_png(self) -> Path:
        """Regression: each test row's prediction against its true value."""
        return self.plots / "predicted_vs_actual.png"

    @property
    def residuals_png(self) -> Path:
        """Regression: each test row's error (true minus predicted) against its prediction."""
        return self.plots / "residuals.png"

    def stage_metrics(self, stage: str) -> Path:
        """The metrics file of `stage`: what its nested run logged, kept for cached runs.

        evaluate's metrics are the pipeline's results, so its file is reports/metrics.json.
        """
        return self.metrics if stage == "evaluate" else self.stage_metrics_dir / f"{stage}.json"


PATHS = Paths()

COMMAND_OUTPUTS = ("drift_json", "drift_html", "bench_md", "bench_json", "report_md", "report_plots")
"""The fields of Paths that `make drift`, `make bench` and `make report` write, not the pipeline."""


PIPELINE_FILE = Path("dvc.yaml")

PIPELINE_DVC_SETTINGS = {"DVC_SYSTEM_CONFIG_DIR": str(PROJECT_ROOT / "src" / "pipeline" / "dvc-settings")}
"""The environment of the dvc commands that write the pipeline's outputs: its outputs are linked to DVC's cache.

See src/pipeline/dvc-settings/config: a user's own `dvc add` keeps DVC's default of copies.
"""


@functools.cache
def pipeline_stages() -> dict[str, dict[str, Any]]:
    """Return the stages of dvc.yaml, in order, as parsed from the project's copy."""
    document = yaml.safe_load((PROJECT_ROOT / PIPELINE_FILE).read_text(encoding="utf-8"))
    return document["stages"]


def stage_param_keys(stage: str) -> list[str]:
    """Return the params.yaml keys dvc.yaml lists for `stage`: a key (`base.task`) or a whole section (`train`)."""
    return list(pipeline_stages()[stage].get("params", []))


def params_under(flat: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """The entries of a flat `section.key -> value` mapping that `keys` name, a key itself or every key under it."""
    return {name: value for name, value in flat.items() if any(name == k or name.startswith(f"{k}.") for k in keys)}


def stage_outputs(stage: dict[str, Any]) -> list[str]:
    """Return the paths a dvc.yaml stage writes: its outs, metrics and plots (a plot may carry options)."""
    paths: list[str] = []
    for kind in ("outs", "metrics", "plots"):
        for entry in stage.get(kind, []):
            paths += list(entry) if isinstance(entry, dict) else [entry]
    return paths
