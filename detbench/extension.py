"""The one place that loads the compiled library ``detbench._C``.

The library registers the ``torch.ops.detbench`` operators (``roi_align``, ``roi_align_backward``,
``roi_pool``, ``roi_pool_backward``, ``sigmoid_focal_loss``, ``sigmoid_focal_loss_backward``,
``nms``, ``batched_nms``, ``_cuda_version``). ``import detbench`` works
without it; calling an operator without it raises :class:`MissingExtensionError`
with the command that builds it.
"""

from __future__ import annotations

import importlib.machinery
import os
from functools import lru_cache
from pathlib import Path

import torch

_PACKAGE_DIR = Path(__file__).resolve().parent

BUILD_HINT = (
    "Build it from the project root with:\n"
    "    pip install -r requirements.txt\n"
    "    pip install -e . --no-build-isolation\n"
    "(set FORCE_CUDA=1 to also compile the CUDA kernels without a visible GPU; "
    "`python -m detbench.utils.collect_env` prints what the build sees)."
)


class MissingExtensionError(RuntimeError):
    """Raised when an operator is called but ``detbench._C`` is not built or fails to load."""


def find_library(name: str = "_C", directory: Path = _PACKAGE_DIR) -> Path | None:
    """Path of the compiled extension ``name`` in ``directory`` (any ABI suffix), or None."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = directory / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _load(name: str, directory: Path) -> None:
    path = find_library(name, directory)
    if path is None:
        raise MissingExtensionError(
            f"detbench's compiled operators ({name}) were not found in {directory}.\n{BUILD_HINT}"
        )
    try:
        torch.ops.load_library(str(path))
    except OSError as exc:  # built against another torch, or a missing shared library
        raise MissingExtensionError(
            f"{path} exists but could not be loaded ({exc}); it was probably built against "
            f"another torch version (now {torch.__version__}). Rebuild it.\n{BUILD_HINT}"
        ) from exc


@lru_cache(maxsize=None)
def _load_error() -> MissingExtensionError | None:
    """Load ``detbench._C`` once; return the error instead of raising it."""
    if os.environ.get("DETBENCH_DISABLE_EXTENSION") == "1":  # lets tests see the no-build path
        return MissingExtensionError(f"DETBENCH_DISABLE_EXTENSION=1 is set.\n{BUILD_HINT}")
    try:
        _load("_C", _PACKAGE_DIR)
    except MissingExtensionError as exc:
        return exc
    return None


def has_ops() -> bool:
    """True when ``torch.ops.detbench`` is usable."""
    return _load_error() is None


def assert_has_ops() -> None:
    """Raise :class:`MissingExtensionError` (with build instructions) unless the ops are loaded.

    Skipped while Dynamo traces: it cannot trace the cached file lookup, and a traced
    graph only exists once the ops have already run eagerly or been resolved.
    """
    if torch.compiler.is_compiling():
        return
    error = _load_error()
    if error is not None:
        raise MissingExtensionError(str(error))


def cuda_version() -> int | None:
    """CUDA version the extension was compiled with (e.g. 13000), or None for a CPU-only build."""
    assert_has_ops()
    version = int(torch.ops.detbench._cuda_version())
    return None if version < 0 else version
