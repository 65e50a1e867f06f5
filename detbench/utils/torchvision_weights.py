"""torchvision weights in detbench: recognise a torchvision state dict, rename its keys, fetch by name.

Two kinds of torchvision files are understood:

* ImageNet classifiers ``resnet18/34/50/101/152`` and ``resnext50_32x4d / resnext101_32x8d``
  (keys ``conv1.weight``, ``layer1.0.conv1.weight``, ..., ``fc.weight``): the body goes
  to ``backbone.body.*``, the classifier ``fc`` is dropped. ResNet-18/34 (basic blocks)
  need MODEL.RESNETS.TRANS_FUNC "BasicBlockWithFixedBatchNorm" and RES2_OUT_CHANNELS 64.
* R-CNN detectors ``fasterrcnn / maskrcnn / keypointrcnn`` (keys ``backbone.body.*``,
  ``backbone.fpn.*``, ``rpn.head.*``, ``roi_heads.*``): every tensor is renamed to its detbench
  module. The COCO builders' ResNet-50 FPN, and the same detectors on any torchvision ResNet
  body in a ``BackboneWithFPN`` (ResNet-18/34 basic blocks: MODEL.BACKBONE.CONV_BODY
  "R-18-FPN" / "R-34-FPN", RES2_OUT_CHANNELS 64), with ``FrozenBatchNorm2d`` (TRANS_FUNC
  "BasicBlockWithFixedBatchNorm", FROZEN_BN_EPSILON 1e-5) or ``GroupNorm`` (StemWithGN /
  BasicBlockWithGN, whose GN weight and bias keep their names) in the body, and with or without
  a norm in the FPN (``FeaturePyramidNetwork(norm_layer=GroupNorm...)``: MODEL.FPN.USE_GN).
* ImageNet ``mobilenet_v2`` / ``mobilenet_v3_large`` (keys ``features.*``, ``classifier.*``):
  ``features.*`` goes to ``backbone.body.features.*`` (the MobileNet bodies), the classifier is
  dropped.
* ``fasterrcnn_mobilenet_v3_large_fpn`` / ``..._320_fpn`` (keys ``backbone.body.0.0.weight`` ..,
  ``backbone.fpn.*``, ``rpn.*``, ``roi_heads.*``) and the fine-tuning tutorial's Faster R-CNN on
  ``mobilenet_v2(...).features`` (keys ``backbone.0.0.weight`` ..): the body indices go to
  ``backbone.body.features.*``, the rest as for the ResNet detectors. MobileNet files keep their
  batch-norm counters (``num_batches_tracked``): the tutorial's body has trained batch norm.
* ``retinanet_resnet50_fpn`` (keys ``head.classification_head.*``, ``head.regression_head.*``,
  ``backbone.fpn.extra_blocks.*``): renamed to detbench's RetinaNet (``rpn.head.*``, FPN
  levels P3..P5 as ``fpn_inner2..4``, ``top_blocks.p6/p7``). Its classifier has one logit
  column per label 0..90 of which 0 (the background) is never trained positive; detbench's
  has none for the background, so column 0 of every anchor is dropped (labels stay COCO ids). Both key layouts torchvision has used are
  accepted (before 0.13 ``rpn.head.conv.weight``, ``fpn.inner_blocks.0.weight``,
  ``mask_head.mask_fcn1.weight``; since then ``conv.0.0``, ``inner_blocks.0.0``, ``mask_head.0.0``).

``num_batches_tracked`` counters of the other kinds are dropped: detbench's frozen batch norm has none.
``torchvision://NAME`` names are resolved through torchvision's weight enums (no URL
is written here) and downloaded once into the torch hub cache (``$TORCH_HOME/hub/checkpoints``).
"""

from __future__ import annotations

import re
from typing import Callable

import torch
from torchvision import models
from torchvision.models import detection

SCHEME = "torchvision://"

