import pandas as pd
import pytest

from src.config import load_config
from src.ml.features import Featurizer, featurize
from src.ml.metrics import confusion_matrix, evaluate, score
from src.ml.models import build_estimator, cross_validate, fit
from src.ml.sources import (
    DataSchemaError,
    check_schema,
    describe,
    load_bundled,
    make_synthetic,
    parse_table,
    snake_case,
)
from src.ml.split import add_batches, split
from tests.conftest import PROJECT_ROOT, split_label

TEMPLATE = load_config(PROJECT_ROOT / "params.yaml")


def with_values(section, **values):
    """The template's section with some values changed."""
    return section.model_copy(update=values)


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
    assert describe(table, "species") == {"n_rows": 150, "n_features": 4, "n_classes": 3}


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


@pytest.mark.parametrize("estimator", ["logistic_regression", "random_forest"])
def test_fit_learns_iris_with_either_estimator(estimator):
    table = load_bundled("iris", "target")
    params = with_values(TEMPLATE.train, estimator=estimator, n_estimators=20, cv_folds=3)
    model, scores, _ = fit(*split_label(table, "target"), params, random_state=0)
    assert scores["cv_accuracy_mean"] > 0.85
    assert 0 <= scores["cv_accuracy_std"] < 0.2
    metrics, _, _ = evaluate(model, table, "target")
    assert metrics["accuracy"] > 0.9


def test_cross_validation_scores_as_scikit_learns_own_with_the_same_folds():
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    features, labels = split_label(load_bundled("wine", "target"), "target")
    params = with_values(TEMPLATE.train, estimator="random_forest", n_estimators=10, cv_folds=4)
    ours = cross_validate(build_estimator(params, random_state=3), features, labels, params, random_state=5)
    folds = StratifiedKFold(n_splits=4, shuffle=True, random_state=5)
    theirs = cross_val_score(build_estimator(params, random_state=3), features, labels, cv=folds)
    assert ours == {"cv_accuracy_mean": theirs.mean(), "cv_accuracy_std": theirs.std()}


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

    scores = score(pd.Series(labels), list(predictions))
    assert scores["accuracy"] == accuracy_score(labels, predictions)
    assert scores["f1_macro"] == f1_score(labels, predictions, average="macro", zero_division=0)
    assert scores["precision_macro"] == precision_score(labels, predictions, average="macro", zero_division=0)
    assert scores["recall_macro"] == recall_score(labels, predictions, average="macro", zero_division=0)


def test_build_estimator_passes_the_hyperparameters():
    model = build_estimator(
        with_values(TEMPLATE.train, estimator="logistic_regression", C=0.5, max_iter=50), random_state=3
    )
    classifier = model[-1]
    assert (classifier.C, classifier.max_iter, classifier.random_state) == (0.5, 50, 3)
    forest = build_estimator(
        with_values(TEMPLATE.train, estimator="random_forest", n_estimators=7, max_depth=2), random_state=3
    )
    assert (forest.n_estimators, forest.max_depth) == (7, 2)


def test_fit_refuses_more_folds_than_the_smallest_class():
    table = pd.DataFrame({"x": range(12), "label": ["a"] * 9 + ["b"] * 3})
    with pytest.raises(ValueError, match="train.cv_folds is 5 but a class has only 3 training rows"):
        fit(*split_label(table, "label"), with_values(TEMPLATE.train, cv_folds=5), random_state=0)


