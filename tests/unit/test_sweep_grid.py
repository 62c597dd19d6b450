"""`make sweep`'s grid, its checks and its ranking, in-process; dvc.lock read into hashes and tags."""

from __future__ import annotations

import pytest

from src.config import ConfigError, load_config
from src.lockfile import lineage_tags, output_hashes, output_tag
from src.pipeline.sweep import Point, apply_overrides, parse_grid, ranking
from tests.conftest import PROJECT_ROOT

TEMPLATE = load_config(PROJECT_ROOT / "params.yaml")


def test_a_grid_is_every_combination_with_values_read_as_yaml():
    assert parse_grid("train.C=0.1,1 data_split.stratify=true,false") == [
        {"train.C": 0.1, "data_split.stratify": True},
        {"train.C": 0.1, "data_split.stratify": False},
        {"train.C": 1, "data_split.stratify": True},
        {"train.C": 1, "data_split.stratify": False},
    ]
    assert parse_grid("train.estimator=mlp") == [{"train.estimator": "mlp"}]


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ("train.C", "SWEEP: 'train.C' is not key=value[,value...], e.g. train.linear.C=0.1,1,10"),
        ("train.C=", "SWEEP: 'train.C=' is not key=value[,value...]"),
        ("  ", "SWEEP is empty; give e.g. SWEEP="),
    ],
)
def test_a_grid_that_is_not_key_values_is_refused_in_one_line(grid, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        parse_grid(grid)


def test_each_point_is_validated_as_params_yaml_is():
    assert apply_overrides(TEMPLATE, {"train.linear.C": 0.5}).train.linear.C == 0.5
    with pytest.raises(ConfigError, match="SWEEP: unknown key train.linear.c; did you mean train.linear.C"):
        apply_overrides(TEMPLATE, {"train.linear.c": 1})
    with pytest.raises(ConfigError, match="SWEEP: data_split.test_size must be between 0 and 1"):
        apply_overrides(TEMPLATE, {"data_split.test_size": 2})
    with pytest.raises(ConfigError, match="SWEEP: featurize.pixel_pooling is 2, but data_load.source iris is not"):
        apply_overrides(TEMPLATE, {"featurize.pixel_pooling": 2})


def test_the_ranking_puts_the_best_first_and_failed_points_last():
    points = [
        Point({"train.linear.C": 0.1}, "sweep-1", "r1", "FINISHED", "accuracy", 0.8),
        Point({"train.linear.C": 1}, "sweep-2", "r2", "FAILED", "", None),
        Point({"train.linear.C": 10}, "sweep-3", "r3", "FINISHED", "accuracy", 0.95),
    ]
    rows = ranking(points).splitlines()
    assert rows[2:] == [
        "| 1 | train.linear.C=10 | accuracy 0.9500 | FINISHED | sweep-3 | r3 |",
        "| 2 | train.linear.C=0.1 | accuracy 0.8000 | FINISHED | sweep-1 | r1 |",
        "| 3 | train.linear.C=1 | - | FAILED | sweep-2 | r2 |",
    ]


def test_a_metric_where_lower_is_better_ranks_the_lowest_first():
    points = [
        Point({"train.linear.C": 0.1}, "sweep-1", "r1", "FINISHED", "rmse", 60.0),
        Point({"train.linear.C": 10}, "sweep-2", "r2", "FINISHED", "rmse", 52.5),
    ]
    assert [row.split(" | ")[1] for row in ranking(points).splitlines()[2:]] == [
        "train.linear.C=10",
        "train.linear.C=0.1",
    ]


def test_dvc_lock_becomes_output_hashes_and_lineage_tags():
    lock = {
        "stages": {
            "data_load": {"outs": [{"path": "data/raw/dataset.parquet", "md5": "a" * 32}]},
            "train": {"outs": [{"path": "models/model.joblib", "md5": "b" * 32}]},
        }
    }
    assert output_hashes(lock) == {"data/raw/dataset.parquet": "a" * 32, "models/model.joblib": "b" * 32}
    assert lineage_tags(lock) == {
        output_tag("data/raw/dataset.parquet"): "a" * 32,
        output_tag("models/model.joblib"): "b" * 32,
        "data.md5": "a" * 32,
    }
    assert output_tag("models/model.joblib") == "dvc.out.models/model.joblib"
    assert output_hashes({}) == {} and lineage_tags({})["data.md5"] == ""
