"""torchvision RetinaNet state dicts: recognised, every key renamed, both head key layouts."""

from __future__ import annotations

import re

import torch
from torch.testing import assert_close
from torchvision.models.detection import retinanet_resnet50_fpn

from detbench.config import load_config
from detbench.modeling.detector import build_detection_model
from detbench.utils import torchvision_weights as tv

CONFIG = "configs/torchvision/retinanet_resnet50_fpn.yaml"


def _state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return retinanet_resnet50_fpn(weights=None, weights_backbone=None).state_dict()


def test_every_key_lands_on_a_detbench_tensor_of_the_same_shape():
    state = _state_dict()
    assert tv.detect_kind(state) == "retinanet" and tv.describe(state) == "retinanet_resnet50_fpn"
    converted, unknown = tv.convert(state)
    assert unknown == []
    model = build_detection_model(load_config(CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", ""])).state_dict()
    assert set(converted) == set(model)
    for key, value in converted.items():
        assert value.shape == model[key].shape, key
    # The background logit (column 0 of each anchor's 91) is gone; the others keep their order.
    logits = state["head.classification_head.cls_logits.weight"].view(9, 91, -1)
    assert_close(converted["rpn.head.cls_logits.weight"].view(9, 90, -1), logits[:, 1:])


def test_pre_0_13_head_layout_converts_the_same():
    """Before torchvision 0.13 a tower conv k was "conv.{2k}" (a Sequential of conv, ReLU)."""
    state = _state_dict()
    old = {re.sub(r"(head\.\w+_head\.conv)\.(\d+)\.0\.", lambda m: f"{m[1]}.{2 * int(m[2])}.", k): v
           for k, v in state.items()}
    assert "head.classification_head.conv.6.weight" in old
    new_converted, _ = tv.convert(state)
    old_converted, unknown = tv.convert(old)
    assert unknown == [] and set(old_converted) == set(new_converted)
    for key in new_converted:
        assert torch.equal(old_converted[key], new_converted[key]), key
