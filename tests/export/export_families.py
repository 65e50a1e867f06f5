"""Small configs of every exportable model family, for the export tests (random weights)."""

from __future__ import annotations

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
QUICKSTART = CONFIGS / "quickstart" / "mask_rcnn_R_18_FPN_shapes.yaml"
RETINANET = CONFIGS / "quickstart" / "retinanet_R_18_FPN_shapes.yaml"
C4 = CONFIGS / "e2e_mask_rcnn_R_50_C4_1x.yaml"

# Caffe2-style input (BGR in [0, 255], so the channel swap is tested) with integer means: the
# uniform image of the mean colour, MEAN_IMAGE_RGB, normalises to exactly zero.
PIXEL_MEAN_BGR = (100.0, 120.0, 140.0)
MEAN_IMAGE_RGB = (140, 120, 100)
_COMMON = [
    "MODEL.WEIGHT", "", "MODEL.DEVICE", "cpu", "DATASETS.TEST", "()", "INPUT.MAX_SIZE_TEST", "200",
    "INPUT.TO_BGR255", "True", "INPUT.PIXEL_MEAN", str(list(PIXEL_MEAN_BGR)), "INPUT.PIXEL_STD", "[50.0, 60.0, 70.0]",
]
_SMALL_C4 = [
    "MODEL.BACKBONE.CONV_BODY", "R-18-C4", "MODEL.RESNETS.TRANS_FUNC", "BasicBlockWithFixedBatchNorm",
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "16", "MODEL.RESNETS.WIDTH_PER_GROUP", "16",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "16", "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "4",
    "MODEL.RPN.PRE_NMS_TOP_N_TEST", "300", "MODEL.RPN.POST_NMS_TOP_N_TEST", "100",
    "INPUT.MIN_SIZE_TEST", "160",
]
_KEYPOINTS = [
    "MODEL.KEYPOINT_ON", "True", "MODEL.ROI_KEYPOINT_HEAD.CONV_LAYERS", "(32, 32)",
    "MODEL.ROI_KEYPOINT_HEAD.POOLER_SCALES", "(0.25, 0.125, 0.0625, 0.03125)",
    "MODEL.ROI_KEYPOINT_HEAD.SHARE_BOX_FEATURE_EXTRACTOR", "False", "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "2",
]

# name -> (config file, overrides): Faster / Mask / Keypoint R-CNN on FPN, Faster / Mask on C4, RetinaNet.
FAMILIES = {
    "faster_fpn": (QUICKSTART, [*_COMMON, "MODEL.MASK_ON", "False"]),
    "mask_fpn": (QUICKSTART, list(_COMMON)),
    "keypoint_fpn": (QUICKSTART, [*_COMMON, "MODEL.MASK_ON", "False", *_KEYPOINTS]),
    "faster_c4": (C4, [*_COMMON, *_SMALL_C4, "MODEL.MASK_ON", "False"]),
    "mask_c4": (C4, [*_COMMON, *_SMALL_C4]),
    # RetinaNet, with torchvision's anchor stride rule (P6/P7 of a small batch are rounded up).
    "retinanet_fpn": (RETINANET, [*_COMMON, "MODEL.RETINANET.STRIDES_FROM_IMAGE", "True"]),
}
