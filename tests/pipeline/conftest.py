"""Fixtures shared by the pipeline tests."""

import importlib.util
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient


@pytest.fixture(scope="session")
def blank_db(tmp_path_factory):
    """An empty MLflow SQLite store, migrated once per session (migrations take seconds); tests copy it."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def one_torch_thread():
    """Tiny models on a shared 2-core machine: several torch threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def helpers():
    """``write_project`` and ``run_stage`` of test_probes.py: one project builder for the three stages' tests."""
    spec = importlib.util.spec_from_file_location("probe_tests", Path(__file__).with_name("test_probes.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
