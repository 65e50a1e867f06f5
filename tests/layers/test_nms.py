"""nms and batched_nms: hand-derived cases, reference, torchvision, registrations, errors."""

import os
import subprocess
import sys

import pytest
import torch
import torchvision
from torch.testing import assert_close

from detbench.layers.nms import batched_nms, nms
from detbench.layers.reference import nms_reference

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def clustered_boxes(g: torch.Generator, n: int, dtype=torch.float32, clusters: int = 8) -> torch.Tensor:
    """[n, 4] boxes jittered around a few centres (many overlaps), a few of them empty
    and every third one a near copy of its predecessor (IoU close to 1)."""
    centre = torch.rand(clusters, 2, generator=g, dtype=dtype) * 100
    which = torch.randint(0, clusters, (n,), generator=g)
    xy = centre[which] + torch.randn(n, 2, generator=g, dtype=dtype) * 4
    wh = torch.rand(n, 2, generator=g, dtype=dtype) * 30 + 5
    boxes = torch.cat([xy, xy + wh], dim=1)
    copies = boxes[0:-1:3] + torch.rand(len(boxes[0:-1:3]), 4, generator=g, dtype=dtype) * 0.5
    boxes[1::3] = copies[: len(boxes[1::3])]
    boxes[::11, 2:] = boxes[::11, :2]  # zero area
    return boxes


def test_hand_derived_decisions():
    # IoU(a, b) = 3 / 4 exactly (b inside a); c is disjoint from both.
    boxes = torch.tensor([[0.0, 0.0, 4.0, 1.0], [1.0, 0.0, 4.0, 1.0], [10.0, 10.0, 11.0, 11.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.75).tolist() == [0, 1, 2]  # IoU equal to the threshold is kept
    assert nms(boxes, scores, 0.7).tolist() == [0, 2]
    # Scores decide who survives, and the result is in decreasing score order.
    assert nms(boxes, torch.tensor([0.1, 0.8, 0.9]), 0.7).tolist() == [2, 1]


def test_equal_scores_keep_input_order():
    boxes = torch.tensor([[0.0, 0, 1, 1], [5.0, 5, 6, 6], [0.0, 0, 1, 1], [9.0, 9, 10, 10]])
    scores = torch.tensor([0.5, 0.5, 0.5, 0.7])
    # Box 2 duplicates box 0 and comes later in the input, so box 0 wins the tie.
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.9])
def test_matches_reference(dtype, threshold):
    g = torch.Generator().manual_seed(int(threshold * 10))
    boxes = clustered_boxes(g, 150, dtype)
    scores = torch.randint(0, 20, (150,), generator=g).to(dtype) / 20  # many ties
    strided = torch.cat([boxes, boxes], dim=1)[:, 2:6]  # non-contiguous view ...
    strided.copy_(boxes)  # ... holding the same boxes
    expected = nms_reference(boxes, scores, threshold)
    assert 0 < expected.numel() < 150
    assert torch.equal(nms(strided, scores, threshold), expected)


def test_matches_torchvision():
    g = torch.Generator().manual_seed(1)
    boxes = clustered_boxes(g, 2000, clusters=40)
    scores = torch.rand(2000, generator=g)
    for threshold in (0.2, 0.5, 0.7):
        assert torch.equal(nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold))


def test_batched_nms_matches_torchvision_and_per_category_nms():
    g = torch.Generator().manual_seed(2)
    boxes = clustered_boxes(g, 300, clusters=5)
    scores = torch.rand(300, generator=g)
    idxs = torch.randint(0, 6, (300,), generator=g)
    got = batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(got, torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))
    # Per category with the reference, merged back in decreasing score order.
    per_category = torch.cat([torch.nonzero(idxs == c)[:, 0][nms_reference(boxes[idxs == c], scores[idxs == c], 0.5)]
                              for c in range(6)])
    expected = per_category[torch.sort(scores[per_category], descending=True, stable=True).indices]
    assert torch.equal(got, expected)
    assert got.numel() > nms(boxes, scores, 0.5).numel()  # categories do not suppress each other


