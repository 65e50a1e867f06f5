"""Predictor: a trained detector applied to plain RGB images, results in the images' own pixels.

    cfg = load_config("configs/e2e_mask_rcnn_R_50_FPN.yaml", ["MODEL.WEIGHT", "model_final.pth"])
    predictor = Predictor(cfg)
    detections = predictor(rgb_uint8_array)   # BoxList of size (W, H): scores, labels, mask, ...
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from yacs.config import CfgNode

from detbench.data import catalog
from detbench.data.build import dataset_names
from detbench.data.datasets.coco import to_rgb
from detbench.data.transforms import build_transforms
from detbench.engine.bbox_aug import AugmentedDetector
from detbench.modeling.detector import build_detection_model
from detbench.structures.mask_ops import full_size_masks
from detbench.structures.bounding_box import BoxList
from detbench.utils.checkpoint import Checkpointer

logger = logging.getLogger(__name__)

BACKGROUND = "__background__"
ImageLike = np.ndarray | Image.Image


def as_rgb_image(image: ImageLike) -> Image.Image:
    """An RGB PIL image from an H x W x 3 uint8 array (RGB order) or any PIL image.

    Raises TypeError / ValueError, saying what was received, for anything else.
    """
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected an H x W x 3 uint8 numpy array or a PIL image, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB array, got shape {image.shape} and dtype {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"the image is empty (shape {image.shape})")
    return Image.fromarray(np.ascontiguousarray(image), mode="RGB")


def dataset_class_names(cfg: CfgNode) -> list[str] | None:
    """``[BACKGROUND, name of label 1, ...]`` of the first DATASETS.TEST dataset, or None when
    that needs a download, a generation or a missing file (nothing is created here)."""
    names = dataset_names(cfg, is_train=False)
    if not names:
        return None
    try:
        spec = catalog.get(names[0], cfg.DATASETS.CUSTOM)
    except (KeyError, ValueError):
        return None
    found = spec.class_names()  # the catalog knows them; nothing is generated or downloaded
    return [BACKGROUND, *found] if found else None


class Predictor:
    """The detector of ``cfg`` with the weights of ``cfg.MODEL.WEIGHT``, in eval mode on
    ``cfg.MODEL.DEVICE``.

    ``predictor(image)`` resizes and normalises the image exactly as the test data loader
    does (INPUT.MIN/MAX_SIZE_TEST, TO_BGR255, PIXEL_MEAN/STD) and returns one BoxList in the
    original image's coordinates (``size = (W, H)``) on the CPU, with "scores" and "labels"
    and, where the model has them, "mask" (pasted: [N, 1, H, W] float probabilities, not
    thresholded), "keypoints" and "keypoints_scores". A list of images gives a list.
    With TEST.BBOX_AUG.ENABLED the detections are merged over the augmented views
    (:mod:`detbench.engine.bbox_aug`).

    Args:
        cfg: a config as :func:`detbench.config.load_config` returns it.
        class_names: ``class_names[label]`` is the name of a label (index 0: background);
            default: taken from the first DATASETS.TEST dataset when available, else None.
        compile_backbone: run the backbone under ``torch.compile`` (the same numbers up to
            float rounding). The first call per image size compiles (R-50-FPN on a 2-core CPU:
            about a minute cold); calls then took 4-15 % less time (README, "Deploy").
    """

    def __init__(self, cfg: CfgNode, class_names: Sequence[str] | None = None,
                 compile_backbone: bool = False) -> None:
        if not cfg.MODEL.WEIGHT:
            raise ValueError("Predictor needs trained weights: set MODEL.WEIGHT to a checkpoint, a state-dict "
                             "file or a torchvision:// name (e.g. OUTPUT_DIR/model_final.pth)")
        self.cfg = cfg.clone()
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.model = build_detection_model(cfg)
        Checkpointer(self.model, save_to_disk=False).load(cfg.MODEL.WEIGHT, use_latest=False)
        self.model.to(self.device).eval()
        if compile_backbone:
            self.model.backbone = torch.compile(self.model.backbone)
        self.transforms = build_transforms(cfg, is_train=False)
        # TEST.BBOX_AUG.ENABLED: every call runs the augmented views and merges them.
        self.augmented = AugmentedDetector.from_cfg(self.model, cfg) if cfg.TEST.BBOX_AUG.ENABLED else None
        self._class_names = list(class_names) if class_names is not None else None
        self._class_names_known = class_names is not None

    @property
    def class_names(self) -> list[str] | None:
        """Names by label (index 0 is the background), or None when unknown."""
        if not self._class_names_known:
            self._class_names = dataset_class_names(self.cfg)
            self._class_names_known = True
        return self._class_names

    def __call__(self, image: ImageLike | Sequence[ImageLike],
                 score_threshold: float | None = None) -> BoxList | list[BoxList]:
        """Detections of one image (a BoxList) or of a list of images (a list, one forward pass).

        ``score_threshold`` drops detections scoring below it; None keeps all the model
        returns (it already applies MODEL.ROI_HEADS.SCORE_THRESH).
        """
        single = not isinstance(image, (list, tuple))
        pil_images = [as_rgb_image(i) for i in ([image] if single else image)]
        if not pil_images:
            return []
        with torch.no_grad():
            if self.augmented is not None:
                outputs = self.augmented(pil_images)
            else:
                outputs = self.model([self.transforms(i, None)[0].to(self.device) for i in pil_images])
            # Masks are pasted on the model's device, then everything moves to the CPU.
            results = [self._postprocess(o, i.size, score_threshold).to("cpu") for o, i in zip(outputs, pil_images)]
        return results[0] if single else results

    def _postprocess(self, output: BoxList, size: tuple[int, int], score_threshold: float | None) -> BoxList:
        """A network-size prediction -> the original ``size = (W, H)``, masks pasted."""
        if score_threshold is not None and output.has_field("scores"):
            output = output[output.get_field("scores") >= score_threshold]
        result = output.resize(size)  # boxes and keypoints; tensor fields are carried unchanged
        if result.has_field("mask"):
            pasted = self.cfg.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS
            aligned = self.cfg.MODEL.ROI_MASK_HEAD.ALIGNED_MASKS
            result.add_field("mask", full_size_masks(result.get_field("mask"), result, pasted, aligned))
        return result
