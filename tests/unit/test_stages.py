"""The science behind the stages, in-process: sources, features, splits, every declared estimator and metric."""

import pandas as pd
import pytest

from src.config import load_config
from src.ml.catalog import CLASSIFICATION, ESTIMATORS, METRICS, REGRESSION, SOURCES, main_metric
from src.ml.features import Featurizer, featurize
from src.ml.metrics import confusion_matrix, evaluate, score
from src.ml.models import build_model, cross_validate, fit
from src.ml.sources import load_bundled, make_synthetic, parse_table, snake_case
from src.ml.split import add_batches, split
from src.ml.tables import DataSchemaError, prepare_table
from tests.conftest import PROJECT_ROOT, split_label

TEMPLATE = load_config(PROJECT_ROOT / "params.yaml")

FAST_KNOBS = {
    "hist_gradient_boosting": {"max_iter": 20},
    "random_forest": {"n_estimators": 20},
    "mlp": {"epochs": 60, "learning_rate": 0.01},
}
"""Knobs that make the template's estimators quick on tiny tables; an estimator not named here keeps its own."""


def with_values(section, **values):
    """The template's section with some values changed."""
    return section.model_copy(update=values)


def train_params(estimator: str, **settings):
    """The template's `train` section for `estimator`, quick, with some keys changed (`knobs` for its own)."""
    knobs = getattr(TEMPLATE.train, estimator).model_copy(
        update=FAST_KNOBS.get(estimator, {}) | settings.pop("knobs", {})
    )
    return with_values(TEMPLATE.train, estimator=estimator, **{estimator: knobs}, **settings)


@pytest.fixture
def raw() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": [1.0, 2.0, 3.0, 4.0],
            "b": [10.0, 20.0, 30.0, 40.0],
            "c": [0.5, 0.5, 1.0, 1.0],
            "label": ["x", "y", "x", "y"],
        }
    )


def test_snake_case_turns_sklearn_names_into_identifiers():
    assert snake_case("sepal length (cm)") == "sepal_length_cm"
    assert snake_case("Mean Radius") == "mean_radius"


def test_load_bundled_iris_has_named_classes_and_snake_case_features():
    table = load_bundled("iris", "species")
    assert list(table.columns) == [
        "sepal_length_cm",
        "sepal_width_cm",
        "petal_length_cm",
        "petal_width_cm",
        "species",
    ]
    assert sorted(table["species"].unique()) == ["setosa", "versicolor", "virginica"]


def test_a_regression_dataset_keeps_its_numbers_as_the_label():
    table = load_bundled("diabetes", "progression")
    assert len(table) == 442 and pd.api.types.is_float_dtype(table["progression"])
    assert table["progression"].nunique() > 100


@pytest.mark.parametrize("name", list(SOURCES))
def test_every_declared_source_gives_a_labelled_table_data_load_takes(name):
    params = TEMPLATE.data_load.model_copy(update={"source": name, "synthetic_rows": 200, "synthetic_features": 4})
    table = SOURCES[name].load(params, 0)
    prepared, schema = prepare_table(table, params.target, [], "auto", name)
    assert list(prepared.columns)[-1] == params.target and len(prepared) == len(table)
    assert schema.task in (CLASSIFICATION, REGRESSION) and schema.features


def test_load_bundled_refuses_a_target_named_like_a_feature():
    with pytest.raises(ValueError, match="data_load.target is 'sepal_length_cm'"):
        load_bundled("iris", "sepal_length_cm")


def test_featurize_adds_pairwise_products_and_keeps_the_label_last(raw):
    features = featurize(raw, with_values(TEMPLATE.featurize, pairwise_products=True, drop_columns=[]), target="label")
    assert list(features.columns) == ["a", "b", "c", "a_x_b", "a_x_c", "b_x_c", "label"]
    assert features["a_x_b"].tolist() == [10.0, 40.0, 90.0, 160.0]
    assert features["label"].tolist() == raw["label"].tolist()


def test_featurize_drops_columns_before_the_products(raw):
    features = featurize(
        raw, with_values(TEMPLATE.featurize, pairwise_products=True, drop_columns=["c"]), target="label"
    )
    assert list(features.columns) == ["a", "b", "a_x_b", "label"]


def test_featurize_without_products_returns_the_raw_table(raw):
    features = featurize(raw, with_values(TEMPLATE.featurize, pairwise_products=False, drop_columns=[]), target="label")
    pd.testing.assert_frame_equal(features, raw)


