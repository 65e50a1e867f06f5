"""RetinaNet (Lin et al., 2017): a one-stage detector on P3..P7, built as the proposal stage
of GeneralizedRCNN with MODEL.RETINANET_ON and MODEL.RPN_ONLY, as in maskrcnn-benchmark."""

from .retinanet import RetinaNetHead, RetinaNetModule, build_retinanet

__all__ = ["RetinaNetHead", "RetinaNetModule", "build_retinanet"]
