"""Generate the docs site's live pages from the pipeline's own sources.

`make docs` runs this before `mkdocs build`: it writes docs/generated/ (git-ignored)
with the stage graph from `dvc dag`, the stage table from dvc.yaml, the params
reference from the config schema, what `src/ml/catalog.py` declares (estimators,
metrics, sources), the latest metrics and the plots of the run's task, the
data-version history and a plot of the metrics across data versions. The
hand-written pages include these files, so nothing on the site is pasted.
"""

from __future__ import annotations

import json
import logging
import shutil
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from src.config import Config
from src.io import atomic_path
from src.paths import PATHS, PROJECT_ROOT, pipeline_stages, stage_outputs
from src.versions.history import history
from src.versions.runner import dvc

logger = logging.getLogger(__name__)

GENERATED = PROJECT_ROOT / "docs" / "generated"
NO_RESULTS = "No results yet: run `make pipeline`, then `make docs`.\n"


def type_name(annotation: Any) -> str:
    """Describe a field's type annotation in words a params.yaml author reads."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(argument) for argument in typing.get_args(annotation))
    if origin is list:
        return f"list of {type_name(typing.get_args(annotation)[0])}"
    words = {int: "integer", float: "number", bool: "true/false", str: "string", type(None): "null"}
    return words.get(annotation, getattr(annotation, "__name__", str(annotation)))


def allowed_values(field: Any) -> str:
    """Describe a field's range constraints (`> 0`, `<= 20`...), or `any`."""
    words = []
    for rule in field.metadata:
        for attribute, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "length >=")):
            value = getattr(rule, attribute, None)
            if value is not None:
                words.append(f"{symbol} {value}")
    return ", ".join(words) or "any"


def configuration_reference(template: dict[str, Any]) -> str:
    """Return a markdown reference of every params.yaml key, from the config schema.

    A section's sub-section (an estimator's knobs, `train.<estimator>`) is listed key by key.

    Args:
        template: The template's params.yaml, whose values are the defaults.
    """
    lines = []
    for section, section_field in Config.model_fields.items():
        model = section_field.annotation
        summary = (model.__doc__ or "").strip().splitlines()[0]
        lines += [f"### `{section}`", "", summary, "", "| key | type | default | allowed | what it does |"]
        lines.append("| --- | --- | --- | --- | --- |")
        lines += _key_rows(section, model, template.get(section, {}))
        lines.append("")
    return "\n".join(lines)


def _key_rows(prefix: str, model: Any, defaults: dict[str, Any]) -> list[str]:
    """The reference's rows of a section's keys, a sub-section's keys under its own prefix."""
    rows = []
    for key, field in model.model_fields.items():
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            rows.append(f"| `{prefix}.{key}` | section | | | {description}; its keys: |")
            rows += _key_rows(f"{prefix}.{key}", field.annotation, defaults.get(key) or {})
            continue
        rows.append(
            f"| `{prefix}.{key}` | {type_name(field.annotation)} | `{json.dumps(defaults.get(key))}` | "
            f"{allowed_values(field)} | {description} |"
        )
    return rows


def catalog_reference() -> str:
    """Return markdown tables of what `src/ml/catalog.py` declares: the estimators, the metrics, the sources."""
    from src.ml.catalog import ESTIMATORS, MAIN_METRICS, METRICS, SOURCES

    lines = ["| estimator | tasks | continues from a model | what it is |", "| --- | --- | --- | --- |"]
    for name, estimator in ESTIMATORS.items():
        warm = ", ".join(estimator.warm_start_tasks) or "no"
        lines.append(f"| `{name}` | {', '.join(estimator.tasks)} | {warm} | {estimator.summary} |")
    lines += ["", "| metric | task | better | main by default | what it is |", "| --- | --- | --- | --- | --- |"]
    for name, metric in METRICS.items():
        main = "yes" if MAIN_METRICS[metric.task] == name else ""
        lines.append(f"| `{name}` | {metric.task} | {metric.direction} | {main} | {metric.summary} |")
    lines += ["", "| source | what it is |", "| --- | --- |"]
    lines += [f"| `{name}` | {source.summary} |" for name, source in SOURCES.items()]
    return "\n".join(lines) + "\n"


