"""Region proposal network: anchors, head, loss and proposal post-processing."""

from .anchor_generator import AnchorGenerator, build_anchor_generator, generate_cell_anchors
from .inference import RPNPostProcessor, build_rpn_postprocessor
from .loss import RPNLossComputation, build_rpn_loss
from .rpn import RPN_HEADS, RPNModule, SingleConvRPNHead, build_rpn

__all__ = [
    "RPN_HEADS",
    "AnchorGenerator",
    "RPNLossComputation",
    "RPNModule",
    "RPNPostProcessor",
    "SingleConvRPNHead",
    "build_anchor_generator",
    "build_rpn",
    "build_rpn_loss",
    "build_rpn_postprocessor",
    "generate_cell_anchors",
]
