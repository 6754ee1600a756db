"""Fixtures shared by the tests in this folder."""

import os

import pytest
import torch

from tiny_priors import tiny_embedded_prior


def pytest_configure(config):
    """Under pytest-xdist each worker takes one core's worth of threads: workers x threads = cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(scope="module")
def tiny_prior():
    """A tiny random embedded prior (`tiny_priors.tiny_embedded_prior`), one per test module."""
    return tiny_embedded_prior()


@pytest.fixture
def empty_runner(runner, tmp_path):
    """The module's web UI `runner` fixture (its prior loaded once) with a fresh, empty runs directory."""
    runs_dir, runner.runs_dir = runner.runs_dir, tmp_path / "runs"
    runner.runs_dir.mkdir()
    yield runner
    runner.runs_dir = runs_dir
