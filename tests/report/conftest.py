"""Fixtures: hand-written run folders (see run_folders.py)."""

import pytest
from run_folders import make_run


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path / "runs")


@pytest.fixture
def preference_run_dir(tmp_path):
    return make_run(tmp_path / "runs", name="cloth_fold_rlvlmf", preference=True)
