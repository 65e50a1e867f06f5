"""Faster R-CNN MobileNetV3-Large-FPN case of tools/benchmark.py (``--sections mobilenet``).

Both libraries run the same network with the same weights: torchvision's ``FasterRCNN`` is built
as ``fasterrcnn_mobilenet_v3_large_fpn`` builds it for its COCO weights (FrozenBatchNorm2d, 3
trainable stages, 15 anchors on each of 3 levels, rpn_score_thresh 0.05; random weights, seed 0)
and detbench builds configs/torchvision/fasterrcnn_mobilenet_v3_large_fpn.yaml and loads
torchvision's state dict, converted (strict). Both keep every detection (box score threshold 0),
so that the post-processing returns its full 100 per image. Inference only: one image of
--height x --width under ``torch.no_grad``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torchvision.models import mobilenet_v3_large
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _mobilenet_extractor
from torchvision.ops import FrozenBatchNorm2d

import benchmark_model
import benchmark_retinanet

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "torchvision" / "fasterrcnn_mobilenet_v3_large_fpn.yaml"


def torchvision_model(size: tuple[int, int]) -> FasterRCNN:
    """torchvision's Faster R-CNN MobileNetV3-Large-FPN (COCO builder's architecture), random weights."""
    torch.manual_seed(0)
    body = _mobilenet_extractor(mobilenet_v3_large(norm_layer=FrozenBatchNorm2d), True, 3)
    anchors = AnchorGenerator(((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)
    return FasterRCNN(body, 91, rpn_anchor_generator=anchors, rpn_score_thresh=0.05, box_score_thresh=0.0,
                      min_size=size[0], max_size=size[1])


def build_model(library: str, device: torch.device, train: bool, height: int, width: int) -> torch.nn.Module:
    theirs = torchvision_model((min(height, width), max(height, width)))
    model = theirs if library == "torchvision" else benchmark_retinanet.detbench_model(
        theirs, CONFIG, ("MODEL.ROI_HEADS.SCORE_THRESH", "0.0"))
    return model.to(device).train(train)


def inference_case(library: str, device: torch.device, amp: bool, height: int, width: int) -> Callable[[], object]:
    """benchmark_model.inference_case with the MobileNet detectors."""
    return benchmark_model.inference_case(library, device, amp, height, width, build=build_model)