def stage_table(stages: dict[str, Any]) -> str:
    """Return a markdown table of the stages of dvc.yaml: what each reads, writes and depends on."""
    lines = ["| stage | reads | writes | params |", "| --- | --- | --- | --- |"]
    for name, stage in stages.items():
        reads = [dep for dep in stage.get("deps", []) if not dep.startswith("src/")]
        writes = stage_outputs(stage)
        lines.append(
            f"| `{name}` | {', '.join(f'`{path}`' for path in reads) or '-'} | "
            f"{', '.join(f'`{path}`' for path in writes)} | "
            f"{', '.join(f'`{key}`' for key in stage.get('params', []))} |"
        )
    return "\n".join(lines) + "\n"


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    """Return a markdown table of each stage's metrics: stage, metric and value."""
    rows = [
        f"| {stage} | {name} | {value:.4f} |"
        for stage, values in metrics.items()
        for name, value in sorted(values.items())
    ]
    return "\n".join(["| stage | metric | value |", "| --- | --- | --- |", *rows]) + "\n"


PLOT_CAPTIONS = {
    PATHS.confusion_matrix_png.name: "Confusion matrix of the test rows: rows are true labels, columns predicted ones",
    PATHS.predicted_png.name: "Each test row's prediction against its true value; a perfect model is the red line",
    PATHS.residuals_png.name: "Each test row's error against its prediction: evenly around zero is good",
}
"""The task's plots the Results page shows, and what each is (the sample images have a section of their own)."""


def task_plots() -> str:
    """Copy the latest run's plots of its task into the docs and return the markdown that shows them."""
    shown = []
    for name, caption in PLOT_CAPTIONS.items():
        plot = PROJECT_ROOT / PATHS.plots / name
        if plot.exists():
            shutil.copyfile(plot, GENERATED / name)
            shown.append(f"![{caption}](generated/{name})\n\n*{caption}.*\n")
    return "\n".join(shown) or NO_RESULTS


def metrics_by_revision(shown: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Flatten `dvc metrics show --json -T` output into `revision -> {metric: value}`."""
    table: dict[str, dict[str, float]] = {}
    for revision, content in shown.items():
        values: dict[str, float] = {}
        for document in (content.get("data") or {}).values():
            values.update(
                {key: value for key, value in (document.get("data") or {}).items() if isinstance(value, int | float)}
            )
        if values:
            table[revision] = values
    return table


def plot_metrics_by_version(table: dict[str, dict[str, float]], path: Path) -> None:
    """Plot the held-out metrics (those `src/ml/catalog.py` declares) per data version as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from src.ml.catalog import METRICS

    revisions = list(table)
    shown = [name for name in METRICS if any(name in values for values in table.values())]
    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    for metric in shown:
        axes.plot(revisions, [table[revision].get(metric) for revision in revisions], marker="o", label=metric)
    axes.set_xlabel("data version")
    axes.set_ylabel("test-set score")
    axes.set_title("Metrics across data versions")
    axes.legend()
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)


def write(name: str, text: str) -> None:
    """Write one generated file under docs/generated/."""
    with atomic_path(GENERATED / name) as temporary:
        temporary.write_text(text, encoding="utf-8")


def _dvc_stdout(*arguments: str) -> str:
    """The stdout of a dvc command ('' if it fails: the page then says the part is unavailable)."""
    completed = dvc(*arguments, quiet=True)
    return completed.stdout if completed.returncode == 0 else ""


