"""maskrcnn-benchmark's checkpointer API on top of detbench's :class:`~.checkpoint.Checkpointer`.

``Checkpointer(model, optimizer, scheduler, save_dir, save_to_disk, logger)`` already has
maskrcnn-benchmark's constructor and ``save(name, **extra)``, ``load(f, use_latest)``,
``has_checkpoint()`` and ``get_checkpoint_file()``; this module adds what its scripts also call:
``DetectronCheckpointer(cfg, model, ...)`` and ``tag_last_checkpoint(name)``. Files are read with
``torch.load(weights_only=True)`` exactly as by ``Checkpointer`` (the loading is inherited).

maskrcnn-benchmark's ``catalog://`` names point at Detectron's Caffe2 ``.pkl`` files, which
detbench does not read; they fail with the torchvision:// name to use instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import comm
from .checkpoint import POINTER, CheckpointError, Checkpointer, atomic_write

# maskrcnn-benchmark's ImageNet backbones -> the closest torchvision weights (not the same numbers:
# torchvision's ResNets put the stride on the 3x3 conv, so use MODEL.RESNETS.STRIDE_IN_1X1 False).
CATALOG_EQUIVALENTS = {
    "ImageNetPretrained/MSRA/R-50": "torchvision://resnet50",
    "ImageNetPretrained/MSRA/R-50-GN": "torchvision://resnet50",
    "ImageNetPretrained/MSRA/R-101": "torchvision://resnet101",
    "ImageNetPretrained/MSRA/R-101-GN": "torchvision://resnet101",
    "ImageNetPretrained/FAIR/20171220/X-101-32x8d": "torchvision://resnext101_32x8d",
}
CATALOG_SCHEME = "catalog://"


class DetectronCheckpointer(Checkpointer):
    """maskrcnn-benchmark's ``DetectronCheckpointer(cfg, model, optimizer, scheduler, save_dir,
    save_to_disk, logger)``: a :class:`Checkpointer` that also knows the config.

    ``save_to_disk=None`` (the default) means "on the main process only", as distributed
    scripts pass ``get_rank() == 0``. ``load(f)`` accepts what ``Checkpointer.load`` accepts
    (detbench checkpoints, state-dict files, torchvision files, ``torchvision://NAME``); a
    ``catalog://`` name raises CheckpointError naming its torchvision:// counterpart.
    """

    def __init__(self, cfg, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                 save_dir: str | os.PathLike = "", save_to_disk: bool | None = None,
                 logger: logging.Logger | None = None) -> None:
        if save_to_disk is None:
            save_to_disk = comm.is_main_process()
        super().__init__(model, optimizer, scheduler, save_dir, save_to_disk, logger)
        self.cfg = cfg.clone()

    def load(self, f: str | os.PathLike | None = None, use_latest: bool = True,
             resume: bool | None = None) -> dict[str, Any]:
        name = str(f) if f else ""
        if name.startswith(CATALOG_SCHEME) and not (use_latest and self.has_checkpoint()):
            key = name[len(CATALOG_SCHEME):]
            instead = CATALOG_EQUIVALENTS.get(key)
            hint = f"; the closest detbench name is {instead} (with MODEL.RESNETS.STRIDE_IN_1X1 False)" \
                if instead else f"; use a local .pth file or one of the torchvision:// names"
            raise CheckpointError(f"{name}: maskrcnn-benchmark's catalog:// weights are Caffe2 .pkl files, "
                                  f"which detbench does not load{hint}")
        return super().load(f, use_latest=use_latest, resume=resume)


def tag_last_checkpoint(checkpointer: Checkpointer, last_filename: str | os.PathLike) -> None:
    """Point ``checkpointer``'s ``last_checkpoint`` at ``last_filename`` (a file in its save_dir,
    or an absolute path), atomically; only a checkpointer that saves to disk writes."""
    if checkpointer.save_dir is None or not checkpointer.save_to_disk:
        return
    save_dir = checkpointer.save_dir
    path = Path(last_filename)
    # maskrcnn-benchmark passes paths that include save_dir ("output/model_0000100.pth"); a bare
    # name is taken in save_dir, as get_checkpoint_file reads it.
    target = (save_dir / path if not path.is_absolute() and (save_dir / path).exists() else path).resolve()
    try:
        name = target.relative_to(save_dir.resolve()).as_posix()
    except ValueError:  # elsewhere: kept as an absolute path
        name = str(target)
    save_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(save_dir / POINTER, lambda out: out.write(name.encode()))
