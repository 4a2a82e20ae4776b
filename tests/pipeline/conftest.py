"""Fixtures shared by the pipeline tests."""

import pytest
from mlflow import MlflowClient


@pytest.fixture(scope="session")
def blank_db(tmp_path_factory):
    """An empty MLflow SQLite store, migrated once per session (migrations take seconds); tests copy it."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path
