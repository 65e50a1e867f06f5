"""detbench's operators exported as standard ONNX operators, run by onnxruntime, against
detbench's own kernels (themselves tested against slow references in tests/layers)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from detbench.export.onnx_ops import OPSET, register_onnx_symbolics
from detbench.layers.nms import batched_nms, nms
from detbench.layers.reference import batched_nms_reference, nms_reference
from detbench.layers.roi_align import roi_align

onnx = pytest.importorskip("onnx")  # the export extra (requirements-dev.txt)
ort = pytest.importorskip("onnxruntime")


class _Op(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _session(fn, args: tuple, names: list[str], dynamic: dict):
    """An onnxruntime session of ``fn`` exported with the symbolic functions; also returns its op types."""
    register_onnx_symbolics()
    buffer = io.BytesIO()
    torch.onnx.export(_Op(fn), args, buffer, dynamo=False, opset_version=OPSET, input_names=names,
                      dynamic_axes=dynamic)
    ops = {node.op_type for node in onnx.load_from_string(buffer.getvalue()).graph.node}
    return ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"]), ops


def _random_boxes(n: int, generator: torch.Generator, size: float = 40.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * size
    wh = torch.rand(n, 2, generator=generator) * size / 2 + 1
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_roi_align_exports_as_roialign(aligned: bool, sampling_ratio: int) -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.rand(2, 3, 16, 20, generator=g)
    boxes = _random_boxes(7, g, size=50.0)
    boxes[0] = torch.tensor([10.0, 10.0, 10.3, 10.2])  # smaller than a cell: the legacy model grows it to 1 x 1
    rois = torch.cat([torch.tensor([0, 1, 1, 0, 1, 0, 1.0])[:, None], boxes], dim=1)

    def fn(x, r):
        return roi_align(x, r, (5, 4), 0.25, sampling_ratio, aligned)

    session, ops = _session(fn, (feats, rois), ["x", "rois"], {"x": [2, 3], "rois": [0]})
    assert "RoiAlign" in ops
    for x, r in ((feats, rois), (torch.rand(2, 3, 9, 31, generator=g), rois[:3]), (feats, rois[:0])):
        (got,) = session.run(None, {"x": x.numpy(), "rois": r.numpy()})
        assert_close(torch.from_numpy(got), fn(x, r), atol=1e-5, rtol=1e-5)


def test_nms_exports_as_nonmaxsuppression() -> None:
    g = torch.Generator().manual_seed(1)
    boxes, scores = _random_boxes(40, g), torch.rand(40, generator=g)
    session, ops = _session(lambda b, s: nms(b, s, 0.5), (boxes, scores), ["boxes", "scores"],
                            {"boxes": [0], "scores": [0]})
    assert "NonMaxSuppression" in ops
    for n in (40, 7, 0):
        (got,) = session.run(None, {"boxes": boxes[:n].numpy(), "scores": scores[:n].numpy()})
        assert torch.equal(torch.from_numpy(got), nms_reference(boxes[:n], scores[:n], 0.5))


def test_batched_nms_exports_per_category() -> None:
    g = torch.Generator().manual_seed(2)
    boxes, scores = _random_boxes(60, g), torch.rand(60, generator=g)
    idxs = torch.randint(0, 4, (60,), generator=g)
    idxs[idxs == 2] = 3  # a category with no box
    session, ops = _session(lambda b, s, i: batched_nms(b, s, i, 0.4), (boxes, scores, idxs),
                            ["boxes", "scores", "idxs"], {"boxes": [0], "scores": [0], "idxs": [0]})
    assert "NonMaxSuppression" in ops
    for n in (60, 9, 0):
        feed = {"boxes": boxes[:n].numpy(), "scores": scores[:n].numpy(), "idxs": idxs[:n].numpy()}
        (got,) = session.run(None, feed)
        expected = batched_nms_reference(boxes[:n], scores[:n], idxs[:n], 0.4)
        assert torch.equal(torch.from_numpy(got.astype(np.int64)), expected)
        assert torch.equal(torch.from_numpy(got), batched_nms(boxes[:n], scores[:n], idxs[:n], 0.4))
