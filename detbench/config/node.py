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
# Replaced in OUTPUT_DIR by the config file's name: the default "output/{config}".
CONFIG_NAME_FIELD = "{config}"
_NAME_ATTR = "_detbench_config_name"  # yacs keeps its own flags in the node's __dict__ too
_AUTO_ATTR = "_detbench_device_was_auto"
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


def settle(cfg: _YacsNode) -> None:
    """Fill in the values that depend on where the config runs, in the (unfrozen) root ``cfg``:
    ``MODEL.DEVICE auto`` becomes :func:`auto_device`, and ``{config}`` in ``OUTPUT_DIR`` the name
    of the last config file merged (without ``.yaml``; "defaults" when none was)."""
    model = cfg.get("MODEL")
    if model is not None and model.get("DEVICE") == AUTO_DEVICE:
        model.DEVICE = auto_device()
        cfg.__dict__[_AUTO_ATTR] = True
    if isinstance(cfg.get("OUTPUT_DIR"), str) and CONFIG_NAME_FIELD in cfg.OUTPUT_DIR:
        cfg.OUTPUT_DIR = cfg.OUTPUT_DIR.replace(CONFIG_NAME_FIELD, config_name(cfg))


def describe_device(cfg: _YacsNode) -> str:
    """``MODEL.DEVICE`` and where it came from, for the log: "cpu (MODEL.DEVICE auto: no GPU is
    visible)" or "cuda:1 (MODEL.DEVICE)"."""
    device = cfg.MODEL.DEVICE
    if not cfg.__dict__.get(_AUTO_ATTR):
        return f"{device} (MODEL.DEVICE)"
    why = "a GPU is visible" if device == "cuda" else "no GPU is visible"
    return f"{device} (MODEL.DEVICE auto: {why})"


def config_name(cfg: _YacsNode) -> str:
    """The name of the last config file merged into ``cfg`` (its stem), or "defaults"."""
    return cfg.__dict__.get(_NAME_ATTR, "defaults")


def remember_config_name(cfg: _YacsNode, config_file: str | Path) -> None:
    """Record ``config_file``'s stem on ``cfg`` (kept by ``clone()``, not a config key)."""
    cfg.__dict__[_NAME_ATTR] = Path(str(config_file)).stem


class CfgNode(_YacsNode):
    """A yacs node (same keys, attribute access, ``freeze``/``clone``/``dump``) with detbench merging.

    ``freeze()`` first :func:`settle` s the root: ``MODEL.DEVICE auto`` becomes the device it means
    on this machine (so ``torch.device(cfg.MODEL.DEVICE)`` works after freezing, as in
    maskrcnn-benchmark) and ``OUTPUT_DIR``'s ``{config}`` the config file's name.
    """

    def freeze(self) -> None:
        if not self.is_frozen():
            settle(self)
        super().freeze()

    def merge_from_file(self, cfg_filename: str | Path) -> None:
        """Merge a YAML file after its ``_BASE_`` chain (any depth); ConfigError on bad input."""
        from .loader import merge_from_file  # here: loader imports defaults, which imports this module

        merge_from_file(self, cfg_filename)

    def merge_from_list(self, cfg_list: Iterable[str]) -> None:
        """Merge ``KEY VALUE`` pairs (``["SOLVER.BASE_LR", "0.01"]``); ConfigError on bad input."""
        from .loader import merge_from_list

        merge_from_list(self, cfg_list)
