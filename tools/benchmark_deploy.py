"""Deployment cases of tools/benchmark.py (``--sections deploy``): one real photo, one model,
every way of running it.

The model is benchmark_model's Mask R-CNN R-50-FPN (random weights, seed 0, the same in
both libraries; score threshold 0, so 100 detections with masks pasted into the image).
The input is a real photo resized (outside the timing) to 800 x 1333, the size the
config's test-time resize keeps, given to every path as an RGB uint8 [H, W, 3] array:

  detbench eager        Predictor: PIL resize + normalise, the model, masks pasted;
  detbench compile      the same, the backbone under ``torch.compile`` (the first call compiles);
  TorchScript           ``torch.jit.load`` of tools/export_model.py's file (preprocessing inside);
  onnxruntime           the ONNX file, CPU provider, default options (memory: see _ort_session);
  torchvision eager     its MaskRCNN on the image as a [0, 1] float tensor (resize inside);
  torchvision ONNX      torchvision's own ONNX export of that model (its documented recipe),
                        run by onnxruntime; the row says so when the export fails.

The exported files are written once by the parent process (``prepare``); each path runs
in its own child process (see tools/benchmark.py).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

import benchmark_model

PATHS = ("detbench eager", "detbench compile", "TorchScript", "onnxruntime", "torchvision eager",
         "torchvision ONNX")
SIZE = (1333, 800)  # (width, height) of the benchmarked image
_DEFAULT_PHOTO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "PennFudanPed" / "PNGImages"


def photo(source: str | Path | None) -> np.ndarray:
    """The benchmarked RGB uint8 image: ``source`` (an image file or a folder's first image,
    by name) resized with PIL to 1333 x 800; default: the first Penn-Fudan photo."""
    path = Path(source) if source else _DEFAULT_PHOTO
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not files:
            raise SystemExit(f"--deploy-image {path}: no .png / .jpg file in the folder")
        path = files[0]
    if not path.is_file():
        raise SystemExit(f"--deploy-image {path}: no such image (give a photo or a folder of photos)")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize(SIZE, Image.Resampling.BILINEAR))


def _config(weights: str = ""):
    """benchmark_model's detbench config (91 classes, score threshold 0) with ``weights``."""
    from detbench.config import load_config

    return load_config(benchmark_model.CONFIG, [
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHT", weights, "MODEL.ROI_HEADS.SCORE_THRESH", "0.0",
        "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "91"])


def prepare(folder: Path, image: np.ndarray) -> dict[str, str]:
    """Write the exported files into ``folder``; returns path -> file (or "failed: reason")."""
    from detbench.export import build_export_module, export_onnx, export_torchscript

    theirs = benchmark_model.torchvision_model().eval()
    ours = benchmark_model.detbench_model(theirs).eval()
    torch.save(ours.state_dict(), folder / "detbench.pth")
    module = build_export_module(_config(), ours)
    sample = torch.from_numpy(image.copy())
    files = {"weights": str(folder / "detbench.pth"), "TorchScript": str(export_torchscript(module, folder / "detbench.pt", sample)),
             "onnxruntime": str(export_onnx(module, folder / "detbench.onnx", sample))}
    try:
        files["torchvision ONNX"] = str(_torchvision_onnx(theirs, image, folder / "torchvision.onnx"))
    except Exception as exc:  # noqa: BLE001  (reported in the table, not fatal)
        files["torchvision ONNX"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    return files


def _torchvision_onnx(model: torch.nn.Module, image: np.ndarray, path: Path) -> Path:
    """torchvision's documented export: a list with one [3, H, W] float image, opset 11, dynamic H, W."""
    x = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, ([x],), str(path), dynamo=False, opset_version=11, input_names=["images"],
                          output_names=["boxes", "labels", "scores", "masks"],
                          dynamic_axes={"images": [1, 2], "boxes": [0], "labels": [0], "scores": [0],
                                        "masks": [0, 1, 2, 3]})
    return path


def _ort_session(path: str, arena: bool = True):
    """A CPU session; ``arena=False`` turns off onnxruntime's memory arena, which keeps a call's
    memory for the next call and so hides the peak of one call from the measurement."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class _Step:
    """A timed callable; ``memory_step`` (tools/benchmark.py measures its peak) may differ."""

    def __init__(self, fn: Callable[[], object], memory_fn: Callable[[], object] | None = None) -> None:
        self.fn, self.memory_step = fn, memory_fn or fn

    def __call__(self) -> object:
        return self.fn()


def deploy_case(path: str, image: np.ndarray, files: dict[str, str]) -> Callable[[], object]:
    """One call of ``path`` on ``image``, as a callable (built, not yet run)."""
    if path in files and files[path].startswith("failed"):
        raise RuntimeError(files[path])
    if path == "TorchScript":
        module = torch.jit.load(files[path])
        tensor = torch.from_numpy(image.copy())
        return lambda: _no_grad(module, tensor)
    if path in ("onnxruntime", "torchvision ONNX"):
        feed = {"image": image} if path == "onnxruntime" else {
            "images": np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255}
        timed, measured = _ort_session(files[path]), _ort_session(files[path], arena=False)
        return _Step(lambda: timed.run(None, feed), lambda: measured.run(None, feed))
    if path == "torchvision eager":
        theirs = benchmark_model.torchvision_model().eval()
        tensor = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255
        return lambda: _no_grad(theirs, [tensor])
    from detbench.engine.predictor import Predictor

    predictor = Predictor(_config(files["weights"]), compile_backbone=path == "detbench compile")
    return lambda: predictor(image)


def _no_grad(fn, *args):
    with torch.no_grad():
        return fn(*args)
