"""torchvision's twin of a detbench Mask R-CNN config, trained and run the torchvision way.

Used by tools/compare_training.py (and its tests). :func:`build_twin` reads the detbench config
and builds the same network with torchvision's own classes: ``resnet18/34`` with GroupNorm
(``StemWithGN``/``BasicBlockWithGN``) or ``FrozenBatchNorm2d`` in a ``BackboneWithFPN`` (GroupNorm
in the FPN when MODEL.FPN.USE_GN), and ``MaskRCNN`` with the config's image sizes, anchors, RPN
and RoI sampling, NMS and top-n, box head width and mask head convs. Every parameter then has
a detbench twin (see :func:`detbench.utils.torchvision_weights.convert`); initialisation is
torchvision's own.

:func:`train` is the loop of torchvision's fine-tuning tutorial (``train_one_epoch``: SGD, a
linear warm-up, then steps), run for a number of iterations rather than epochs, with the
detbench dataset's images and targets (the same boxes and masks) and a horizontal flip.
:func:`predict` returns the model's detections as detbench BoxLists in the original image
size, for detbench's COCO evaluation.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
from torch import Tensor, nn
from torchvision.models import resnet18, resnet34
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.transforms.functional import pil_to_tensor

from detbench.structures import BoxList

BODIES = {"R-18-FPN": resnet18, "R-34-FPN": resnet34}
GN_BLOCKS, FROZEN_BN_BLOCKS = "BasicBlockWithGN", "BasicBlockWithFixedBatchNorm"


def _norm_layer(cfg) -> Callable[[int], nn.Module]:
    """channels -> the body's norm: GroupNorm(NUM_GROUPS, c) or FrozenBatchNorm2d (eps 1e-5)."""
    trans = cfg.MODEL.RESNETS.TRANS_FUNC
    if trans == GN_BLOCKS:
        return lambda c: nn.GroupNorm(cfg.MODEL.GROUP_NORM.NUM_GROUPS, c, eps=cfg.MODEL.GROUP_NORM.EPSILON)
    if trans == FROZEN_BN_BLOCKS:
        return FrozenBatchNorm2d
    raise ValueError(f"MODEL.RESNETS.TRANS_FUNC {trans!r}: the torchvision twin has {GN_BLOCKS} or {FROZEN_BN_BLOCKS}")


def _check(cfg) -> None:
    """Refuse configs whose network the twin would not reproduce."""
    body, res2 = cfg.MODEL.BACKBONE.CONV_BODY, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS
    if body not in BODIES or res2 != 64:
        raise ValueError(f"MODEL.BACKBONE.CONV_BODY {body!r} / RES2_OUT_CHANNELS {res2}: the torchvision "
                         f"twin is one of {sorted(BODIES)} with torchvision's widths (64)")
    if not cfg.MODEL.MASK_ON or cfg.MODEL.ROI_MASK_HEAD.PREDICTOR != "MaskRCNNC4Predictor":
        raise ValueError("the torchvision twin is a Mask R-CNN: MODEL.MASK_ON True, MaskRCNNC4Predictor")
    inp = cfg.INPUT
    if len(inp.MIN_SIZE_TRAIN) != 1 or (inp.MIN_SIZE_TEST, inp.MAX_SIZE_TEST) != (inp.MIN_SIZE_TRAIN[0], inp.MAX_SIZE_TRAIN):
        raise ValueError(f"INPUT sizes: the twin's GeneralizedRCNNTransform has one min/max size for training and "
                         f"test; got MIN_SIZE_TRAIN {inp.MIN_SIZE_TRAIN}, MAX_SIZE_TRAIN {inp.MAX_SIZE_TRAIN}, "
                         f"MIN/MAX_SIZE_TEST {inp.MIN_SIZE_TEST}/{inp.MAX_SIZE_TEST}")
    if cfg.MODEL.RPN.FPN_POST_NMS_PER_BATCH or cfg.MODEL.RPN.POST_NMS_TOP_N_TRAIN != -1:
        raise ValueError("torchvision keeps post-NMS top-n per image after merging levels: set "
                         "MODEL.RPN.FPN_POST_NMS_PER_BATCH False and POST_NMS_TOP_N_TRAIN/TEST -1")


