import subprocess
import sys

import pytest

from src.config import Config, ConfigError, flatten, load_config
from src.ml.catalog import ESTIMATORS, METRICS, SOURCES
from tests.conftest import PROJECT_ROOT

TEMPLATE_TEXT = (PROJECT_ROOT / "params.yaml").read_text()
TEMPLATE_LINES = TEMPLATE_TEXT.splitlines()


def line_of(text: str, after: str = "") -> int:
    """The line number (from 1) of the first line that starts with `text`, after the line that starts with `after`."""
    start = next(number for number, line in enumerate(TEMPLATE_LINES) if line.startswith(after)) if after else 0
    return next(number for number, line in enumerate(TEMPLATE_LINES) if number >= start and line.startswith(text)) + 1


def one_of(names) -> str:
    """How a message lists the allowed values of a choice: `'a', 'b' or 'c'`."""
    quoted = [f"'{name}'" for name in names]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


def test_template_params_are_valid():
    config = load_config(PROJECT_ROOT / "params.yaml")
    assert isinstance(config, Config)
    assert config.train.estimator in ESTIMATORS
    assert config.train.knobs == getattr(config.train, config.train.estimator)


def test_flat_gives_every_param_as_a_dotted_key(params, write_params):
    flat = load_config(write_params(params)).flat()
    assert flat["data_split.test_size"] == params["data_split"]["test_size"]
    assert flat == flatten(params)