# torchvision:// names -> the weight enum entry holding the published file's URL.
_NAMES: dict[str, Callable[[], models.WeightsEnum]] = {
    "resnet18": lambda: models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": lambda: models.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": lambda: models.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": lambda: models.ResNet101_Weights.IMAGENET1K_V1,
    "resnet152": lambda: models.ResNet152_Weights.IMAGENET1K_V1,
    "resnext50_32x4d": lambda: models.ResNeXt50_32X4D_Weights.IMAGENET1K_V1,
    "resnext101_32x8d": lambda: models.ResNeXt101_32X8D_Weights.IMAGENET1K_V1,
    "fasterrcnn_resnet50_fpn_coco": lambda: detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1,
    "maskrcnn_resnet50_fpn_coco": lambda: detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1,
    "keypointrcnn_resnet50_fpn_coco": lambda: detection.KeypointRCNN_ResNet50_FPN_Weights.COCO_V1,
    "retinanet_resnet50_fpn_coco": lambda: detection.RetinaNet_ResNet50_FPN_Weights.COCO_V1,
    "mobilenet_v2": lambda: models.MobileNet_V2_Weights.IMAGENET1K_V1,
    "mobilenet_v3_large": lambda: models.MobileNet_V3_Large_Weights.IMAGENET1K_V1,
    "fasterrcnn_mobilenet_v3_large_fpn_coco": lambda: detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
    "fasterrcnn_mobilenet_v3_large_320_fpn_coco":
        lambda: detection.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
}

class TorchvisionWeightsError(RuntimeError):
    """A torchvision:// name or torchvision file that cannot be used; the message says why."""


# ----------------------------------------------------------------------------- key renaming
def _plus_one(match: re.Match) -> str:
    """torchvision counts FPN levels and head layers from 0, detbench's module names from 1."""
    return str(int(match.group(1)) + 1)


def _keypoint_conv(match: re.Match) -> str:
    """torchvision's keypoint head is a Sequential (conv, relu) * 8: conv k sits at index 2 (k - 1)."""
    return str(int(match.group(1)) // 2 + 1)


# (pattern, replacement) applied to the key with the "backbone.body." prefix already unified;
# the first pattern that matches wins. A replacement is a template or a function of the match.
_DETECTION_RULES: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (re.compile(r"backbone\.body\.(conv1|bn1)\.(.+)"), lambda m: f"backbone.body.stem.{m[1]}.{m[2]}"),
    (re.compile(r"backbone\.body\.(layer[1-4]\..+)"), lambda m: f"backbone.body.{m[1]}"),
    # FPN: inner_blocks.i[.0] is the 1x1 lateral conv of level i + 1, layer_blocks.i[.0] its 3x3 output conv.
    (re.compile(r"backbone\.fpn\.inner_blocks\.(\d+)(?:\.0)?\.(weight|bias)"),
     lambda m: f"backbone.fpn.fpn_inner{_plus_one(m)}.{m[2]}"),
    (re.compile(r"backbone\.fpn\.layer_blocks\.(\d+)(?:\.0)?\.(weight|bias)"),
     lambda m: f"backbone.fpn.fpn_layer{_plus_one(m)}.{m[2]}"),
    # RPN: the shared 3x3 conv is Conv2dNormActivation inside a Sequential since torchvision 0.13.
    (re.compile(r"rpn\.head\.conv(?:\.0\.0)?\.(weight|bias)"), lambda m: f"rpn.head.conv.{m[1]}"),
    (re.compile(r"rpn\.head\.(cls_logits|bbox_pred)\.(weight|bias)"), lambda m: f"rpn.head.{m[1]}.{m[2]}"),
    (re.compile(r"roi_heads\.box_head\.(fc6|fc7)\.(weight|bias)"),
     lambda m: f"roi_heads.box.feature_extractor.{m[1]}.{m[2]}"),
    (re.compile(r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)"),
     lambda m: f"roi_heads.box.predictor.{m[1]}.{m[2]}"),
    # Mask head: 4 convs, "k.0" since 0.13 (k from 0), "mask_fcn{k}" before (k from 1).
    (re.compile(r"roi_heads\.mask_head\.(\d+)\.0\.(weight|bias)"),
     lambda m: f"roi_heads.mask.feature_extractor.mask_fcn{_plus_one(m)}.{m[2]}"),
    (re.compile(r"roi_heads\.mask_head\.(mask_fcn\d+)\.(weight|bias)"),
     lambda m: f"roi_heads.mask.feature_extractor.{m[1]}.{m[2]}"),
    (re.compile(r"roi_heads\.mask_predictor\.(conv5_mask|mask_fcn_logits)\.(weight|bias)"),
     lambda m: f"roi_heads.mask.predictor.{m[1]}.{m[2]}"),
    (re.compile(r"roi_heads\.keypoint_head\.(\d+)\.(weight|bias)"),
     lambda m: f"roi_heads.keypoint.feature_extractor.conv_fcn{_keypoint_conv(m)}.{m[2]}"),
    (re.compile(r"roi_heads\.keypoint_predictor\.kps_score_lowres\.(weight|bias)"),
     lambda m: f"roi_heads.keypoint.predictor.kps_score_lowres.{m[1]}"),
]


