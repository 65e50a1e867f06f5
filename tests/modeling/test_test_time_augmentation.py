"""Test-time augmentation, model side: box mapping between views, the merge, the mask average.

The end-to-end checks use a hand-built detector that is flip- and scale-equivariant by
construction: its "box head" returns the box of the bright pixels of channel 0 and its "mask
head" RoIAligns channel 1 (a left-right asymmetric ramp), so every view must map back to the
same box, and a mirrored view's mask must equal the plain view's only if it is mirrored back.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close
from torchvision.ops import roi_align

from detbench.data.transforms import Normalize
from detbench.engine.bbox_aug import AugmentedDetector, View
from detbench.modeling.test_time_augmentation import (
    ViewOutput, averaged_masks, detect_view, from_reference, merge_detections, to_reference,
)
from detbench.structures.bounding_box import BoxList
from detbench.structures.image_list import to_image_list

H, W = 40, 60
BOX = (5.0, 10.0, 25.0, 30.0)  # x1, y1, x2, y2 of the bright rectangle, pixel edges
M = 8


def _boxlist(rows, size, scores=None, labels=None) -> BoxList:
    b = BoxList(torch.tensor(rows, dtype=torch.float32).reshape(-1, 4), size)
    b.add_field("scores", torch.tensor(scores if scores is not None else [0.9] * len(b)))
    b.add_field("labels", torch.tensor(labels if labels is not None else [1] * len(b)))
    return b


def test_to_reference_hand_values_and_inverse():
    # A view twice the reference size (120 x 80 for 60 x 40), mirrored: x -> 120 - x, then halved.
    view = _boxlist([[10.0, 5.0, 30.0, 20.0]], (120, 80))
    ref = to_reference(view, True, (W, H))
    assert ref.size == (W, H)
    assert_close(ref.bbox, torch.tensor([[45.0, 2.5, 55.0, 10.0]]))
    assert torch.equal(ref.get_field("labels"), view.get_field("labels"))
    back = from_reference(ref, (120, 80), True)
    assert back.size == (120, 80)
    assert_close(back.bbox, view.bbox)
    assert_close(to_reference(view, False, (120, 80)).bbox, view.bbox, rtol=0, atol=0)


def test_merge_keeps_the_best_of_each_class_cluster():
    a = _boxlist([[0, 0, 10, 10], [20, 20, 30, 30]], (W, H), [0.6, 0.8], [1, 1])
    # Overlaps a's first box (IoU 81/100... > 0.5) with a higher score; same box, other class; far box.
    b = _boxlist([[0, 0, 9, 9], [0, 0, 10, 10], [40, 0, 50, 10]], (W, H), [0.7, 0.5, 0.3], [1, 2, 1])
    merged = merge_detections([a, b], nms_threshold=0.5, detections_per_img=100)
    assert_close(merged.bbox, torch.tensor([[20.0, 20, 30, 30], [0, 0, 9, 9], [0, 0, 10, 10], [40, 0, 50, 10]]))
    assert_close(merged.get_field("scores"), torch.tensor([0.8, 0.7, 0.5, 0.3]))
    assert torch.equal(merged.get_field("labels"), torch.tensor([1, 1, 2, 1]))
    top2 = merge_detections([a, b], nms_threshold=0.5, detections_per_img=2)
    assert_close(top2.get_field("scores"), torch.tensor([0.8, 0.7]))
    empty = merge_detections([_boxlist([], (W, H), [], [])], 0.5, 10)
    assert len(empty) == 0 and empty.size == (W, H)
    with pytest.raises(ValueError, match="one frame"):
        merge_detections([a, _boxlist([], (W + 1, H), [], [])], 0.5, 10)


class _Backbone(nn.Module):
    def forward(self, x):
        return [x]


class _RPN(nn.Module):
    def forward(self, images, features, targets=None):
        return [BoxList(torch.zeros(0, 4), (w, h)) for h, w in images.image_sizes], {}


class _BrightBoxHead(nn.Module):
    """The tight box (pixel edges) of the pixels where channel 0 > 0.5, score 0.9, label 1."""

    def forward(self, features, proposals, targets=None):
        detections = []
        for image, proposal in zip(features[0], proposals):
            ys, xs = torch.where(image[0] > 0.5)
            box = [[float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1]]
            detections.append(_boxlist(box, proposal.size))
        return None, detections, {}


class _RampMaskExtractor(nn.Module):
    def forward(self, features, boxes):
        rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b.bbox], 1) for i, b in enumerate(boxes)])
        return roi_align(features[0][:, 1:2], rois, (M, M), 1.0, 2, aligned=True)


class _TwoClassLogits(nn.Module):
    def forward(self, x):
        return torch.cat([-x, 4 * x - 2], dim=1)  # class 1's logit; class 0 is never asked for


class _MaskHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.feature_extractor, self.predictor = _RampMaskExtractor(), _TwoClassLogits()
        self.post_processor = type("PostProcessor", (), {"masker": None})()


class _EquivariantDetector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone, self.rpn = _Backbone(), _RPN()
        self.roi_heads = nn.ModuleDict({"box": _BrightBoxHead(), "mask": _MaskHead()})
        self.anchor = nn.Parameter(torch.zeros(()))  # the device comes from the parameters


def _image() -> torch.Tensor:
    """uint8 [3, H, W]: channel 0 bright inside BOX, channel 1 a ramp growing to the right."""
    image = torch.zeros(3, H, W, dtype=torch.uint8)
    x1, y1, x2, y2 = (int(v) for v in BOX)
    image[0, y1:y2, x1:x2] = 255
    image[1] = (torch.arange(W) * 4).clamp(max=255).to(torch.uint8)
    return image


def _detector(views) -> AugmentedDetector:
    return AugmentedDetector(_EquivariantDetector().eval(), views, Normalize([0.0] * 3, [1.0] * 3, False), 0, 0.5, 10)


@pytest.mark.parametrize("view", [View(H, 1000, True), View(2 * H, 1000, False), View(2 * H, 1000, True)])
def test_each_view_maps_back_to_the_original_box(view):
    detector = _detector([View(H, 1000), view])
    batch = detector.view_batch([_as_pil(_image())], view, torch.device("cpu"))
    out = detect_view(detector.model, batch, view.flip)
    assert out.detections[0].size == (W * view.min_size // H, view.min_size)
    assert_close(to_reference(out.detections[0], view.flip, (W, H)).bbox, torch.tensor([BOX]))


def _as_pil(image: torch.Tensor):
    from PIL import Image

    return Image.fromarray(image.permute(1, 2, 0).numpy(), mode="RGB")


def test_flip_and_scale_views_merge_into_the_plain_detection():
    augmented = _detector([View(H, 1000), View(H, 1000, True), View(2 * H, 1000), View(2 * H, 1000, True)])
    (merged,) = augmented([_image()])
    assert merged.size == (W, H) and len(merged) == 1  # all four views found the same box
    assert_close(merged.bbox, torch.tensor([BOX]))
    assert merged.get_field("mask").shape == (1, 1, M, M)


def test_a_mirrored_view_mask_is_mirrored_back():
    plain = _detector([View(H, 1000)])([_image()])[0]
    flipped_only = _detector([View(H, 1000), View(H, 1000, True)])
    (merged,) = flipped_only([_image()])
    mask, reference = merged.get_field("mask"), plain.get_field("mask")
    assert not torch.allclose(reference, reference.flip(-1), atol=1e-2), "the ramp must be asymmetric"
    assert_close(mask, reference)
    # The mirrored view alone, mirrored back, is the plain view's mask.
    pil = [_as_pil(_image())]
    views = [ViewOutput(*_features_and_detections(flipped_only, pil, v), v.flip) for v in flipped_only.views]
    assert_close(averaged_masks(flipped_only.model.roi_heads["mask"], views[1:], [plain]), reference)


def _features_and_detections(detector: AugmentedDetector, pil, view: View):
    out = detect_view(detector.model, detector.view_batch(pil, view, torch.device("cpu")), view.flip)
    return out.features, out.detections


def test_inputs_other_than_original_images_are_refused():
    detector = _detector([View(H, 1000)])
    with pytest.raises(TypeError, match="original images"):
        detector([torch.zeros(3, H, W)])  # a float (normalised) tensor
    detector.model.train()
    with pytest.raises(RuntimeError, match="eval mode"):
        detector([_image()])
    images = to_image_list([_image(), _image()[:, :30, :50]])  # padded uint8 batch, as the loader gives it
    out = _detector([View(H, 1000)]).eval()(images)
    assert [o.size for o in out] == [(W, H), (50 * H // 30, H)]
