"""Fixtures shared by the unit and integration tests."""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import sqlite3
import tempfile
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


@functools.cache
def empty_store() -> Path:
    """An MLflow sqlite store with its tables made, once per test session."""
    from mlflow import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="empty-mlflow-store-"))
    atexit.register(shutil.rmtree, folder, True)
    MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
    return folder / "mlflow.db"


def seed_store(folder: Path) -> None:
    """Give folder an empty MLflow store, mlflow.db, as if one run had made it there.

    MLflow makes a new store's tables by running its schema migrations, about a
    second each time; a copy of a store made once costs nothing. Its Default
    experiment keeps its artifacts in folder/mlruns/0, as a store made there does.
    """
    shutil.copyfile(empty_store(), folder / "mlflow.db")
    default_artifacts = str(folder / "mlruns" / "0")
    with contextlib.closing(sqlite3.connect(folder / "mlflow.db")) as store, store:
        store.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (default_artifacts,))
