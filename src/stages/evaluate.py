"""Stage evaluate: score the model on the test rows with the metrics of the task, and draw its plots."""

from __future__ import annotations

from src.cli import run_stage
from src.config import Config
from src.io import read_table, require
from src.ml.catalog import CLASSIFICATION, main_metric
from src.ml.features import features_of
from src.ml.images import as_images, image_shape
from src.ml.metrics import choose_samples, confusion_matrix, evaluate
from src.ml.tables import TableSchema
from src.paths import PATHS
from src.tracking.stage_runs import StageResult, mlflow_stage
from src.tracking.tags import DIRECTION_TAG, MAIN_METRIC_TAG, TASK_TAG


@mlflow_stage("evaluate")
def main(config: Config) -> StageResult:
    """Score models/model.joblib on the test rows and draw the plots of the task into reports/plots/.

    The model takes the raw test rows as a caller would send them (its featurize
    step and encoder included). The metrics are those of the run's task
    (data/raw/schema.json); the decorator writes them to reports/metrics.json. A
    classification gets its confusion matrix and, for images, a grid of test images
    as the model saw them (scaled and pooled pixels); a regression its predictions
    against the true values and its residuals. The run is tagged with the task and
    its main metric.
    """
    import joblib

    from src.ml import plots

    model = joblib.load(require(PATHS.model, made_by="train"))
    test = read_table(PATHS.test, made_by="data_split")
    schema = TableSchema.load(require(PATHS.schema, made_by="data_load"))
    target = schema.target
    metric = main_metric(config.evaluate.main_metric, schema.task)
    metrics, predictions = evaluate(model, test, target, schema.task)
    drawn = []
    if schema.task == CLASSIFICATION:
        matrix = confusion_matrix(test[target], predictions)
        plots.save_confusion_matrix(matrix, PATHS.confusion_matrix_png, config.evaluate.normalize_confusion_matrix)
        drawn.append(PATHS.confusion_matrix_png)
        rows = choose_samples(test[target], predictions)
        seen = features_of(model, test.iloc[rows].drop(columns=[target, *schema.id_columns]))
        shape = image_shape(seen.columns)
        if shape is not None:
            labels, predicted = test[target].iloc[rows].tolist(), predictions.iloc[rows].tolist()
            plots.save_sample_images(as_images(seen, shape), labels, predicted, PATHS.samples_png)
            drawn.append(PATHS.samples_png)
    else:
        values, predicted = test[target].to_numpy(dtype="float64"), predictions.to_numpy(dtype="float64")
        plots.save_predicted_against_actual(values, predicted, PATHS.predicted_png)
        plots.save_residuals(values, predicted, PATHS.residuals_png)
        drawn += [PATHS.predicted_png, PATHS.residuals_png]
    for stale in PATHS.plots.glob("*.png"):  # a plot an earlier run of another task drew
        if stale not in drawn:
            stale.unlink()
    return StageResult(
        metrics=metrics,
        artifacts=[PATHS.metrics, *drawn],
        tags={TASK_TAG: schema.task, MAIN_METRIC_TAG: metric.name, DIRECTION_TAG: metric.direction},
    )


if __name__ == "__main__":
    run_stage(main)
