"""Export a configured detector to TorchScript or ONNX: the graph of one image, any size.

Each meta-architecture that can be exported registers, in ``EXPORTABLE_ARCHITECTURES``
(keyed like MODEL.META_ARCHITECTURE), a builder ``(cfg, model, preprocess) -> nn.Module``
whose ``forward(image uint8 [H, W, 3])`` returns a tuple of tensors named by its
``output_names``, and a check ``(cfg) -> list[str]`` naming each config value it cannot
export (empty: exportable). A new architecture plugs in with one ``register`` call.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn
from yacs.config import CfgNode

from detbench.modeling.detector import build_detection_model
from detbench.utils.checkpoint import Checkpointer
from detbench.utils.registry import Registry

from .preprocess import Preprocess
from .rcnn import ExportableRCNN
from .retinanet import ExportableRetinaNet

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")


@dataclass(frozen=True)
class ExportSpec:
    """How one meta-architecture exports: ``build(cfg, model, preprocess)`` -> module,
    ``check(cfg)`` -> reasons it cannot (empty when it can)."""

    build: Callable[[CfgNode, nn.Module, Preprocess], nn.Module]
    check: Callable[[CfgNode], list[str]]


EXPORTABLE_ARCHITECTURES = Registry("EXPORTABLE_ARCHITECTURES")
"""MODEL.META_ARCHITECTURE -> :class:`ExportSpec`."""


def _rcnn_problems(cfg: CfgNode) -> list[str]:
    problems = []
    if cfg.MODEL.RPN_ONLY and not cfg.MODEL.RETINANET_ON:  # RetinaNet is RPN-only, with final detections
        problems.append("MODEL.RPN_ONLY is True: an RPN-only model has proposals, not detections")
    if cfg.MODEL.MASK_ON and cfg.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS:
        problems.append("MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS is True: the export pastes the masks into the "
                        "input image itself; set it to False")
    return problems


def _build_generalized_rcnn(cfg: CfgNode, model: nn.Module, preprocess: Preprocess) -> nn.Module:
    """R-CNN models, and RetinaNet (built in the RPN's place, as in maskrcnn-benchmark)."""
    if cfg.MODEL.RETINANET_ON:
        return ExportableRetinaNet(model, preprocess)
    return ExportableRCNN(model, preprocess)


EXPORTABLE_ARCHITECTURES.register("GeneralizedRCNN")(ExportSpec(build=_build_generalized_rcnn, check=_rcnn_problems))


def export_problems(cfg: CfgNode) -> list[str]:
    """Why ``cfg``'s model cannot be exported, one message per config value (empty: it can)."""
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch not in EXPORTABLE_ARCHITECTURES:
        known = ", ".join(EXPORTABLE_ARCHITECTURES)
        return [f"MODEL.META_ARCHITECTURE {arch!r} has no export (exportable: {known})"]
    problems = list(EXPORTABLE_ARCHITECTURES.get(arch).check(cfg))
    min_size = cfg.INPUT.MIN_SIZE_TEST
    if isinstance(min_size, (tuple, list)) and len(min_size) != 1:
        problems.append(f"INPUT.MIN_SIZE_TEST is {tuple(min_size)}: the export resizes to one size")
    if cfg.INPUT.RESIZE_MODE != "pil":
        problems.append(f"INPUT.RESIZE_MODE is {cfg.INPUT.RESIZE_MODE!r}: the export reproduces the 'pil' resize only")
    return problems


def check_exportable(cfg: CfgNode) -> None:
    """Raise ValueError naming every config value that prevents the export, before any work."""
    problems = export_problems(cfg)
    if problems:
        raise ValueError("this config cannot be exported:\n  " + "\n  ".join(problems))


def build_preprocess(cfg: CfgNode) -> Preprocess:
    """The test-time resize and normalisation of ``cfg`` (INPUT.*_TEST, DATALOADER.SIZE_DIVISIBILITY)."""
    min_size = cfg.INPUT.MIN_SIZE_TEST
    if isinstance(min_size, (tuple, list)):
        min_size = min_size[0]
    return Preprocess(min_size, cfg.INPUT.MAX_SIZE_TEST, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD,
                      cfg.INPUT.TO_BGR255, cfg.DATALOADER.SIZE_DIVISIBILITY)


def build_export_module(cfg: CfgNode, model: nn.Module | None = None) -> nn.Module:
    """The image-in, tensors-out module of ``cfg`` on the CPU, in eval mode.

    ``model``: an already loaded detector; default: built from ``cfg`` with the weights of
    MODEL.WEIGHT, or else of the last checkpoint in OUTPUT_DIR.
    """
    check_exportable(cfg)
    if model is None:
        model = build_detection_model(cfg)
        checkpointer = Checkpointer(model, save_dir=cfg.OUTPUT_DIR, save_to_disk=False)
        if not cfg.MODEL.WEIGHT and not checkpointer.has_checkpoint():
            raise ValueError(f"no weights to export: MODEL.WEIGHT is empty and OUTPUT_DIR {cfg.OUTPUT_DIR!r} "
                             f"has no checkpoint")
        checkpointer.load(cfg.MODEL.WEIGHT or None, use_latest=not cfg.MODEL.WEIGHT, resume=False)
    spec = EXPORTABLE_ARCHITECTURES.get(cfg.MODEL.META_ARCHITECTURE)
    return spec.build(cfg, model.cpu().eval(), build_preprocess(cfg)).eval()


def sample_input(image: np.ndarray | None = None) -> Tensor:
    """The image a trace runs on: ``image`` (uint8 [H, W, 3]) or a fixed random 480 x 640 one.

    Any image works: the graph holds for every size and detection count.
    """
    if image is None:
        image = np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"the sample image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    return torch.from_numpy(np.array(image, copy=True))  # writable, contiguous


def _trace(module: nn.Module, image: Tensor) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        # The tracer flags every Python check on shapes; none of them changes the graph's ops.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        with torch.no_grad():
            return torch.jit.trace(module, (image,), check_trace=False)


def export_torchscript(module: nn.Module, path: str | Path, image: Tensor) -> Path:
    """Trace ``module`` on ``image`` and save it; load with ``torch.jit.load`` after importing
    detbench (or ``torch.ops.load_library`` of detbench's ``_C`` library), which defines its ops."""
    path = Path(path)
    _trace(module, image).save(str(path))
    return path


def export_onnx(module: nn.Module, path: str | Path, image: Tensor, opset: int | None = None) -> Path:
    """Export ``module`` (traced on ``image``) as an ONNX file for any image size."""
    from .onnx_ops import OPSET, register_onnx_symbolics

    register_onnx_symbolics()
    path = Path(path)
    names = list(module.output_names)
    dynamic = {"image": {0: "height", 1: "width"}, **{n: {0: "detections"} for n in names}}
    if "masks" in names:
        dynamic["masks"] = {0: "detections", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript-based exporter
        with torch.no_grad():
            torch.onnx.export(module, (image,), str(path), dynamo=False, opset_version=opset or OPSET,
                              input_names=["image"], output_names=names, dynamic_axes=dynamic)
    return path


def export_model(cfg: CfgNode, fmt: str, output: str | Path, image: np.ndarray | None = None,
                 model: nn.Module | None = None) -> Path:
    """Export ``cfg``'s detector in ``fmt`` ("onnx" or "torchscript") to ``output``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    module = build_export_module(cfg, model)
    exporter = export_onnx if fmt == "onnx" else export_torchscript
    path = exporter(module, output, sample_input(image))
    logger.info("Exported %s (%s, outputs %s) to %s", cfg.MODEL.META_ARCHITECTURE, fmt,
                ", ".join(module.output_names), path)
    return path