# FPN with a norm layer (FeaturePyramidNetwork(norm_layer=...)): each block is a
# Conv2dNormActivation, conv at .0 and norm at .1, as detbench's Sequential with MODEL.FPN.USE_GN.
# Applied only when the state dict has such norms (_fpn_has_norm): a bare block's conv is at .0 too.
_FPN_NORM_RULES: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (re.compile(r"backbone\.fpn\.(inner|layer)_blocks\.(\d+)\.([01])\.(weight|bias)"),
     lambda m: f"backbone.fpn.fpn_{m[1]}{int(m[2]) + 1}.{m[3]}.{m[4]}"),
]
_FPN_NORM_KEY = re.compile(r"backbone\.fpn\.(inner|layer)_blocks\.\d+\.1\.weight")


def _fpn_has_norm(state_dict: dict[str, torch.Tensor]) -> bool:
    """True for a FeaturePyramidNetwork built with a norm layer (its blocks have a ``.1`` norm)."""
    return any(_FPN_NORM_KEY.fullmatch(k) for k in state_dict)


# RetinaNet: FPN levels P3..P5 (torchvision's blocks 0..2 are detbench's fpn_inner2..4), the P6/P7
# block, and the two towers. Head convs are "conv.k.0" since torchvision 0.13 (k from 0) and
# "conv.2k" before (a Sequential of conv, ReLU): both map to the tower's Sequential index 2k.
_RETINANET_RULES: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (re.compile(r"backbone\.fpn\.inner_blocks\.(\d+)(?:\.0)?\.(weight|bias)"),
     lambda m: f"backbone.fpn.fpn_inner{int(m[1]) + 2}.{m[2]}"),
    (re.compile(r"backbone\.fpn\.layer_blocks\.(\d+)(?:\.0)?\.(weight|bias)"),
     lambda m: f"backbone.fpn.fpn_layer{int(m[1]) + 2}.{m[2]}"),
    (re.compile(r"backbone\.fpn\.extra_blocks\.(p6|p7)\.(weight|bias)"),
     lambda m: f"backbone.fpn.top_blocks.{m[1]}.{m[2]}"),
    (re.compile(r"head\.(classification|regression)_head\.conv\.(\d+)\.0\.(weight|bias)"),
     lambda m: f"rpn.head.{'cls' if m[1] == 'classification' else 'bbox'}_tower.{2 * int(m[2])}.{m[3]}"),
    (re.compile(r"head\.(classification|regression)_head\.conv\.(\d+)\.(weight|bias)"),
     lambda m: f"rpn.head.{'cls' if m[1] == 'classification' else 'bbox'}_tower.{m[2]}.{m[3]}"),
    (re.compile(r"head\.classification_head\.cls_logits\.(weight|bias)"),
     lambda m: f"rpn.head.cls_logits.{m[1]}"),
    (re.compile(r"head\.regression_head\.bbox_reg\.(weight|bias)"), lambda m: f"rpn.head.bbox_pred.{m[1]}"),
]
RETINANET_LOGITS = ("rpn.head.cls_logits.weight", "rpn.head.cls_logits.bias")

