"""Fixtures shared by the unit and integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def params() -> dict:
    """The template's params.yaml as a plain mapping, to mutate in a test."""
    return yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())


@pytest.fixture
def write_params(tmp_path: Path):
    """Write a params mapping (or raw text) to tmp_path/params.yaml and return its path."""

    def write(document: dict | str) -> Path:
        path = tmp_path / "params.yaml"
        path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
        return path

    return write


def split_label(table, target: str):
    """A labelled table as `fit` takes it: the feature columns, and the label column."""
    return table.drop(columns=[target]), table[target]
