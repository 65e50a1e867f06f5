"""RPN post-processing: from objectness logits and box deltas to proposals per image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from yacs.config import CfgNode

from detbench.layers.nms import batched_nms
from detbench.structures import BoxList

from ..box_coder import BoxCoder
from ..utils import cat


def concat_box_prediction_layers(objectness: list[Tensor], box_regression: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-level head outputs [N, A, H, W] and [N, 4A, H, W] -> [N, T] and [N, T, 4].

    T = sum over levels of H * W * A, ordered level by level, then location-major, then anchor,
    the order of the AnchorGenerator's anchors. The 4A channels are anchor-major (4a .. 4a + 3).
    """
    flat_obj, flat_reg = [], []
    for obj, reg in zip(objectness, box_regression):
        n, a, h, w = obj.shape
        flat_obj.append(obj.permute(0, 2, 3, 1).reshape(n, -1))
        flat_reg.append(reg.reshape(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
    return cat(flat_obj, dim=1), cat(flat_reg, dim=1)


def keep_top_n_per_level(keep: Tensor, levels: Tensor, top_n: int, num_levels: int) -> Tensor:
    """The entries of ``keep`` (indices in decreasing score order) that are among the first
    ``top_n`` of their level (``levels[keep]``); the order is kept. [K] -> [K']."""
    one_hot = F.one_hot(levels[keep], num_levels)  # [K, L]
    rank_in_level = (one_hot.cumsum(0) * one_hot).sum(1) - 1  # 0 for the best box of each level
    return keep[rank_in_level < top_n]


class RPNPostProcessor:
    """Turns RPN outputs into proposals, in this order (torchvision's):

    1. per level and image, keep the ``pre_nms_top_n`` anchors with the highest logits
       (<= 0: all);
    2. decode them with ``box_coder``; objectness = sigmoid(logit);
    3. clip to the image, drop boxes narrower or lower than ``min_size``, and those whose
       objectness is below ``score_thresh`` (torchvision's ``rpn_score_thresh``; 0 keeps all);
    4. NMS at ``nms_thresh`` within each level (one batched_nms call, level = category);
    5. keep the best ``post_nms_top_n`` per level (<= 0: all, as in ``boxlist_nms``);
    6. if ``fpn_post_nms_top_n`` is not None (FPN) and > 0, keep the best ``fpn_post_nms_top_n`` over
       all levels, per image, or over the whole batch when ``fpn_post_nms_per_batch``.

    Returns per image a BoxList (image size, xyxy) with field "objectness", sorted by decreasing
    objectness, detached from the graph.
    """

    def __init__(
        self,
        pre_nms_top_n: int,
        post_nms_top_n: int,
        nms_thresh: float,
        min_size: float,
        box_coder: BoxCoder,
        fpn_post_nms_top_n: int | None = None,
        fpn_post_nms_per_batch: bool = False,
        score_thresh: float = 0.0,
    ) -> None:
        self.pre_nms_top_n = pre_nms_top_n
        self.post_nms_top_n = post_nms_top_n
        self.nms_thresh = nms_thresh
        self.min_size = min_size
        self.box_coder = box_coder
        self.fpn_post_nms_top_n = fpn_post_nms_top_n
        self.fpn_post_nms_per_batch = fpn_post_nms_per_batch
        self.score_thresh = score_thresh

    def _fpn_top_n(self) -> bool:
        """Whether step 6 applies (FPN and a positive limit)."""
        return self.fpn_post_nms_top_n is not None and self.fpn_post_nms_top_n > 0

    def _top_n_idx(self, objectness: Tensor, num_per_level: list[int]) -> Tensor:
        """[N, T] logits -> [N, K] indices into T of the best ``pre_nms_top_n`` of each level."""
        idx, offset = [], 0
        for logits in objectness.split(num_per_level, dim=1):  # one topk per level, batched over images
            k = logits.size(1) if self.pre_nms_top_n <= 0 else min(self.pre_nms_top_n, logits.size(1))
            idx.append(logits.topk(k, dim=1).indices + offset)
            offset += logits.size(1)
        return torch.cat(idx, dim=1)

    @torch.no_grad()
    def __call__(
        self, anchors: list[list[BoxList]], objectness: list[Tensor], box_regression: list[Tensor]
    ) -> list[BoxList]:
        """``anchors``: per image, per level BoxLists; ``objectness`` [N, A, H, W] and
        ``box_regression`` [N, 4A, H, W] per level. Returns one BoxList per image."""
        obj, deltas = concat_box_prediction_layers(objectness, box_regression)
        num_images, device = obj.size(0), obj.device
        num_per_level = [o[0].numel() for o in objectness]  # A * H * W
        levels = torch.cat([torch.full((n,), i, dtype=torch.int64, device=device) for i, n in enumerate(num_per_level)])

        top_idx = self._top_n_idx(obj, num_per_level)  # [N, K]
        batch_idx = torch.arange(num_images, device=device)[:, None]
        scores = obj[batch_idx, top_idx].sigmoid()
        deltas = deltas[batch_idx, top_idx]  # [N, K, 4]
        anchor_boxes = torch.stack([cat([a.bbox for a in per_image])[i] for per_image, i in zip(anchors, top_idx)])
        boxes = self.box_coder.decode(deltas.reshape(-1, 4), anchor_boxes.reshape(-1, 4)).view(num_images, -1, 4)

        result = [
            self._filter_image(b, s, levels[i], per_image[0].size, len(num_per_level))
            for b, s, i, per_image in zip(boxes, scores, top_idx, anchors)
        ]
        if self._fpn_top_n() and self.fpn_post_nms_per_batch:
            result = self._top_n_over_batch(result, self.fpn_post_nms_top_n)
        return result

    def _filter_image(
        self, boxes: Tensor, scores: Tensor, levels: Tensor, image_size: tuple[int, int], num_levels: int
    ) -> BoxList:
        """Steps 3-6 (per image) for [K, 4] boxes, [K] scores and [K] levels; size = (width, height)."""
        width, height = image_size
        boxes = torch.stack(
            (
                boxes[:, 0].clamp(min=0, max=width),
                boxes[:, 1].clamp(min=0, max=height),
                boxes[:, 2].clamp(min=0, max=width),
                boxes[:, 3].clamp(min=0, max=height),
            ),
            dim=1,
        )
        keep = ((boxes[:, 2] - boxes[:, 0]) >= self.min_size) & ((boxes[:, 3] - boxes[:, 1]) >= self.min_size)
        if self.score_thresh > 0:  # >=, as torchvision; sigmoid scores are never below 0
            keep &= scores >= self.score_thresh
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]

        keep = batched_nms(boxes, scores, levels, self.nms_thresh)  # decreasing score order
        if self.post_nms_top_n > 0:
            keep = keep_top_n_per_level(keep, levels, self.post_nms_top_n, num_levels)
        if self._fpn_top_n() and not self.fpn_post_nms_per_batch:
            keep = keep[: self.fpn_post_nms_top_n]
        proposals = BoxList(boxes[keep], (width, height), mode="xyxy")
        proposals.add_field("objectness", scores[keep])
        return proposals

    @staticmethod
    def _top_n_over_batch(proposals: list[BoxList], top_n: int) -> list[BoxList]:
        """Keep the ``top_n`` best proposals of the whole batch (each image keeps its order)."""
        scores = torch.cat([p.get_field("objectness") for p in proposals])
        chosen = torch.zeros_like(scores, dtype=torch.bool)
        chosen[scores.topk(min(top_n, scores.numel()), sorted=False).indices] = True
        masks = chosen.split([len(p) for p in proposals])
        return [p[m] for p, m in zip(proposals, masks)]


def build_rpn_postprocessor(cfg: CfgNode, box_coder: BoxCoder, is_train: bool) -> RPNPostProcessor:
    """RPNPostProcessor for training or testing from MODEL.RPN."""
    rpn = cfg.MODEL.RPN
    if is_train:
        pre, post, fpn_post = rpn.PRE_NMS_TOP_N_TRAIN, rpn.POST_NMS_TOP_N_TRAIN, rpn.FPN_POST_NMS_TOP_N_TRAIN
        per_batch = rpn.FPN_POST_NMS_PER_BATCH
    else:
        pre, post, fpn_post = rpn.PRE_NMS_TOP_N_TEST, rpn.POST_NMS_TOP_N_TEST, rpn.FPN_POST_NMS_TOP_N_TEST
        per_batch = False  # at test time every image keeps its own best proposals
    return RPNPostProcessor(
        pre_nms_top_n=pre,
        post_nms_top_n=post,
        nms_thresh=rpn.NMS_THRESH,
        min_size=rpn.MIN_SIZE,
        box_coder=box_coder,
        fpn_post_nms_top_n=fpn_post if rpn.USE_FPN else None,
        fpn_post_nms_per_batch=per_batch,
        score_thresh=rpn.SCORE_THRESH,
    )


make_rpn_postprocessor = build_rpn_postprocessor  # maskrcnn-benchmark's name for it
