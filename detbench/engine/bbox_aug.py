"""Test-time augmentation (TEST.BBOX_AUG): a detector run on several resized and mirrored views
of each image, boxes and masks merged over the views.

The views are maskrcnn-benchmark's: always the plain test view (INPUT.MIN_SIZE_TEST /
MAX_SIZE_TEST), its mirror image with H_FLIP, one view per entry of SCALES (shorter side, the
longer side capped at MAX_SIZE) and, with SCALE_H_FLIP, the mirror image of each. Every view is
made from the original image exactly as the test data loader makes the plain one (PIL bilinear
resize, ToTensor, Normalize; mirrored after resizing), so the plain view is bit-identical to what
the plain model sees. How the views are merged (boxes: union + per-class NMS; masks: the mask
head's probabilities for the final boxes averaged over views) is explained in
:mod:`detbench.modeling.test_time_augmentation`.

:class:`AugmentedDetector` wraps a model and returns what the plain model returns: one BoxList per
image in the plain view's input size. It takes the *original* images, so the test data loader
that feeds it is built with :class:`OriginalImage` as its transform (:func:`augmented_test_setup`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from yacs.config import CfgNode

from detbench.data.transforms import Normalize, Resize, ToTensor
from detbench.modeling.test_time_augmentation import check_supported, detect_view, merge_views
from detbench.structures.bounding_box import BoxList
from detbench.structures.image_list import ImageList, to_image_list


@dataclass(frozen=True)
class View:
    """One augmented view: shorter side ``min_size`` and longer side at most ``max_size``
    (pixels, see :func:`detbench.data.transforms.get_size`), mirrored left-right if ``flip``."""

    min_size: int
    max_size: int
    flip: bool = False


def views_from_cfg(cfg: CfgNode) -> list[View]:
    """The views TEST.BBOX_AUG asks for, the plain test view first (maskrcnn-benchmark's order)."""
    aug = cfg.TEST.BBOX_AUG
    views = [View(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)]
    if aug.H_FLIP:
        views.append(View(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, flip=True))
    for scale in aug.SCALES:
        views.append(View(int(scale), aug.MAX_SIZE))
        if aug.SCALE_H_FLIP:
            views.append(View(int(scale), aug.MAX_SIZE, flip=True))
    return views


class OriginalImage:
    """Data-loader transform that keeps the original image: PIL RGB -> uint8 [3, H, W] tensor
    (no resizing, no normalisation); the target is returned unchanged."""

    def __call__(self, image: Image.Image, target: BoxList | None = None) -> tuple[Tensor, BoxList | None]:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1), target

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _as_pil_images(images: ImageList | Sequence[Image.Image | Tensor]) -> list[Image.Image]:
    """Original images as RGB PIL images: from a padded ImageList of uint8 images (its
    ``image_sizes`` give each image's (H, W)), or a list of PIL images / uint8 [3, H, W] tensors."""
    if isinstance(images, ImageList):
        batch = images.tensors.cpu()
        images = [batch[i, :, :h, :w] for i, (h, w) in enumerate(images.image_sizes)]
    out = []
    for image in images:
        if isinstance(image, Image.Image):
            out.append(image.convert("RGB"))
        elif isinstance(image, Tensor) and image.dtype == torch.uint8 and image.dim() == 3 and image.shape[0] == 3:
            out.append(Image.fromarray(image.permute(1, 2, 0).cpu().numpy(), mode="RGB"))
        else:
            what = f"a {image.dtype} tensor of shape {tuple(image.shape)}" if isinstance(image, Tensor) else type(image)
            raise TypeError(f"AugmentedDetector needs original images (PIL, or uint8 [3, H, W] tensors), got {what}")
    return out