def test_featurize_names_an_unknown_drop_column(raw):
    with pytest.raises(ValueError, match="featurize.drop_columns names d, which is not a feature; features: a, b, c"):
        featurize(raw, with_values(TEMPLATE.featurize, drop_columns=["d"]), target="label")


def test_split_sizes_and_stratification():
    table = pd.DataFrame({"x": range(100), "label": ["a"] * 80 + ["b"] * 20})
    train, test = split(table, with_values(TEMPLATE.data_split, test_size=0.25, stratify=True), "label", random_state=0)
    assert (len(train), len(test)) == (75, 25)
    assert test["label"].value_counts().to_dict() == {"a": 20, "b": 5}
    assert set(train["x"]).isdisjoint(test["x"])


def test_split_is_reproducible_for_a_seed():
    table = pd.DataFrame({"x": range(50), "label": ["a", "b"] * 25})
    params = with_values(TEMPLATE.data_split, test_size=0.2, stratify=False)
    first, _ = split(table, params, "label", random_state=7)
    second, _ = split(table, params, "label", random_state=7)
    pd.testing.assert_frame_equal(first, second)


def test_split_explains_an_impossible_stratified_split():
    table = pd.DataFrame({"x": range(10), "label": ["a"] * 9 + ["b"]})
    with pytest.raises(ValueError, match="class 'b' has 1 row; a stratified split needs at least 2 rows of every"):
        split(table, with_values(TEMPLATE.data_split, test_size=0.2, stratify=True), "label", random_state=0)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_every_declared_estimator_learns_iris(estimator):
    if CLASSIFICATION not in ESTIMATORS[estimator].tasks:
        pytest.skip(f"{estimator} does no classification")
    table = load_bundled("iris", "target")
    model, scores, _ = fit(
        *split_label(table, "target"), train_params(estimator, cv_folds=3), CLASSIFICATION, "accuracy", 0
    )
    assert scores["cv_accuracy_mean"] > 0.8
    assert 0 <= scores["cv_accuracy_std"] < 0.2
    metrics, _ = evaluate(model, table, "target", CLASSIFICATION)
    assert metrics["accuracy"] > 0.85


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_every_declared_estimator_for_regression_beats_the_mean(estimator):
    if REGRESSION not in ESTIMATORS[estimator].tasks:
        pytest.skip(f"{estimator} does no regression")
    table = load_bundled("diabetes", "target")
    model, scores, _ = fit(*split_label(table, "target"), train_params(estimator, cv_folds=3), REGRESSION, "rmse", 0)
    assert set(scores) == {"cv_rmse_mean", "cv_rmse_std"}
    metrics, _ = evaluate(model, table, "target", REGRESSION)
    assert metrics["r2"] > 0.2  # the mean scores 0
    assert metrics["rmse"] < table["target"].std()


def test_cross_validation_scores_as_scikit_learns_own_with_the_same_folds():
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score

    features, labels = split_label(load_bundled("wine", "target"), "target")
    params = train_params("random_forest", knobs={"n_estimators": 10}, cv_folds=4)
    ours = cross_validate(build_model(params, CLASSIFICATION, 3), features, labels, CLASSIFICATION, "accuracy", 4, 5)
    folds = StratifiedKFold(n_splits=4, shuffle=True, random_state=5)
    theirs = cross_val_score(build_model(params, CLASSIFICATION, 3), features, labels, cv=folds)
    assert ours == {"cv_accuracy_mean": theirs.mean(), "cv_accuracy_std": theirs.std()}
    features, values = split_label(load_bundled("diabetes", "target"), "target")
    ours = cross_validate(build_model(params, REGRESSION, 3), features, values, REGRESSION, "rmse", 4, 5)
    theirs = -cross_val_score(
        build_model(params, REGRESSION, 3),
        features,
        values,
        cv=KFold(n_splits=4, shuffle=True, random_state=5),
        scoring="neg_root_mean_squared_error",
    )
    assert ours == pytest.approx({"cv_rmse_mean": theirs.mean(), "cv_rmse_std": theirs.std()})