def test_every_declared_estimator_has_its_knobs_in_the_template(params):
    assert set(ESTIMATORS) <= set(params["train"])
    for name, estimator in ESTIMATORS.items():
        assert set(params["train"][name]) == set(estimator.knobs.model_fields), name


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda p: p["data_split"].update(test_size=1.5),
            "data_split.test_size must be between 0 and 1 (exclusive), got 1.5",
        ),
        (lambda p: p["data_split"].update(test_size=0), "data_split.test_size must be between 0 and 1"),
        (lambda p: p["data_split"].update(test_size="0.2"), "data_split.test_size must be a number, got str '0.2'"),
        (
            lambda p: p["data_split"].update(tset_size=0.3),
            "unknown key data_split.tset_size (did you mean test_size?); allowed: test_size, stratify",
        ),
        (lambda p: p.update(trian=p.pop("train")), "unknown section trian (did you mean train?)"),
        (lambda p: p.pop("train"), "missing section train"),
        (lambda p: p["train"].pop("cv_folds"), "missing key train.cv_folds"),
        (
            lambda p: p["train"].update(estimator="svm"),
            f"train.estimator must be one of {one_of(ESTIMATORS)}, got 'svm'",
        ),
        (lambda p: p["train"].update(cv_folds=1), "train.cv_folds must be between 2 and 20, got 1"),
        (lambda p: p["train"].update(cv_folds=2.5), "train.cv_folds must be an integer, got float 2.5"),
        (lambda p: p["train"]["linear"].update(C=0), "train.linear.C must be greater than 0, got 0"),
        (
            lambda p: p["train"]["random_forest"].update(max_depth=0),
            "train.random_forest.max_depth must be at least 1, got 0",
        ),
        (
            lambda p: p["train"]["linear"].update(alpha=1),
            "unknown key train.linear.alpha; allowed: C, max_iter",
        ),
        (lambda p: p["train"].pop("mlp"), "missing key train.mlp; add it"),
        (lambda p: p["train"].update(C=1.0), "unknown key train.C;"),
        (
            lambda p: p["base"].update(task="ranking"),
            "base.task must be one of 'auto', 'classification' or 'regression'",
        ),
        (
            lambda p: (p["base"].update(task="regression"), p["evaluate"].update(main_metric="accuracy")),
            "evaluate.main_metric accuracy scores classification, but base.task is regression; use auto or one of "
            + ", ".join(name for name, metric in METRICS.items() if metric.task == "regression"),
        ),
        (
            lambda p: p["evaluate"].update(main_metric="auc"),
            f"evaluate.main_metric must be auto or one of {', '.join(METRICS)}, got 'auc'",
        ),
        (
            lambda p: (
                p["base"].update(task="regression"),
                p["train"].update(estimator="linear", init_from="champion", init_mode="warm_start"),
            ),
            "train.estimator linear cannot continue from train.init_from's model for regression; set "
            "train.init_mode: refit",
        ),
        (
            lambda p: p["data_load"].update(id_columns=["id", "id"]),
            "data_load.id_columns names 'id' twice; list each column once",
        ),
        (
            lambda p: p["data_load"].update(id_columns=["target"]),
            "data_load.id_columns names the label column 'target'; remove it",
        ),
        (lambda p: p["data_split"].update(stratify="yes"), "data_split.stratify must be true or false, got str 'yes'"),
        (
            lambda p: p["data_load"].update(source="mnist"),
            f"data_load.source must be one of {', '.join(SOURCES)}, or a .csv or .parquet "
            "file or a folder of PNG images under data/external/, got 'mnist'",
        ),
        (
            lambda p: p["data_load"].update(source="data/external"),
            f"data_load.source must be one of {next(iter(SOURCES))}",
        ),
        (lambda p: p["featurize"].update(pixel_pooling=0), "featurize.pixel_pooling must be between 1 and 64, got 0"),
        (
            lambda p: p["data_load"].update(source="data/external/../x.csv"),
            f"data_load.source must be one of {next(iter(SOURCES))}",
        ),
        (
            lambda p: p["data_load"].update(source="data/external/x.json"),
            f"data_load.source must be one of {next(iter(SOURCES))}",
        ),
        (lambda p: p["featurize"].update(drop_columns="a"), "featurize.drop_columns must be a list, got str 'a'"),
        (lambda p: p.update(base=None), "base must be a mapping of keys, got nothing"),
        (lambda p: p["mlflow"].update(experiment_name=""), "mlflow.experiment_name must not be empty"),
        (lambda p: p["base"].update(log_level="LOUD"), "base.log_level must be one of"),
        (
            lambda p: p["base"].update(random_state=2**32),
            "base.random_state must be between 0 and 4294967295, got 4294967296",
        ),
        (
            lambda p: p["featurize"].update(pixel_pooling=2),
            "featurize.pixel_pooling is 2, but data_load.source iris is not images; set it to 1",
        ),
        (
            lambda p: (p["featurize"].update(pixel_pooling=3), p["data_load"].update(source="digits")),
            "featurize.pixel_pooling is 3, which does not divide the 8x8 digits; use one of 1, 2, 4, 8",
        ),
        (
            lambda p: (
                p["featurize"].update(pairwise_products=True),
                p["data_load"].update(source="synthetic", synthetic_features=40),
            ),
            "featurize.pairwise_products would add 780 columns for the 40 synthetic features (at most 500); "
            "set it to false or lower data_load.synthetic_features",
        ),
        (lambda p: p["registry"].update(metric="accuracy"), "unknown key registry.metric;"),
        (lambda p: p["drift"].update(p_value=0), "drift.p_value must be between 0 and 1 (exclusive), got 0"),
        (
            lambda p: p["drift"].update(large_sample=10),
            "drift.large_sample must be between 100 and 100000000, got 10",
        ),
        (
            lambda p: p["drift"].update(psi=0.25),
            "unknown key drift.psi; allowed: p_value, numeric_distance, categorical_distance, large_sample, "
            "max_categories",
        ),
    ],
)
def test_bad_value_gives_one_line_naming_the_key(params, write_params, mutate, message):
    mutate(params)
    path = write_params(params)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ")
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base:\n  random_state: [1,\n", "invalid YAML at line 3, column 1"),
        ("base: {random_state: 1\n", "invalid YAML at line 2"),
        ("", "expected a mapping of sections, got nothing"),
        ("- base\n", "expected a mapping of sections, got list"),
    ],
)
def test_unreadable_yaml_gives_one_line(write_params, text, message):
    path = write_params(text)
    with pytest.raises(ConfigError, match="invalid YAML|expected a mapping") as caught:
        load_config(path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda text: text.replace("    C: 1.0 ", "    C: 0.5\n    C: 1.0 "),
            f"params.yaml: key train.linear.C appears twice (lines {line_of('    C:', 'train:')} and "
            f"{line_of('    C:', 'train:') + 1}); keep one",
        ),
        (
            lambda text: text + "train:\n  cv_folds: 3\n",
            f"params.yaml: section train appears twice (lines {line_of('train:')} and {len(TEMPLATE_LINES) + 1}); "
            "keep one",
        ),
        (
            lambda text: text.replace("drop_columns: []", "drop_columns: []\n  drop_columns: [a]"),
            "params.yaml: key featurize.drop_columns appears twice",
        ),
    ],
)
def test_a_key_given_twice_is_refused_naming_both_lines(write_params, edit, message):
    """YAML keeps the last of two equal keys without a word; params.yaml refuses them."""
    path = write_params(edit((PROJECT_ROOT / "params.yaml").read_text()))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(str(path.parent / message))


def test_digits_runs_on_the_default_featurize_params(params, write_params):
    params["data_load"]["source"] = "digits"
    params["featurize"]["pairwise_products"] = True
    assert load_config(write_params(params)).featurize.pairwise_products  # products skip image pixels


def test_every_key_of_the_template_is_required(params, write_params):
    import copy

    for key in flatten(params):
        mutated = copy.deepcopy(params)
        *path, last = key.split(".")
        section = mutated
        for part in path:
            section = section[part]
        del section[last]
        with pytest.raises(ConfigError, match=f"missing key {key};"):
            load_config(write_params(mutated))


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="params.yaml: file not found"):
        load_config(tmp_path / "params.yaml")


def test_stage_cli_exits_2_with_one_line_and_no_traceback(params, write_params):
    params["data_split"]["test_size"] = 1.5
    path = write_params(params)
    completed = subprocess.run(
        [sys.executable, "-m", "src.stages.data_split", "--config", str(path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        f"error: {path}: data_split.test_size must be between 0 and 1 (exclusive), got 1.5"
    ]