def build_twin(cfg) -> MaskRCNN:
    """torchvision's MaskRCNN with the architecture and settings of detbench config ``cfg``."""
    _check(cfg)
    norm = _norm_layer(cfg)
    body = BODIES[cfg.MODEL.BACKBONE.CONV_BODY](norm_layer=norm)
    out = cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS
    backbone = BackboneWithFPN(body, {f"layer{k}": str(k - 1) for k in range(1, 5)}, [64, 128, 256, 512], out,
                               LastLevelMaxPool(), norm_layer=norm if cfg.MODEL.FPN.USE_GN else None)
    rpn, roi, box, mask = cfg.MODEL.RPN, cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_BOX_HEAD, cfg.MODEL.ROI_MASK_HEAD
    anchors = AnchorGenerator(tuple((s,) for s in rpn.ANCHOR_SIZES), (tuple(rpn.ASPECT_RATIOS),) * len(rpn.ANCHOR_SIZES))
    levels = ["0", "1", "2", "3"]
    mask_dim = mask.CONV_LAYERS[-1]
    return MaskRCNN(
        backbone, num_classes=None,
        min_size=cfg.INPUT.MIN_SIZE_TRAIN[0], max_size=cfg.INPUT.MAX_SIZE_TRAIN,
        image_mean=list(cfg.INPUT.PIXEL_MEAN), image_std=list(cfg.INPUT.PIXEL_STD),
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=rpn.PRE_NMS_TOP_N_TRAIN, rpn_pre_nms_top_n_test=rpn.PRE_NMS_TOP_N_TEST,
        rpn_post_nms_top_n_train=rpn.FPN_POST_NMS_TOP_N_TRAIN, rpn_post_nms_top_n_test=rpn.FPN_POST_NMS_TOP_N_TEST,
        rpn_nms_thresh=rpn.NMS_THRESH, rpn_fg_iou_thresh=rpn.FG_IOU_THRESHOLD, rpn_bg_iou_thresh=rpn.BG_IOU_THRESHOLD,
        rpn_batch_size_per_image=rpn.BATCH_SIZE_PER_IMAGE, rpn_positive_fraction=rpn.POSITIVE_FRACTION,
        box_roi_pool=MultiScaleRoIAlign(levels, box.POOLER_RESOLUTION, box.POOLER_SAMPLING_RATIO),
        box_head=TwoMLPHead(out * box.POOLER_RESOLUTION ** 2, box.MLP_HEAD_DIM),
        box_predictor=FastRCNNPredictor(box.MLP_HEAD_DIM, box.NUM_CLASSES),
        box_score_thresh=roi.SCORE_THRESH, box_nms_thresh=roi.NMS, box_detections_per_img=roi.DETECTIONS_PER_IMG,
        box_fg_iou_thresh=roi.FG_IOU_THRESHOLD, box_bg_iou_thresh=roi.BG_IOU_THRESHOLD,
        box_batch_size_per_image=roi.BATCH_SIZE_PER_IMAGE, box_positive_fraction=roi.POSITIVE_FRACTION,
        bbox_reg_weights=tuple(roi.BBOX_REG_WEIGHTS),
        mask_roi_pool=MultiScaleRoIAlign(levels, mask.POOLER_RESOLUTION, mask.POOLER_SAMPLING_RATIO),
        mask_head=MaskRCNNHeads(out, tuple(mask.CONV_LAYERS), mask.DILATION),
        mask_predictor=MaskRCNNPredictor(mask_dim, mask_dim, box.NUM_CLASSES),
    )


# ----------------------------------------------------------------------------- data
def to_twin_target(target: BoxList) -> dict[str, Tensor]:
    """A detbench target (boxes xyxy, "labels", "masks") -> torchvision's dict: boxes [N, 4]
    float32, labels [N] int64, masks [N, H, W] uint8."""
    return {"boxes": target.convert("xyxy").bbox.float(), "labels": target.get_field("labels").long(),
            "masks": target.get_field("masks").get_mask_tensor().to(torch.uint8)}