# MobileNets: torchvision's ``features`` index k (``backbone.body.k`` in its FPN detectors,
# ``backbone.k`` in the tutorial's, ``features.k`` in the classifiers) is detbench's
# ``backbone.body.features.k``; the FPN, RPN and box head follow _DETECTION_RULES.
_MOBILENET_RULES: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (re.compile(r"backbone\.(?:body\.)?(\d+\..+)"), lambda m: f"backbone.body.features.{m[1]}"),
]
MOBILENET_IMAGENET = ("mobilenet_v2", "mobilenet_v3_large")
# Kinds whose batch-norm counters are kept: a MobileNet body may have trained batch norm.
MOBILENET_KINDS = (*MOBILENET_IMAGENET, "fasterrcnn_mobilenet")
# Modules in ``features``: how the two ImageNet MobileNets are told apart.
_MOBILENET_DEPTHS = {19: "mobilenet_v2", 17: "mobilenet_v3_large"}


def _mobilenet_name(state_dict: dict[str, torch.Tensor], prefix: str) -> str:
    """torchvision's name of the MobileNet whose ``features`` keys start with ``prefix``."""
    indices = {int(k[len(prefix):].split(".")[0]) for k in state_dict
               if k.startswith(prefix) and k[len(prefix):].split(".")[0].isdigit()}
    return _MOBILENET_DEPTHS.get(len(indices), f"mobilenet with {len(indices)} feature modules")


def detect_kind(state_dict: dict[str, torch.Tensor]) -> str | None:
    """Which torchvision model ``state_dict`` comes from, or None if it is not torchvision's.

    Returns "resnet" (ImageNet ResNet / ResNeXt classifier), "mobilenet_v2" or
    "mobilenet_v3_large" (ImageNet classifiers), "fasterrcnn", "maskrcnn", "keypointrcnn" (on any
    ResNet FPN body), "retinanet" (``retinanet_resnet50_fpn``), "fasterrcnn_mobilenet" (the
    MobileNet detectors, FPN or the tutorial's). detbench's own keys (``backbone.body.stem.*``) give None.
    """
    keys = state_dict.keys()
    if {"conv1.weight", "layer1.0.conv1.weight", "fc.weight"} <= keys:
        return "resnet"
    if "features.0.0.weight" in keys and any(k.startswith("classifier.") for k in keys):
        name = _mobilenet_name(state_dict, "features.")
        return name if name in MOBILENET_IMAGENET else None
    heads = {"rpn.head.cls_logits.weight", "roi_heads.box_predictor.cls_score.weight"}
    if heads <= keys and ({"backbone.body.0.0.weight", "backbone.0.0.weight"} & keys):
        return "fasterrcnn_mobilenet"
    if {"backbone.body.conv1.weight", "head.classification_head.cls_logits.weight",
            "head.regression_head.bbox_reg.weight"} <= keys:
        return "retinanet"
    if not {"backbone.body.conv1.weight", "rpn.head.cls_logits.weight",
            "roi_heads.box_predictor.cls_score.weight"} <= keys:
        return None
    if "roi_heads.keypoint_predictor.kps_score_lowres.weight" in keys:
        return "keypointrcnn"
    if "roi_heads.mask_predictor.mask_fcn_logits.weight" in keys:
        return "maskrcnn"
    return "fasterrcnn"


def resnet_depth(state_dict: dict[str, torch.Tensor], prefix: str = "") -> int:
    """18, 34, 50, 101 or 152 for a ResNet whose keys start with ``prefix`` ("" for an ImageNet
    classifier, "backbone.body." for a detector): the convs of all blocks, + conv1 and fc.

    A bottleneck block has 3 convs (``conv3`` exists), a basic block 2.
    """
    n = prefix.count(".")
    blocks = {tuple(k.split(".")[n:n + 2]) for k in state_dict if k.startswith(prefix + "layer")}  # ("layer3", "17")
    convs_per_block = 3 if f"{prefix}layer1.0.conv3.weight" in state_dict else 2
    return convs_per_block * len(blocks) + 2