@pytest.mark.parametrize(
    ("labels", "predictions"),
    [
        (["setosa", "virginica", "setosa", "versicolor"], ["setosa", "setosa", "setosa", "versicolor"]),
        ([3, 1, 2, 2, 1], [3, 2, 2, 2, 0]),  # a class only predicted, never true
        (["b", "a", "a"], ["a", "a", "a"]),  # a class never predicted
    ],
)
def test_score_is_scikit_learns_on_the_labels_themselves(labels, predictions):
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    scores = score(pd.Series(labels), list(predictions), CLASSIFICATION)
    assert scores["accuracy"] == accuracy_score(labels, predictions)
    assert scores["f1_macro"] == f1_score(labels, predictions, average="macro", zero_division=0)
    assert scores["precision_macro"] == precision_score(labels, predictions, average="macro", zero_division=0)
    assert scores["recall_macro"] == recall_score(labels, predictions, average="macro", zero_division=0)


def test_score_computes_every_declared_metric_of_the_task_and_no_other():
    for task, labels, predictions in (
        (CLASSIFICATION, ["a", "a", "b", "b"], ["a", "b", "b", "b"]),
        (REGRESSION, [1.0, 2.0, 4.0], [1.5, 2.0, 3.0]),
    ):
        assert set(score(labels, predictions, task)) == {
            name for name, metric in METRICS.items() if metric.task == task
        }


def test_regression_scores_of_known_predictions():
    metrics = score([1.0, 2.0, 4.0], [1.5, 2.0, 3.0], REGRESSION)
    assert metrics["mae"] == pytest.approx(0.5)
    assert metrics["rmse"] == pytest.approx((1.25 / 3) ** 0.5)
    assert metrics["mape"] == pytest.approx((0.5 + 0 + 0.25) / 3)
    assert "mape" not in score([0.0, 2.0], [1.0, 2.0], REGRESSION)  # a zero in the target: no MAPE


def test_the_main_metric_follows_the_task_and_refuses_one_of_another():
    assert main_metric("auto", CLASSIFICATION).name == "accuracy"
    assert (main_metric("auto", REGRESSION).name, main_metric("auto", REGRESSION).direction) == ("rmse", "lower")
    assert main_metric("r2", REGRESSION).higher_is_better
    with pytest.raises(ValueError, match="evaluate.main_metric accuracy scores classification, but the task is"):
        main_metric("accuracy", REGRESSION)


def test_build_model_passes_the_knobs_and_puts_the_declared_encoder_first():
    model = build_model(train_params("linear", knobs={"C": 0.5, "max_iter": 50}), CLASSIFICATION, 3)
    encoder, classifier = model[0], model[-1]
    assert (classifier.C, classifier.max_iter, classifier.random_state) == (0.5, 50, 3)
    assert (encoder.categories, encoder.missing_values, encoder.scaled) == ("one_hot", False, True)
    ridge = build_model(train_params("linear", knobs={"C": 0.5}), REGRESSION, 3)[-1]
    assert type(ridge).__name__ == "Ridge" and ridge.alpha == 2.0
    forest = build_model(train_params("random_forest", knobs={"n_estimators": 7, "max_depth": 2}), REGRESSION, 3)[-1]
    assert (type(forest).__name__, forest.n_estimators, forest.max_depth) == ("RandomForestRegressor", 7, 2)


def test_fit_refuses_more_folds_than_the_smallest_class():
    table = pd.DataFrame({"x": range(12), "label": ["a"] * 9 + ["b"] * 3})
    with pytest.raises(ValueError, match="train.cv_folds is 5 but a class has only 3 training rows"):
        fit(*split_label(table, "label"), train_params("linear", cv_folds=5), CLASSIFICATION, "accuracy", 0)