def drift_summary() -> str:
    """The latest drift report (reports/drift.json) as a verdict and a table, with its HTML page copied alongside."""
    if not (PROJECT_ROOT / PATHS.drift_json).exists():
        return "No drift report yet: run `make drift NEW=<a new batch>`, then `make docs`.\n"
    document = json.loads((PROJECT_ROOT / PATHS.drift_json).read_text(encoding="utf-8"))
    if "method" not in document:
        return "The drift report predates the current method: run `make drift NEW=<a new batch>` again.\n"
    if (PROJECT_ROOT / PATHS.drift_html).exists():
        shutil.copyfile(PROJECT_ROOT / PATHS.drift_html, GENERATED / "drift.html")
    drifted = document["drifted"]
    verdict = f"**Drifted: {', '.join(drifted)}**" if drifted else "**No feature drifted.**"
    lines = [
        f"{verdict} Reference: {document['reference']} ({document['reference_rows']} rows); "
        f"new batch: `{document['new']}` ({document['new_rows']} rows). "
        "[The full report](generated/drift.html).",
        "",
        document["method"],
        "",
        "| feature | kind | test | statistic | p-value | threshold | distance | verdict | reason |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for item in document["features"]:
        distance = "—"
        if item["distance"] is not None:
            distance = f"{item['distance']} {item['distance_value']:.3g} (from {item['distance_threshold']:g})"
        verdict_word = "drifted" if item["drifted"] else "not drifted"
        reason = item["reason"].replace("|", "\\|")
        lines.append(
            f"| {item['feature']} | {item['kind']} | {item['test']} | {item['statistic']:.4g} | {item['p_value']:.3g} "
            f"| {item['threshold']:.3g} | {distance} | {verdict_word} | {reason} |"
        )
    return "\n".join(lines) + "\n"


def sample_images() -> str:
    """Copy the latest run's grid of test images into the docs and return the markdown that shows it.

    The grid is shown only when the latest test table's features are image pixels.
    """
    import pyarrow.parquet

    from src.ml.images import image_shape

    grid, test = PROJECT_ROOT / PATHS.samples_png, PROJECT_ROOT / PATHS.test
    if not test.exists():
        return NO_RESULTS
    if not grid.exists() or image_shape(pyarrow.parquet.read_schema(test).names) is None:
        return "No sample images: the latest run's data is not images (`digits` or a folder of PNGs).\n"
    shutil.copyfile(grid, GENERATED / "samples.png")
    return "![Test images, true and predicted labels; misclassified ones framed in red](generated/samples.png)\n"


def generate() -> None:
    """Write every generated page fragment and image under docs/generated/."""
    GENERATED.mkdir(parents=True, exist_ok=True)
    template = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    write("configuration.md", configuration_reference(template))
    write("catalog.md", catalog_reference())
    write("stages.md", stage_table(pipeline_stages()))
    write("dag.md", "```text\n" + (_dvc_stdout("dag").rstrip() or "(dvc dag unavailable)") + "\n```\n")

    metric_files = {stage: PROJECT_ROOT / PATHS.stage_metrics(stage) for stage in pipeline_stages()}
    if all(path.exists() for path in metric_files.values()):
        latest = {stage: json.loads(path.read_text(encoding="utf-8")) for stage, path in metric_files.items()}
        write("metrics.md", metrics_table(latest))
    else:
        write("metrics.md", NO_RESULTS)
    write("plots.md", task_plots())

    shown = _dvc_stdout("metrics", "show", "--json", "--all-tags")
    table = metrics_by_revision(json.loads(shown)) if shown.strip() else {}
    tags = {revision: values for revision, values in table.items() if revision != "workspace"}
    if tags:
        plot_metrics_by_version(tags, GENERATED / "metrics_by_version.png")
        write("metrics_by_version.md", "![Metrics across data versions](generated/metrics_by_version.png)\n")
    else:
        write("metrics_by_version.md", 'No data versions yet: pin one with `make tag TAG=v1 MSG="..."`.\n')

    bench = PROJECT_ROOT / PATHS.bench_md
    if bench.exists():
        write("bench.md", bench.read_text(encoding="utf-8").replace("# Benchmark\n", "", 1).replace("## ", "### "))
    else:
        write("bench.md", "No benchmark yet: run `make bench`, then `make docs`.\n")

    write("history.md", history())
    import pandas as pd

    from src.ml.plots import save_learning_curve

    curve_file = PROJECT_ROOT / PATHS.learning_curve
    curve = pd.read_csv(curve_file) if curve_file.exists() else None
    if curve is not None and len(curve):
        save_learning_curve(curve, GENERATED / "learning_curve.png")
        write("learning_curve.md", "![Training loss and validation score per epoch](generated/learning_curve.png)\n")
    else:
        write("learning_curve.md", "No learning curve: the latest run's estimator is not trained in epochs.\n")
    write("samples.md", sample_images())
    write("drift.md", drift_summary())
    logger.info("wrote the generated docs pages to %s", GENERATED.relative_to(PROJECT_ROOT))


if __name__ == "__main__":
    from src.logs import setup_logging

    setup_logging()
    generate()
