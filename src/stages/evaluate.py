"""Stage evaluate: score the model on the test table, write metrics and plots."""

from __future__ import annotations

from src.cli import run_stage
from src.config import Config
from src.io import read_table, require
from src.ml.features import features_of
from src.ml.images import as_images, image_shape
from src.ml.metrics import choose_samples, evaluate
from src.paths import PATHS
from src.tracking.stage_runs import StageResult, mlflow_stage


@mlflow_stage("evaluate")
def main(config: Config) -> StageResult:
    """Score models/model.joblib on the test rows, draw the confusion matrix and, for images, sample images.

    The model takes the raw test rows as a caller would send them (its featurize
    step included). The metrics it returns are written to reports/metrics.json by
    the decorator. The sample images show what the model saw (scaled and pooled
    pixels); for data that is not images, reports/samples.png says so instead.
    """
    import joblib

    from src.ml.plots import save_confusion_matrix, save_sample_images

    model = joblib.load(require(PATHS.model, made_by="train"))
    test = read_table(PATHS.test, made_by="data_split")
    target = config.data_load.target
    metrics, matrix, predictions = evaluate(model, test, target)
    save_confusion_matrix(matrix, PATHS.confusion_matrix_png, config.evaluate.normalize_confusion_matrix)
    rows = choose_samples(test[target], predictions)
    seen = features_of(model, test.iloc[rows].drop(columns=[target]))
    shape = image_shape(seen.columns)
    if shape is None:
        save_sample_images(None, [], [], PATHS.samples_png)
        artifacts = [PATHS.metrics, PATHS.confusion_matrix_png]
    else:
        images = as_images(seen, shape)
        save_sample_images(images, test[target].iloc[rows].tolist(), predictions.iloc[rows].tolist(), PATHS.samples_png)
        artifacts = [PATHS.metrics, PATHS.confusion_matrix_png, PATHS.samples_png]
    return StageResult(
        metrics=metrics,
        artifacts=artifacts,
    )


if __name__ == "__main__":
    run_stage(main)
