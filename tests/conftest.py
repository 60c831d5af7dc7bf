"""Shared test configuration."""

import os

import pytest
import torch

# Two cores are shared by the whole suite; one intra-op thread per test keeps timings stable.
torch.set_num_threads(int(os.environ.get("SPARSEKIT_TEST_THREADS", "1")))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is present on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
