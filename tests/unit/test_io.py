import pandas as pd
import pytest

from src.io import MissingInputError, atomic_path, read_table, write_json, write_table
from src.ml.plots import save_confusion_matrix


def test_atomic_path_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "metrics.json"
    write_json({"accuracy": 0.9}, target)
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == '{\n  "accuracy": 0.9\n}\n'
    assert [path.name for path in tmp_path.iterdir()] == ["metrics.json"]


def test_table_round_trip(tmp_path):
    table = pd.DataFrame({"a": [1.0, 2.0], "label": ["x", "y"]})
    write_table(table, tmp_path / "sub" / "t.parquet")
    pd.testing.assert_frame_equal(read_table(tmp_path / "sub" / "t.parquet", made_by="featurize"), table)


def test_missing_input_names_the_stage_that_writes_it(tmp_path):
    with pytest.raises(MissingInputError, match=r"t.parquet is missing; it is written by the featurize stage"):
        read_table(tmp_path / "t.parquet", made_by="featurize")


def test_confusion_matrix_png_is_written(tmp_path):
    matrix = pd.DataFrame([[3, 1], [0, 4]], index=["a", "b"], columns=["a", "b"])
    save_confusion_matrix(matrix, tmp_path / "cm.png")
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
