"""Every modeling registry in one module, as maskrcnn-benchmark's ``modeling/registry.py``.

A user's part registered here from their own file is selectable from YAML::

    from detbench.modeling import registry

    @registry.ROI_BOX_PREDICTOR.register("MyPredictor")
    class MyPredictor(nn.Module):
        def __init__(self, cfg, in_channels): ...

then ``MODEL.ROI_BOX_HEAD.PREDICTOR: "MyPredictor"``. Each registry's contract (what a builder
takes and returns) is documented where the registry is created, next to its builder; the
tools import a user's module first when DETBENCH_ENV_MODULE names it (detbench.utils.env).
"""

from detbench.modeling.backbone.backbone import BACKBONES
from detbench.modeling.backbone.resnet import BOTTLENECKS, STEMS
from detbench.modeling.detector.detectors import META_ARCHITECTURES
from detbench.modeling.roi_heads.box_head.roi_box_feature_extractors import ROI_BOX_FEATURE_EXTRACTORS
from detbench.modeling.roi_heads.box_head.roi_box_predictors import ROI_BOX_PREDICTOR
from detbench.modeling.roi_heads.keypoint_head.roi_keypoint_feature_extractors import ROI_KEYPOINT_FEATURE_EXTRACTORS
from detbench.modeling.roi_heads.keypoint_head.roi_keypoint_predictors import ROI_KEYPOINT_PREDICTOR
from detbench.modeling.roi_heads.mask_head.roi_mask_feature_extractors import ROI_MASK_FEATURE_EXTRACTORS
from detbench.modeling.roi_heads.mask_head.roi_mask_predictors import ROI_MASK_PREDICTOR
from detbench.modeling.rpn.rpn import RPN_HEADS

__all__ = [
    "BACKBONES",
    "BOTTLENECKS",
    "META_ARCHITECTURES",
    "ROI_BOX_FEATURE_EXTRACTORS",
    "ROI_BOX_PREDICTOR",
    "ROI_KEYPOINT_FEATURE_EXTRACTORS",
    "ROI_KEYPOINT_PREDICTOR",
    "ROI_MASK_FEATURE_EXTRACTORS",
    "ROI_MASK_PREDICTOR",
    "RPN_HEADS",
    "STEMS",
]
