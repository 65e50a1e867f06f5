"""RetinaNet R-50-FPN cases of tools/benchmark.py (``--sections retinanet``).

Both libraries run the same network with the same weights: torchvision's ``RetinaNet`` is built
as its COCO builder builds it (FrozenBatchNorm2d with eps 0, stem and layer1 frozen, P6 from
P5; random weights, seed 0) and detbench builds configs/torchvision/retinanet_resnet50_fpn.yaml
and loads torchvision's state dict, converted. The classifier's biases are drawn around
logit -2 (probability 0.12) instead of the prior's -4.6, so that, as with trained weights,
thousands of candidates pass the 0.05 threshold and the post-processing (top-k per level,
decoding, NMS) has real work; torchvision's never-trained background logit is made hopeless.
Inference: one image, torchvision's post-processing loops over images and levels in Python,
detbench's runs one top-k per level for the batch and one batched NMS. Training: two images
with 8 boxes each, forward, backward, SGD step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torchvision.models import resnet50
from torchvision.models.detection import RetinaNet
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

import benchmark_model
from detbench.config import load_config
from detbench.modeling.detector import build_detection_model
from detbench.structures import BoxList
from detbench.utils import torchvision_weights

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "torchvision" / "retinanet_resnet50_fpn.yaml"


def torchvision_model(size: tuple[int, int]) -> RetinaNet:
    """torchvision's RetinaNet R-50-FPN (COCO builder's architecture), random weights, busy classifier."""
    torch.manual_seed(0)
    body = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3, returned_layers=[2, 3, 4],
                                 extra_blocks=LastLevelP6P7(256, 256))
    model = RetinaNet(body, num_classes=91, min_size=size[0], max_size=size[1])
    overwrite_eps(model, 0.0)
    g = torch.Generator().manual_seed(1)
    logits = model.head.classification_head.cls_logits
    with torch.no_grad():
        logits.bias.copy_(torch.randn(logits.bias.shape, generator=g) * 0.5 - 2.0)
        logits.bias.view(-1, 91)[:, 0] = -30.0
    return model


def detbench_model(same_as: torch.nn.Module, config: Path = CONFIG, opts: tuple[str, ...] = ()) -> torch.nn.Module:
    """detbench's model of ``config`` (default: torchvision's RetinaNet) with the weights of
    ``same_as`` (strict load)."""
    model = build_detection_model(load_config(config, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", "", *opts]))
    converted, unknown = torchvision_weights.convert(same_as.state_dict())
    if unknown:
        raise RuntimeError(f"torchvision keys without a detbench name: {unknown}")
    model.load_state_dict(converted)
    return model


def build_model(library: str, device: torch.device, train: bool, height: int, width: int) -> torch.nn.Module:
    theirs = torchvision_model((min(height, width), max(height, width)))
    model = theirs if library == "torchvision" else detbench_model(theirs)
    return model.to(device).train(train)


def box_targets(n: int, height: int, width: int, device: torch.device) -> tuple[list, list]:
    """benchmark_model.targets without the masks: (detbench BoxLists, torchvision dicts)."""
    ours, theirs = benchmark_model.targets(n, height, width, device)
    plain = []
    for target in ours:
        boxes = BoxList(target.bbox, target.size)
        boxes.add_field("labels", target.get_field("labels"))
        plain.append(boxes)
    return plain, [{"boxes": t["boxes"], "labels": t["labels"]} for t in theirs]


def inference_case(library: str, device: torch.device, amp: bool, height: int, width: int) -> Callable[[], object]:
    """benchmark_model.inference_case with the RetinaNets."""
    return benchmark_model.inference_case(library, device, amp, height, width, build=build_model)


def train_case(library: str, device: torch.device, amp: bool, height: int, width: int) -> Callable[[], object]:
    """benchmark_model.train_case with the RetinaNets and box-only targets."""
    return benchmark_model.train_case(library, device, amp, height, width, build=build_model, make_targets=box_targets)