def flip(image: Tensor, target: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """Mirror [3, H, W] ``image`` and its target left-right (x -> W - x for the box edges)."""
    width = image.shape[-1]
    boxes = target["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1.0, 1.0, -1.0, 1.0]) + torch.tensor([width, 0, width, 0])
    return image.flip(-1), {**target, "boxes": boxes, "masks": target["masks"].flip(-1)}


class TwinDataset(torch.utils.data.Dataset):
    """A detbench dataset without transforms, as torchvision's tutorial feeds its model: a [0, 1]
    float [3, H, W] image and the target dict, mirrored with probability ``flip_prob``."""

    def __init__(self, dataset, flip_prob: float = 0.0, seed: int = 0) -> None:
        self.dataset, self.flip_prob = dataset, flip_prob
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image, target, _ = self.dataset[index]
        image, target = pil_to_tensor(image.convert("RGB")).float() / 255, to_twin_target(target)
        if float(torch.rand((), generator=self.generator)) < self.flip_prob:
            image, target = flip(image, target)
        return image, target


def _collate(batch):
    return tuple(zip(*batch))


# ----------------------------------------------------------------------------- training
def warmup_multistep(iteration: int, warmup_iters: int, warmup_factor: float, steps, gamma: float) -> float:
    """The lr factor at ``iteration`` (from 0): the tutorial's linear warm-up from ``warmup_factor``,
    times ``gamma`` for every step already passed."""
    warm = 1.0
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        warm = warmup_factor * (1 - alpha) + alpha
    return warm * gamma ** sum(iteration >= s for s in steps)


def train(model: MaskRCNN, dataset: TwinDataset, cfg, iterations: int, log: Callable[[str], None] = print,
          seed: int = 0) -> float:
    """Train ``model`` for ``iterations`` batches of SOLVER.IMS_PER_BATCH (reshuffled each epoch),
    SGD(BASE_LR, MOMENTUM, WEIGHT_DECAY) over every parameter with SOLVER's warm-up and steps,
    stepped per iteration. Stops on a non-finite loss. Returns the wall seconds per iteration
    (data loading included, as detbench's trainer counts it)."""
    s = cfg.SOLVER
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=s.BASE_LR, momentum=s.MOMENTUM, weight_decay=s.WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: warmup_multistep(it, s.WARMUP_ITERS, s.WARMUP_FACTOR, s.STEPS, s.GAMMA))
    sampler = torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    loader = torch.utils.data.DataLoader(dataset, batch_size=s.IMS_PER_BATCH, sampler=sampler, drop_last=True,
                                         collate_fn=_collate)
    model.train()
    done, start = 0, time.perf_counter()
    while done < iterations:
        for images, targets in loader:
            loss_dict = model(list(images), list(targets))
            losses = sum(loss_dict.values())
            if not math.isfinite(losses.item()):
                raise FloatingPointError(f"torchvision loss is {losses.item()} at iteration {done + 1}: {loss_dict}")
            optimizer.zero_grad()
            losses.backward()
            optimizer.step()
            scheduler.step()
            done += 1
            if done % s.LOG_PERIOD == 0 or done == iterations:
                terms = "  ".join(f"{k}: {v.item():.4f}" for k, v in loss_dict.items())
                log(f"torchvision iter {done}/{iterations}  loss: {losses.item():.4f}  {terms}  "
                    f"lr: {optimizer.param_groups[0]['lr']:.6f}  {(time.perf_counter() - start) / done:.3f} s/it")
            if done == iterations:
                break
    return (time.perf_counter() - start) / max(done, 1)


# ----------------------------------------------------------------------------- inference
@torch.no_grad()
def predict(model: MaskRCNN, dataset) -> list[BoxList]:
    """The model's detections on every image of detbench ``dataset`` (index order), as BoxLists
    in the original image size with "scores", "labels" and "mask" (pasted probabilities
    [K, 1, H, W], as torchvision returns them: evaluate with ``masks_pasted=True``)."""
    model.eval()
    out = []
    for index in range(len(dataset)):
        image, _, _ = dataset[index]
        tensor = pil_to_tensor(image.convert("RGB")).float() / 255
        result = model([tensor])[0]
        boxes = BoxList(result["boxes"], image.size, mode="xyxy")
        boxes.add_field("scores", result["scores"])
        boxes.add_field("labels", result["labels"])
        boxes.add_field("mask", result["masks"])
        out.append(boxes)
    return out
