"""Deployment: a trained detector as one TorchScript or ONNX graph of an RGB uint8 image.

    from detbench.export import export_model
    export_model(cfg, "onnx", "model.onnx")        # or "torchscript", "model.pt"

The graph takes one RGB uint8 image [H, W, 3] of any size, applies the config's test-time
resize and normalisation itself and returns, in the image's pixels: boxes [N, 4] float32
(x1, y1, x2, y2), scores [N] float32, labels [N] int64, then for mask models masks
[N, 1, H, W] float32 probabilities and for keypoint models keypoints [N, K, 3] float32
(x, y, score). N = 0 is a valid result. onnx and onnxruntime are optional
(``pip install detbench[export]``); they are imported only when exporting to ONNX.
"""

from .exporter import (
    EXPORTABLE_ARCHITECTURES,
    FORMATS,
    ExportSpec,
    build_export_module,
    build_preprocess,
    check_exportable,
    export_model,
    export_onnx,
    export_problems,
    export_torchscript,
    sample_input,
)
from .preprocess import Preprocess

__all__ = [
    "EXPORTABLE_ARCHITECTURES", "FORMATS", "ExportSpec", "Preprocess", "build_export_module",
    "build_preprocess", "check_exportable", "export_model", "export_onnx", "export_problems",
    "export_torchscript", "sample_input",
]