def test_batched_nms_separates_categories_with_negative_coordinates():
    boxes = torch.tensor([[-50.0, -50.0, -10.0, -10.0], [-50.0, -50.0, -10.0, -10.0], [0.0, 0.0, 1.0, 1.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1, 2]
    assert batched_nms(boxes, scores, torch.tensor([0, 0, 0]), 0.5).tolist() == [0, 2]


def test_empty_inputs():
    for fn, extra in ((nms, ()), (batched_nms, (torch.zeros(0, dtype=torch.int64),))):
        args = (torch.zeros(0, 4), torch.zeros(0), *extra, 0.5)
        keep = fn(*args)
        assert keep.dtype == torch.int64 and keep.shape == (0,)


def test_opcheck():
    g = torch.Generator().manual_seed(3)
    boxes = clustered_boxes(g, 40)
    scores = torch.rand(40, generator=g)
    torch.library.opcheck(torch.ops.detbench.nms.default, (boxes, scores, 0.5))


def test_torch_compile_matches_eager():
    g = torch.Generator().manual_seed(4)
    boxes = clustered_boxes(g, 60)
    scores = torch.rand(60, generator=g)

    def kept_score_sum(b, s):
        keep = nms(b, s, 0.5)
        return s[keep].sum(), keep

    compiled = torch.compile(kept_score_sum, backend="aot_eager", fullgraph=True)
    expected, expected_keep = kept_score_sum(boxes, scores)
    got, got_keep = compiled(boxes, scores)
    assert torch.equal(got_keep, expected_keep)
    assert_close(got, expected)


@pytest.mark.parametrize("case", ["boxes-n3", "scores-2d", "scores-length", "dtype-mix", "int-dtype"])
def test_malformed_arguments_raise(case):
    boxes, scores = torch.rand(5, 4), torch.rand(5)
    boxes[:, 2:] += boxes[:, :2]
    if case == "boxes-n3":
        boxes = boxes[:, :3]
    elif case == "scores-2d":
        scores = scores[:, None]
    elif case == "scores-length":
        scores = scores[:4]
    elif case == "dtype-mix":
        scores = scores.double()
    elif case == "int-dtype":
        boxes, scores = (boxes * 10).int(), (scores * 10).int()
    with pytest.raises(RuntimeError):
        nms(boxes, scores, 0.5)


def test_batched_nms_rejects_mismatched_idxs():
    with pytest.raises(ValueError, match="idxs"):
        batched_nms(torch.rand(4, 4), torch.rand(4), torch.zeros(3, dtype=torch.int64), 0.5)


def test_missing_extension_gives_build_hint():
    code = (
        "import torch\n"
        "from detbench.extension import MissingExtensionError\n"
        "from detbench.layers.nms import batched_nms, nms\n"
        "for call in (lambda: nms(torch.rand(2, 4), torch.rand(2), 0.5),\n"
        "             lambda: batched_nms(torch.rand(2, 4), torch.rand(2), torch.zeros(2), 0.5)):\n"
        "    try:\n"
        "        call()\n"
        "    except MissingExtensionError as e:\n"
        "        print(e)\n"
    )
    env = {**os.environ, "DETBENCH_DISABLE_EXTENSION": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("pip install -e .") == 2


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("n", [1, 63, 64, 65, 3000])
def test_cuda_matches_cpu(dtype, n):
    g = torch.Generator().manual_seed(n)
    boxes = clustered_boxes(g, n, torch.float64, clusters=max(n // 50, 1)).to(dtype)
    scores = torch.rand(n, generator=g, dtype=torch.float64).to(dtype)
    # float16 is compared in float32 on the CPU: the CUDA kernel computes IoU in float.
    cpu_dtype = torch.float32 if dtype == torch.float16 else dtype
    expected = nms(boxes.to(cpu_dtype), scores.to(cpu_dtype), 0.5)
    got = nms(boxes.cuda(), scores.cuda(), 0.5)
    assert got.is_cuda and got.dtype == torch.int64
    assert torch.equal(got.cpu(), expected)


@CUDA
def test_cuda_batched_nms_and_empty():
    g = torch.Generator().manual_seed(5)
    boxes = clustered_boxes(g, 500)
    scores = torch.rand(500, generator=g)
    idxs = torch.randint(0, 4, (500,), generator=g)
    expected = batched_nms(boxes, scores, idxs, 0.6)
    assert torch.equal(batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.6).cpu(), expected)
    assert nms(torch.zeros(0, 4, device="cuda"), torch.zeros(0, device="cuda"), 0.5).shape == (0,)