def convert(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A torchvision state dict with detbench's key names.

    Returns (converted state dict, torchvision keys that no rule knows, which are dropped).
    The classifier ``fc`` of ImageNet models and ``num_batches_tracked`` are dropped silently.
    Raises TorchvisionWeightsError if the state dict is not one of torchvision's.
    """
    kind = detect_kind(state_dict)
    if kind is None:
        raise TorchvisionWeightsError("not a torchvision ResNet, MobileNet, ResNet-FPN or "
                                      "fasterrcnn_mobilenet_* detector state dict")
    out, unknown = {}, []
    rules = {"retinanet": _RETINANET_RULES + _DETECTION_RULES,
             "fasterrcnn_mobilenet": _MOBILENET_RULES + _DETECTION_RULES}.get(kind, _DETECTION_RULES)
    if kind in MOBILENET_IMAGENET:
        rules = _MOBILENET_RULES
    elif _fpn_has_norm(state_dict):
        rules = _FPN_NORM_RULES + rules
    for key, value in state_dict.items():
        counter = key.endswith("num_batches_tracked") and kind not in MOBILENET_KINDS
        if counter or (kind == "resnet" and key.startswith("fc.")) or key.startswith("classifier."):
            continue
        # ImageNet keys are the detector's body keys without their "backbone.body." prefix.
        full = "backbone.body." + key if kind == "resnet" else key
        if kind in MOBILENET_IMAGENET:
            full = "backbone.body." + key.removeprefix("features.")
        for pattern, rename in rules:
            match = pattern.fullmatch(full)
            if match:
                out[rename(match)] = value
                break
        else:
            unknown.append(key)
    if kind == "retinanet":
        _drop_background_logits(out)
    return out, unknown


def _anchors_per_location(state_dict: dict[str, torch.Tensor]) -> int:
    """A of a RetinaNet state dict (detbench names): the box predictor has 4 rows per anchor."""
    return state_dict["rpn.head.bbox_pred.bias"].shape[0] // 4


def _drop_background_logits(state_dict: dict[str, torch.Tensor]) -> None:
    """torchvision RetinaNet logits [A * K, ...] (column 0 the background) -> [A * (K - 1), ...], in place."""
    anchors = _anchors_per_location(state_dict)
    for key in RETINANET_LOGITS:
        value = state_dict[key]
        per_anchor = value.reshape(anchors, -1, *value.shape[1:])
        state_dict[key] = per_anchor[:, 1:].reshape(-1, *value.shape[1:])


def describe(state_dict: dict[str, torch.Tensor]) -> str:
    """A short human name for a torchvision state dict ("resnet101 (ImageNet)", "maskrcnn_resnet18_fpn")."""
    kind = detect_kind(state_dict)
    if kind == "resnet":
        # The first grouped 3x3 conv is [width, width / groups, 3, 3]; ResNeXt names say groups x (width / groups).
        out_c, in_per_group = state_dict["layer1.0.conv2.weight"].shape[:2]
        groups = out_c // in_per_group
        depth = resnet_depth(state_dict)
        name = f"resnext{depth}_{groups}x{in_per_group}d" if groups > 1 else f"resnet{depth}"
        return f"{name} (ImageNet)"
    if kind in MOBILENET_IMAGENET:
        return f"{kind} (ImageNet)"
    if kind == "fasterrcnn_mobilenet":
        fpn = "backbone.fpn.inner_blocks.0.0.weight" in state_dict or "backbone.fpn.inner_blocks.0.weight" in state_dict
        prefix = "backbone.body." if "backbone.body.0.0.weight" in state_dict else "backbone."
        return f"fasterrcnn_{_mobilenet_name(state_dict, prefix)}{'_fpn' if fpn else ''}"
    if kind is None:
        return "not torchvision"
    return f"{kind}_resnet{resnet_depth(state_dict, 'backbone.body.')}_fpn"


# ----------------------------------------------------------------------------- names and download
def known_names() -> list[str]:
    """The NAMEs ``torchvision://NAME`` accepts."""
    return sorted(_NAMES)


def url_of(name: str) -> str:
    """The published file's URL for ``torchvision://NAME`` (or NAME alone), from torchvision's enums."""
    short = name[len(SCHEME):] if name.startswith(SCHEME) else name
    if short not in _NAMES:
        raise TorchvisionWeightsError(f"{SCHEME}{short} is not known; known: {', '.join(known_names())}")
    return _NAMES[short]().url


def fetch(url: str, progress: bool = False) -> dict[str, torch.Tensor]:
    """The state dict at ``url``, downloaded once into the torch hub cache and loaded safely.

    The SHA-256 prefix in the file name (torchvision's ``name-<hash>.pth`` convention) is
    checked on download; loading uses ``weights_only=True``.
    """
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=progress,
                                                  check_hash=True, weights_only=True)
    except RuntimeError as e:  # the hub reports a hash mismatch as a RuntimeError
        raise TorchvisionWeightsError(f"{url}: {e}") from e
    except OSError as e:  # no network, or a URL that does not exist
        raise TorchvisionWeightsError(
            f"could not download {url} ({type(e).__name__}: {e}); without network access, put the "
            f"file into {torch.hub.get_dir()}/checkpoints/ yourself") from e