class AugmentedDetector(nn.Module):
    """``model`` (a GeneralizedRCNN in eval mode: Faster / Mask R-CNN or RetinaNet) run on
    ``views`` of each image and merged; ``forward(original images)`` returns one BoxList per
    image in the size of ``views[0]`` with "scores", "labels" and, for a mask model, "mask"
    (as the plain model returns them: [K, 1, M, M], or pasted with POSTPROCESS_MASKS).

    Args:
        model: the detector; keypoint and RPN-only models are refused (ValueError).
        views: the views, the reference view (normally the plain test view) first.
        normalize: the test pipeline's Normalize (INPUT.PIXEL_MEAN / STD / TO_BGR255).
        size_divisibility: each view's batch is padded to this multiple (DATALOADER.SIZE_DIVISIBILITY).
        nms_threshold, detections_per_img: the merge's per-class NMS IoU threshold and top-k.
    """

    def __init__(self, model: nn.Module, views: Sequence[View], normalize: Normalize, size_divisibility: int,
                 nms_threshold: float, detections_per_img: int) -> None:
        super().__init__()
        check_supported(model)
        if not views:
            raise ValueError("AugmentedDetector needs at least one view")
        self.model = model
        self.views = list(views)
        self.normalize = normalize
        self.size_divisibility = size_divisibility
        self.nms_threshold = nms_threshold
        self.detections_per_img = detections_per_img

    @classmethod
    def from_cfg(cls, model: nn.Module, cfg: CfgNode) -> AugmentedDetector:
        """The views of TEST.BBOX_AUG; the merge uses the model's own test NMS and top-k
        (MODEL.ROI_HEADS.NMS / DETECTIONS_PER_IMG, for RetinaNet MODEL.RETINANET.NMS_TH / DETECTIONS_PER_IMG)."""
        i = cfg.INPUT
        if cfg.MODEL.RETINANET_ON:
            nms, top_k = cfg.MODEL.RETINANET.NMS_TH, cfg.MODEL.RETINANET.DETECTIONS_PER_IMG
        else:
            nms, top_k = cfg.MODEL.ROI_HEADS.NMS, cfg.MODEL.ROI_HEADS.DETECTIONS_PER_IMG
        return cls(model, views_from_cfg(cfg), Normalize(i.PIXEL_MEAN, i.PIXEL_STD, i.TO_BGR255),
                   cfg.DATALOADER.SIZE_DIVISIBILITY, nms, top_k)

    def view_batch(self, images: Sequence[Image.Image], view: View, device: torch.device) -> ImageList:
        """The batch of ``view``: each image resized, normalised, mirrored if asked, then padded."""
        resize, tensors = Resize(view.min_size, view.max_size), []
        for image in images:
            tensor, _ = self.normalize(*ToTensor()(*resize(image)))
            tensors.append(tensor.flip(-1) if view.flip else tensor)
        return to_image_list(tensors, self.size_divisibility).to(device)

    def forward(self, images: ImageList | Sequence[Image.Image | Tensor]) -> list[BoxList]:
        if self.model.training:
            raise RuntimeError("AugmentedDetector is for inference: put the model in eval mode")
        pil_images = _as_pil_images(images)
        device = next(self.model.parameters()).device
        outputs = [detect_view(self.model, self.view_batch(pil_images, v, device), v.flip) for v in self.views]
        return merge_views(self.model, outputs, self.nms_threshold, self.detections_per_img)


def augmented_test_setup(cfg: CfgNode, model: nn.Module, is_distributed: bool) -> tuple[nn.Module, list]:
    """(the model to evaluate, the test data loaders) for ``cfg``: with TEST.BBOX_AUG.ENABLED an
    :class:`AugmentedDetector` and loaders of original images, else ``model`` and the usual loaders."""
    from detbench.data import make_data_loader

    if not cfg.TEST.BBOX_AUG.ENABLED:
        return model, make_data_loader(cfg, is_train=False, is_distributed=is_distributed)
    loaders = make_data_loader(cfg, is_train=False, is_distributed=is_distributed, test_transforms=OriginalImage())
    return AugmentedDetector.from_cfg(model, cfg), loaders