def test_score_of_known_predictions():
    labels = pd.Series(["a", "a", "b", "b"])
    predictions = pd.Series(["a", "b", "b", "b"])
    metrics = score(labels, predictions, CLASSIFICATION)
    assert metrics["accuracy"] == 0.75
    assert metrics["recall_macro"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["precision_macro"] == pytest.approx((1.0 + 2 / 3) / 2)


def test_confusion_matrix_has_true_labels_as_rows_and_predictions_as_columns():
    labels = pd.Series(["cat", "cat", "cat", "dog"])
    predictions = pd.Series(["dog", "dog", "cat", "dog"])
    matrix = confusion_matrix(labels, predictions)
    assert matrix.loc["cat", "dog"] == 2  # two cats predicted as dogs
    assert matrix.loc["dog", "cat"] == 0
    assert matrix.loc["cat", "cat"] == 1
    assert matrix.loc["dog", "dog"] == 1


def test_confusion_matrix_includes_a_class_never_predicted():
    matrix = confusion_matrix(pd.Series(["a", "b", "c"]), pd.Series(["a", "a", "a"]))
    assert list(matrix.index) == list(matrix.columns) == ["a", "b", "c"]
    assert matrix.to_numpy().sum() == 3


def user_table(**columns) -> pd.DataFrame:
    base = {"a": [1.0, 2.0, 3.0], "b": [4, 5, 6], "label": ["x", "y", "x"]}
    base.update(columns)
    return pd.DataFrame(base)


def test_parse_table_reads_csv_and_parquet_and_names_a_broken_file(tmp_path):
    table = user_table()
    assert parse_table(table.to_csv(index=False).encode(), "d.csv").equals(table)
    table.to_parquet(tmp_path / "d.parquet")
    assert parse_table((tmp_path / "d.parquet").read_bytes(), "d.parquet").equals(table)
    with pytest.raises(DataSchemaError, match=r"^data/external/d.parquet: not a readable parquet table"):
        parse_table(b"not parquet", "data/external/d.parquet")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a,b,label\n", "d.csv: no data rows, only the header; add rows"),
        (b"", "d.csv: the file is empty; it needs a header row and data rows"),
        (b"  \n", "d.csv: the file is empty"),
        (b"a,b,label\n1,2,x\ninf,3,y\n", "d.csv: column 'a' has 1 infinite values (first in data row 2); replace"),
        (b"a,b,label\n1,2,x\n2,-inf,y\n", "d.csv: column 'b' has 1 infinite values (first in data row 2)"),
        (b"a,b,a,label\n1,2,3,x\n", "d.csv: column 'a' appears 2 times (columns 1, 3); give every column a name"),
        (
            "a,b,label\n1,2,caf\u00e9\n".encode("latin-1"),
            "d.csv: not UTF-8 text (byte 0xe9 at position 17); save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 d.csv",
        ),
        (b"a,b,label\n1,2,x\n3,4,y,5\n", "d.csv: not a readable csv table (Error tokenizing data."),
    ],
)
def test_a_data_problem_names_the_file_the_column_and_the_real_cause(content, message):
    with pytest.raises(DataSchemaError) as caught:
        prepare_table(parse_table(content, "d.csv"), "label", [], "auto", "d.csv")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_a_utf8_file_with_a_byte_order_mark_reads_as_any_other():
    table = parse_table("\ufeffa,b,label\n1,2,caf\u00e9\n".encode(), "d.csv")
    assert list(table.columns) == ["a", "b", "label"] and table["label"].tolist() == ["caf\u00e9"]


def test_a_parquet_file_with_a_repeated_column_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table([[1.0], [2.0], ["x"]], names=["a", "a", "label"]), tmp_path / "d.parquet")
    with pytest.raises(DataSchemaError, match="d.parquet: column 'a' appears 2 times"):
        parse_table((tmp_path / "d.parquet").read_bytes(), "d.parquet")


def test_synthetic_source_is_deterministic_and_labelled():
    first = make_synthetic(300, 5, "label", random_state=1)
    assert list(first.columns) == ["f00", "f01", "f02", "f03", "f04", "label"]
    assert len(first) == 300
    assert set(first["label"]) == {"class_a", "class_b", "class_c"}
    pd.testing.assert_frame_equal(first, make_synthetic(300, 5, "label", random_state=1))
    assert not first.equals(make_synthetic(300, 5, "label", random_state=2))


def test_add_batches_holds_out_raw_rows_and_featurizes_the_rest_for_train():
    raw = pd.DataFrame({"a": [float(value) for value in range(20)], "b": 2.0, "target": ["x", "y"] * 10})
    featurizer = Featurizer(pairwise_products=True).fit(raw.drop(columns=["target"]))
    train = featurize(raw, with_values(TEMPLATE.featurize, pairwise_products=True), "target")
    test = raw.head(4)
    batches = [raw.head(10), raw.tail(10)]
    new_train, new_test = add_batches(train, test, batches, 0.3, 0, featurizer, "target")
    assert (len(new_train), len(new_test)) == (20 + 14, 4 + 6)
    assert list(new_train.columns) == ["a", "b", "a_x_b", "target"] and list(new_test.columns) == ["a", "b", "target"]
    assert new_train["a_x_b"].tolist() == (new_train["a"] * 2.0).tolist()
    with pytest.raises(ValueError, match="batch 1 in data/batches has columns"):
        add_batches(train, test, [raw.rename(columns={"a": "c"})], 0.3, 0, featurizer, "target")