def load_by_name(name: str, progress: bool = True) -> dict[str, torch.Tensor]:
    """The torchvision state dict ``torchvision://NAME`` refers to (unconverted)."""
    return fetch(url_of(name), progress)


# torchvision's COCO detectors predict 91 classes indexed by COCO category id (ids 12, 26,
# 29, 30, 45, 66, 68, 69, 71, 83 are unused); detbench's COCO datasets number the 80 used
# categories 1..80 in increasing id order, 0 being the background.
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
)
# Class-indexed tensors and how many rows each class owns (4 box deltas per class).
_CLASS_ROWS = {
    "roi_heads.box.predictor.cls_score.weight": 1,
    "roi_heads.box.predictor.cls_score.bias": 1,
    "roi_heads.box.predictor.bbox_pred.weight": 4,
    "roi_heads.box.predictor.bbox_pred.bias": 4,
    "roi_heads.mask.predictor.mask_fcn_logits.weight": 1,
    "roi_heads.mask.predictor.mask_fcn_logits.bias": 1,
}


def coco91_to_contiguous(state_dict: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor]
                         ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Select the 81 rows (background + 80 categories) of 91-class predictor tensors.

    Applies to each class-indexed tensor that has 91 classes in ``state_dict`` and 81 in
    ``model_state`` (a torchvision COCO detector loaded into a config with NUM_CLASSES 81),
    so its labels follow the COCO datasets' contiguous ids. Returns (state dict, remapped keys).
    """
    index = torch.tensor((0, *COCO_CATEGORY_IDS))
    out, remapped = dict(state_dict), []
    remapped += _retinanet_coco90_to_contiguous(out, model_state)
    for key, rows in _CLASS_ROWS.items():
        if key not in state_dict or key not in model_state:
            continue
        have, want = state_dict[key].shape[0], model_state[key].shape[0]
        if have != 91 * rows or want != 81 * rows:
            continue
        # Class c owns rows [c * rows, (c + 1) * rows).
        rows_index = (index[:, None] * rows + torch.arange(rows)).reshape(-1)
        out[key] = state_dict[key].index_select(0, rows_index)
        remapped.append(key)
    return out, remapped


def _retinanet_coco90_to_contiguous(state_dict: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor]
                                    ) -> list[str]:
    """RetinaNet logits of the 90 COCO ids (A * 90 rows) into a model with the 80 contiguous
    classes (A * 80 rows): per anchor, the rows of the used ids; in place. Returns the keys remapped."""
    if not all(k in state_dict and k in model_state for k in RETINANET_LOGITS):
        return []
    have, want = state_dict[RETINANET_LOGITS[1]].shape[0], model_state[RETINANET_LOGITS[1]].shape[0]
    anchors = want // 80
    if want % 80 or have != anchors * 90:
        return []
    # Label c (1..90) is row c - 1 of an anchor's block.
    columns = torch.tensor(COCO_CATEGORY_IDS) - 1
    rows = (torch.arange(anchors)[:, None] * 90 + columns[None]).reshape(-1)
    for key in RETINANET_LOGITS:
        state_dict[key] = state_dict[key].index_select(0, rows)
    return list(RETINANET_LOGITS)
