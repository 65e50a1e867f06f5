"""Process-wide setup that runs before any config is read: the user's own module.

maskrcnn-benchmark's ``setup_environment()``: when the environment variable
``DETBENCH_ENV_MODULE`` (or maskrcnn-benchmark's ``TORCH_DETECTRON_ENV_MODULE``) names a
Python file or an importable module, it is imported once. That is where a user registers
their own parts, e.g. ``@registry.ROI_BOX_PREDICTOR.register("MyPredictor")``, so that the
tools (``detbench-train``, ...) can select them from YAML without editing detbench.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

ENV_VARS = ("DETBENCH_ENV_MODULE", "TORCH_DETECTRON_ENV_MODULE")
_done: dict[str, ModuleType] = {}


def import_file(module_name: str, file_path: str | os.PathLike, make_importable: bool = False) -> ModuleType:
    """Import the Python file ``file_path`` as ``module_name`` (also put in sys.modules when
    ``make_importable``). Raises ImportError naming the file when it is missing or fails."""
    path = Path(file_path)
    if not path.is_file():
        raise ImportError(f"{file_path}: no such Python file")
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{file_path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    if make_importable:
        sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def setup_custom_environment(custom_module: str) -> ModuleType:
    """Import ``custom_module`` (a ``.py`` path or a dotted module name) once per process."""
    if custom_module in _done:
        return _done[custom_module]
    if custom_module.endswith(".py"):
        module = import_file("detbench.utils.env.custom_module", custom_module, make_importable=False)
    else:
        module = importlib.import_module(custom_module)
    # maskrcnn-benchmark's contract: a module may define setup_environment() to run more setup.
    setup = getattr(module, "setup_environment", None)
    if callable(setup):
        setup()
    logging.getLogger(__name__).info("Imported the custom environment module %s", custom_module)
    _done[custom_module] = module
    return module


def setup_environment() -> ModuleType | None:
    """Import the module named by DETBENCH_ENV_MODULE / TORCH_DETECTRON_ENV_MODULE, if any."""
    for name in ENV_VARS:
        value = os.environ.get(name, "").strip()
        if value:
            return setup_custom_environment(value)
    return None
