"""The environment report runs and names what a bug report needs."""

import subprocess
import sys

import torch

from detbench.utils.collect_env import collect_env


def test_report_lists_versions_and_build():
    report = collect_env()
    for needle in ("PyTorch", torch.__version__, "detbench._C", "CUDA available", "nvcc", "torchvision"):
        assert needle in report


def test_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "detbench.utils.collect_env"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "PyTorch" in result.stdout
