"""The export's RPN (detbench/export/rcnn.py) against the model's own RPN, with torchvision's anchor
stride rule on (MODEL.RPN.STRIDES_FROM_IMAGE): at 160 x 192 the P6 grid is 3 x 3, whose rows
are 160 // 3 = 53 px apart, not 64."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from detbench.config import load_config
from detbench.export.rcnn import rpn_proposals
from detbench.modeling.detector import build_detection_model
from detbench.structures import to_image_list

from export_families import QUICKSTART

pytestmark = pytest.mark.usefixtures("native_cpu_convolutions")  # see tests/conftest.py


@pytest.mark.parametrize("from_image", [True, False])
def test_export_rpn_matches_the_model_rpn(from_image):
    cfg = load_config(QUICKSTART, ["MODEL.DEVICE", "cpu", "MODEL.RPN.STRIDES_FROM_IMAGE", str(from_image),
                                   "MODEL.RPN.PRE_NMS_TOP_N_TEST", "100000"])  # every anchor a candidate
    torch.manual_seed(0)
    model = build_detection_model(cfg).eval()
    with torch.no_grad():
        model.rpn.head.cls_logits.weight.normal_(0, 0.5)  # spread objectness: P6 anchors among the kept
        images = to_image_list(torch.rand(1, 3, 160, 192), size_divisibility=32)
        features = model.backbone(images.tensors)
        expected = model.rpn(images, features)[0][0].bbox
        got = rpn_proposals(model.rpn, features, torch.tensor(160.0), torch.tensor(192.0),
                            torch.tensor([160, 192]))
    assert features[-1].shape[-2:] == (3, 3)
    assert_close(got, expected, rtol=0, atol=1e-4)