def test_score_of_known_predictions():
    labels = pd.Series(["a", "a", "b", "b"])
    predictions = pd.Series(["a", "b", "b", "b"])
    metrics = score(labels, predictions)
    assert metrics["accuracy"] == 0.75
    assert metrics["recall_macro"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["precision_macro"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert set(metrics) == {"accuracy", "f1_macro", "precision_macro", "recall_macro"}


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


def test_check_schema_accepts_numeric_features_and_puts_the_label_last():
    table = user_table()[["label", "a", "b"]]
    checked = check_schema(table, "label", "data/external/d.csv")
    assert list(checked.columns) == ["a", "b", "label"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            user_table().drop(columns="label"),
            "data/external/d.csv: no column 'label' (data_load.target); columns: a, b",
        ),
        (user_table(label=["x", None, "y"]), "data/external/d.csv: column 'label' has 1 empty labels"),
        (user_table(label=["x", " ", "y"]), "data/external/d.csv: column 'label' has 1 empty labels"),
        (
            user_table(b=["red", "green", "blue"]),
            "data/external/d.csv: column 'b' holds str values such as 'red'; features must be numbers",
        ),
        (user_table(a=[1.0, None, 2.0]), "data/external/d.csv: column 'a' has 1 empty values"),
        (user_table(label=["x", "x", "x"]), "data/external/d.csv: column 'label' has fewer than two classes"),
        (user_table()[["label"]], "data/external/d.csv: no feature columns besides 'label'"),
    ],
)
def test_check_schema_names_the_file_and_the_column(table, message):
    with pytest.raises(DataSchemaError) as caught:
        check_schema(table, "label", "data/external/d.csv")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


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
        (b"a,b,label\n1,2,x\n3,,y\n", "d.csv: column 'b' has 1 empty values (first in data row 2)"),
        (b"a,b,label\n1,2,x\n3,4,y,5\n", "d.csv: not a readable csv table (Error tokenizing data."),
    ],
)
def test_a_data_problem_names_the_file_the_column_and_the_real_cause(content, message):
    with pytest.raises(DataSchemaError) as caught:
        check_schema(parse_table(content, "d.csv"), "label", "d.csv")
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


def iris_split(estimator: str):
    train = load_bundled("iris", "target")
    return train.sample(frac=1.0, random_state=0).reset_index(drop=True), with_values(
        TEMPLATE.train, estimator=estimator
    )


def test_add_batches_holds_out_raw_rows_and_featurizes_the_rest_for_train():
    raw = pd.DataFrame({"a": [float(value) for value in range(20)], "b": 2.0, "target": ["x", "y"] * 10})
    featurizer = Featurizer(pairwise_products=True).fit(raw.drop(columns=["target"]))
    train = featurize(raw, TEMPLATE.featurize, "target")
    test = raw.head(4)
    batches = [raw.head(10), raw.tail(10)]
    new_train, new_test = add_batches(train, test, batches, 0.3, 0, featurizer, "target")
    assert (len(new_train), len(new_test)) == (20 + 14, 4 + 6)
    assert list(new_train.columns) == ["a", "b", "a_x_b", "target"] and list(new_test.columns) == ["a", "b", "target"]
    assert new_train["a_x_b"].tolist() == (new_train["a"] * 2.0).tolist()
    with pytest.raises(ValueError, match="batch 1 in data/batches has columns"):
        add_batches(train, test, [raw.rename(columns={"a": "c"})], 0.3, 0, featurizer, "target")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter=1 on purpose
def test_warm_start_logistic_regression_starts_from_the_source_weights():
    table, params = iris_split("logistic_regression")
    source, _, _ = fit(*split_label(table, "target"), params, 0)
    few_steps = with_values(params, max_iter=1)
    continued, _, _ = fit(*split_label(table, "target"), few_steps, 0, source)
    fresh = build_estimator(few_steps, 0).fit(table.drop(columns=["target"]), table["target"])
    features = table.drop(columns=["target"])
    assert (continued.predict(features) == table["target"]).mean() > (fresh.predict(features) == table["target"]).mean()


def test_warm_start_random_forest_keeps_the_trees_and_grows_more():
    table, params = iris_split("random_forest")
    params = with_values(params, n_estimators=5)
    source, _, _ = fit(*split_label(table, "target"), params, 0)
    continued, _, _ = fit(*split_label(table, "target"), params, 0, source)
    assert len(continued.estimators_) == 10
    assert continued.estimators_[:5] == source.estimators_


def test_fit_from_a_source_refuses_other_classes_or_columns():
    table, params = iris_split("logistic_regression")
    source, _, _ = fit(*split_label(table, "target"), params, 0)
    with pytest.raises(ValueError, match="knows classes"):
        fit(*split_label(table.assign(target="other"), "target"), params, 0, source)
    with pytest.raises(ValueError, match="takes columns"):
        fit(*split_label(table.rename(columns={"sepal_length_cm": "length"}), "target"), params, 0, source)
