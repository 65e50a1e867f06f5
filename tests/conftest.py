"""Fixtures shared across the test folders."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

# Subprocesses started by the tests (tools/*.py) import this checkout's detbench, not another
# installed copy (an editable install may point at a different checkout).
_ROOT = str(Path(__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH", "")]))


@pytest.fixture
def native_cpu_convolutions():
    """Run CPU convolutions with PyTorch's native kernels instead of oneDNN.

    oneDNN creates its primitives on the first call for each new model and input shape:
    seconds per model here (R-152-FPN at 64x96: 8 s against 0.13 s for the forward). The
    native kernels compute the same convolutions without that start-up cost, which would
    otherwise dominate tests that build many small models.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")  # says nothing here
        with torch.backends.mkldnn.flags(enabled=False):
            yield
