"""The root config node: yacs' CfgNode whose merge methods know detbench's rules.

maskrcnn-benchmark scripts call ``cfg.merge_from_file(path)`` and ``cfg.merge_from_list(opts)``
on the node itself. Here those go through :mod:`detbench.config.loader`, so that ``_BASE_``
chains, maskrcnn-benchmark's value spellings and the helpful errors work the same as with
:func:`detbench.config.load_config`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from yacs.config import CfgNode as _YacsNode

AUTO_DEVICE = "auto"
_logged: set[str] = set()


def auto_device() -> str:
    """What ``MODEL.DEVICE auto`` means here: "cuda" when a GPU is visible, else "cpu" (logged once)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in _logged:
        _logged.add(device)
        why = "a GPU is visible" if device == "cuda" else "no GPU is visible"
        logging.getLogger("detbench.config").info("MODEL.DEVICE auto: using %s (%s)", device, why)
    return device


def settle_device(cfg: _YacsNode) -> None:
    """Replace ``MODEL.DEVICE auto`` in the (unfrozen) ``cfg`` by :func:`auto_device`; other values stay."""
    model = cfg.get("MODEL")
    if model is not None and model.get("DEVICE") == AUTO_DEVICE:
        model.DEVICE = auto_device()


class CfgNode(_YacsNode):
    """A yacs node (same keys, attribute access, ``freeze``/``clone``/``dump``) with detbench merging.

    ``freeze()`` first settles ``MODEL.DEVICE auto`` to the device it means on this machine, so
    that ``torch.device(cfg.MODEL.DEVICE)`` works after freezing, as in maskrcnn-benchmark.
    """

    def freeze(self) -> None:
        if not self.is_frozen():
            settle_device(self)
        super().freeze()

    def merge_from_file(self, cfg_filename: str | Path) -> None:
        """Merge a YAML file after its ``_BASE_`` chain (any depth); ConfigError on bad input."""
        from .loader import merge_from_file  # here: loader imports defaults, which imports this module

        merge_from_file(self, cfg_filename)

    def merge_from_list(self, cfg_list: Iterable[str]) -> None:
        """Merge ``KEY VALUE`` pairs (``["SOLVER.BASE_LR", "0.01"]``); ConfigError on bad input."""
        from .loader import merge_from_list

        merge_from_list(self, cfg_list)