def test_a_batch_without_the_id_columns_is_added_with_them_empty():
    raw = pd.DataFrame({"id": ["r1", "r2", "r3", "r4"], "a": [1.0, 2.0, 3.0, 4.0], "target": ["x", "y"] * 2})
    featurizer = Featurizer(id_columns=("id",)).fit(raw.drop(columns=["target"]))
    train = featurize(raw, TEMPLATE.featurize, "target", id_columns=("id",))
    batch = pd.DataFrame({"a": [5.0, 6.0, 7.0, 8.0], "target": ["x", "y"] * 2})
    _, new_test = add_batches(train, raw, [batch], 0.5, 0, featurizer, "target", ["id"])
    assert list(new_test.columns) == ["id", "a", "target"] and new_test["id"].isna().sum() == 2


def iris_table() -> pd.DataFrame:
    return load_bundled("iris", "target").sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter=1 on purpose
def test_warm_start_logistic_regression_starts_from_the_source_weights():
    table = iris_table()
    params = train_params("linear")
    source, _, _ = fit(*split_label(table, "target"), params, CLASSIFICATION, "accuracy", 0)
    few_steps = train_params("linear", knobs={"max_iter": 1})
    continued, _, _ = fit(*split_label(table, "target"), few_steps, CLASSIFICATION, "accuracy", 0, source)
    fresh = build_model(few_steps, CLASSIFICATION, 0).fit(table.drop(columns=["target"]), table["target"])
    features = table.drop(columns=["target"])
    assert (continued.predict(features) == table["target"]).mean() > (fresh.predict(features) == table["target"]).mean()


def test_warm_start_random_forest_keeps_the_trees_and_grows_more_with_the_sources_encoder():
    table = iris_table()
    params = train_params("random_forest", knobs={"n_estimators": 5})
    source, _, _ = fit(*split_label(table, "target"), params, CLASSIFICATION, "accuracy", 0)
    continued, _, _ = fit(*split_label(table, "target"), params, CLASSIFICATION, "accuracy", 0, source)
    assert len(continued[-1].estimators_) == 10
    kept = [(tree.random_state, tree.tree_.node_count) for tree in continued[-1].estimators_[:5]]
    assert kept == [(tree.random_state, tree.tree_.node_count) for tree in source[-1].estimators_]
    assert continued[0] is source[0]


def test_warm_start_gradient_boosting_adds_iterations():
    table = iris_table()
    params = train_params("hist_gradient_boosting", knobs={"max_iter": 5})
    source, _, _ = fit(*split_label(table, "target"), params, CLASSIFICATION, "accuracy", 0)
    continued, _, _ = fit(*split_label(table, "target"), params, CLASSIFICATION, "accuracy", 0, source)
    assert (source[-1].n_iter_, continued[-1].n_iter_) == (5, 10)


def test_fit_from_a_source_refuses_other_classes_columns_estimators_or_a_task_it_cannot_continue():
    table = iris_table()
    params = train_params("linear")
    source, _, _ = fit(*split_label(table, "target"), params, CLASSIFICATION, "accuracy", 0)
    with pytest.raises(ValueError, match="knows classes"):
        fit(*split_label(table.assign(target="other"), "target"), params, CLASSIFICATION, "accuracy", 0, source)
    with pytest.raises(ValueError, match="takes columns"):
        renamed = table.rename(columns={"sepal_length_cm": "length"})
        fit(*split_label(renamed, "target"), params, CLASSIFICATION, "accuracy", 0, source)
    with pytest.raises(ValueError, match="is a LogisticRegression, train.estimator random_forest builds"):
        fit(*split_label(table, "target"), train_params("random_forest"), CLASSIFICATION, "accuracy", 0, source)
    diabetes = load_bundled("diabetes", "target")
    ridge, _, _ = fit(*split_label(diabetes, "target"), params, REGRESSION, "rmse", 0)
    with pytest.raises(ValueError, match="train.estimator linear cannot continue from a model for regression"):
        fit(*split_label(diabetes, "target"), params, REGRESSION, "rmse", 0, ridge)
