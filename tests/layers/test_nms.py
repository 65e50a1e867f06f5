"""nms and batched_nms: hand-derived cases, reference, torchvision, registrations, errors, CUDA vs CPU."""

import os
import subprocess
import sys

import pytest
import torch
import torchvision
from torch.testing import assert_close

from detbench.layers.nms import batched_nms, nms
from detbench.layers.reference import batched_nms_reference, nms_reference

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


# ---- batched_nms --------------------------------------------------------------------------------------------


def categorised_boxes(g: torch.Generator, case: str, n: int = 200, dtype=torch.float32):
    """Boxes, scores and int64 categories for one named situation (see test_batched_nms_matches_reference)."""
    boxes = clustered_boxes(g, n, dtype, clusters=5)
    scores = torch.rand(n, generator=g, dtype=dtype)
    idxs = torch.randint(0, 6, (n,), generator=g)
    if case == "many-categories":
        idxs = torch.randint(0, 40, (n,), generator=g)
    elif case == "negative-coordinates":
        boxes = boxes - 150  # torchvision's offset trick (max coordinate + 1) assumes coordinates >= 0
    elif case == "single-category":
        idxs = torch.full((n,), 7)
    elif case == "singletons":
        idxs[:25] = torch.arange(25) * 3 - 40  # 25 categories with one box, some ids negative
    elif case == "equal-scores":
        scores = torch.randint(0, 4, (n,), generator=g).to(dtype) / 4  # ties within and across categories
    return boxes, scores, idxs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["many-categories", "negative-coordinates", "single-category", "singletons",
                                  "equal-scores"])
def test_batched_nms_matches_reference(case, dtype):
    g = torch.Generator().manual_seed(10)
    boxes, scores, idxs = categorised_boxes(g, case, dtype=dtype)
    expected = batched_nms_reference(boxes, scores, idxs, 0.5)
    assert 0 < expected.numel() < len(boxes)
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.5), expected)
    strided = torch.stack([idxs, idxs], dim=1)[:, 1]  # non-contiguous categories
    assert torch.equal(torch.ops.detbench.batched_nms(boxes, scores, strided, 0.5), expected)


def test_batched_nms_hand_derived_order():
    # Boxes 0 and 1 overlap with IoU 3/4; box 2 duplicates box 0 in another category.
    boxes = torch.tensor([[0.0, 0, 4, 1], [1.0, 0, 4, 1], [0.0, 0, 4, 1], [10.0, 10, 11, 11]])
    idxs = torch.tensor([5, 5, -1, 2])
    scores = torch.tensor([0.5, 0.9, 0.5, 0.5])
    # Box 1 leads category 5; the three ties at 0.5 come in input order.
    assert batched_nms(boxes, scores, idxs, 0.7).tolist() == [1, 2, 3]
    assert batched_nms(boxes, scores, idxs, 0.75).tolist() == [1, 0, 2, 3]
    # A NaN score is visited first, as Tensor.sort(descending=True) and nms order it.
    scores[0] = float("nan")
    assert batched_nms(boxes, scores, idxs, 0.7).tolist() == [0, 2, 3]
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.7), batched_nms_reference(boxes, scores, idxs, 0.7))


@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_batched_nms_matches_torchvision(threshold):
    # 3000 boxes: torchvision runs one nms per category on CPU (no offset rounding), and
    # detbench uses its parallel path. Continuous scores: torchvision's final sort is not stable.
    g = torch.Generator().manual_seed(11)
    boxes = clustered_boxes(g, 3000, clusters=30) - 60  # partly negative
    scores = torch.rand(3000, generator=g)
    idxs = torch.randint(0, 40, (3000,), generator=g)
    idxs[:5] = torch.arange(100, 105)  # categories with a single box
    got = batched_nms(boxes, scores, idxs, threshold)
    assert torch.equal(got, torchvision.ops.batched_nms(boxes, scores, idxs, threshold))
    assert got.numel() > nms(boxes, scores, threshold).numel()  # categories do not suppress each other


def test_batched_nms_same_result_on_one_thread():
    g = torch.Generator().manual_seed(12)
    boxes = clustered_boxes(g, 4000, clusters=40)
    scores, idxs = torch.rand(4000, generator=g), torch.randint(0, 7, (4000,), generator=g)
    expected = batched_nms(boxes, scores, idxs, 0.5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert torch.equal(batched_nms(boxes, scores, idxs, 0.5), expected)
    finally:
        torch.set_num_threads(threads)


def test_batched_nms_separates_categories_with_negative_coordinates():
    boxes = torch.tensor([[-50.0, -50.0, -10.0, -10.0], [-50.0, -50.0, -10.0, -10.0], [0.0, 0.0, 1.0, 1.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1, 2]
    assert batched_nms(boxes, scores, torch.tensor([0, 0, 0]), 0.5).tolist() == [0, 2]


def test_batched_nms_widens_narrow_integer_categories():
    g = torch.Generator().manual_seed(13)
    boxes, scores, idxs = categorised_boxes(g, "many-categories")
    assert torch.equal(batched_nms(boxes, scores, idxs.int(), 0.5), batched_nms(boxes, scores, idxs, 0.5))


def test_batched_nms_op_empty_input():
    keep = torch.ops.detbench.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert keep.dtype == torch.int64 and keep.shape == (0,)


def test_batched_nms_opcheck():
    g = torch.Generator().manual_seed(14)
    boxes, scores, idxs = categorised_boxes(g, "singletons", n=40)
    torch.library.opcheck(torch.ops.detbench.batched_nms.default, (boxes, scores, idxs, 0.5))


def test_batched_nms_torch_compile_matches_eager():
    g = torch.Generator().manual_seed(15)
    boxes, scores, idxs = categorised_boxes(g, "many-categories", n=60)

    def kept_score_sum(b, s, i):
        keep = batched_nms(b, s, i, 0.5)
        return s[keep].sum(), keep

    compiled = torch.compile(kept_score_sum, backend="aot_eager", fullgraph=True)
    expected, expected_keep = kept_score_sum(boxes, scores, idxs)
    got, got_keep = compiled(boxes, scores, idxs)
    assert torch.equal(got_keep, expected_keep)
    assert_close(got, expected)


@pytest.mark.parametrize("case", ["idxs-float", "idxs-int32", "idxs-length", "idxs-2d", "boxes-n3", "dtype-mix"])
def test_batched_nms_malformed_arguments_raise(case):
    boxes, scores, idxs = torch.rand(5, 4), torch.rand(5), torch.zeros(5, dtype=torch.int64)
    boxes[:, 2:] += boxes[:, :2]
    if case == "idxs-float":
        idxs = idxs.float()
    elif case == "idxs-int32":
        idxs = idxs.int()  # the op takes int64 only; the Python wrapper widens
    elif case == "idxs-length":
        idxs = idxs[:4]
    elif case == "idxs-2d":
        idxs = idxs[:, None]
    elif case == "boxes-n3":
        boxes = boxes[:, :3]
    elif case == "dtype-mix":
        scores = scores.double()
    with pytest.raises(RuntimeError, match="batched_nms|nms"):
        torch.ops.detbench.batched_nms(boxes, scores, idxs, 0.5)


def test_batched_nms_rejects_mismatched_idxs():
    with pytest.raises(ValueError, match="idxs"):
        batched_nms(torch.rand(4, 4), torch.rand(4), torch.zeros(3, dtype=torch.int64), 0.5)
    with pytest.raises(RuntimeError, match="int64"):
        batched_nms(torch.rand(4, 4), torch.rand(4), torch.zeros(4), 0.5)  # float categories


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("n", [1, 64, 65, 3000])
def test_cuda_batched_nms_matches_cpu(dtype, n):
    """Both kernels work on the original coordinates, so the decisions agree exactly."""
    g = torch.Generator().manual_seed(n)
    boxes = clustered_boxes(g, n, torch.float64, clusters=max(n // 50, 1))
    scores = torch.rand(n, generator=g, dtype=torch.float64)
    idxs = torch.randint(-3, 20, (n,), generator=g)
    cpu_dtype = torch.float32 if dtype == torch.float16 else dtype  # no float16 kernel on CPU
    expected = batched_nms(boxes.to(dtype).to(cpu_dtype), scores.to(dtype).to(cpu_dtype), idxs, 0.5)
    got = batched_nms(boxes.to(dtype).cuda(), scores.to(dtype).cuda(), idxs.cuda(), 0.5)
    assert got.is_cuda and got.dtype == torch.int64
    assert torch.equal(got.cpu(), expected)


@CUDA
def test_cuda_batched_nms_empty_and_device_mix():
    empty = torch.ops.detbench.batched_nms(torch.zeros(0, 4, device="cuda"), torch.zeros(0, device="cuda"),
                                           torch.zeros(0, dtype=torch.int64, device="cuda"), 0.5)
    assert empty.is_cuda and empty.shape == (0,)
    assert nms(torch.zeros(0, 4, device="cuda"), torch.zeros(0, device="cuda"), 0.5).shape == (0,)
    with pytest.raises(RuntimeError, match="idxs"):
        torch.ops.detbench.batched_nms(torch.rand(3, 4, device="cuda"), torch.rand(3, device="cuda"),
                                       torch.zeros(3, dtype=torch.int64), 0.5)


@CUDA
def test_cuda_batched_nms_mask_memory_is_per_category():
    """80k boxes in 80 categories: the bitmask holds only within-category pairs.

    A mask over all pairs would be 80000 x 1250 words = 800 MB; per category it is
    80 x 1000 x 16 words = 10 MB. Sorting and indexing add a few [N] tensors.
    """
    g = torch.Generator().manual_seed(0)
    n, categories = 80_000, 80
    boxes = clustered_boxes(g, n, torch.float32, clusters=400).cuda()
    scores = torch.rand(n, generator=g).cuda()
    idxs = (torch.arange(n) % categories).cuda()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    got = batched_nms(boxes, scores, idxs, 0.5)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before
    assert extra < 64 * 2**20, f"batched_nms used {extra / 2**20:.0f} MB beyond its inputs"
    expected = batched_nms(boxes.cpu(), scores.cpu(), idxs.cpu(), 0.5)
    assert torch.equal(got.cpu(), expected)


@CUDA
def test_cuda_batched_nms_wide_category_uses_global_words():
    """A category wider than 4096 words (262144 boxes) keeps its `removed` words in global
    memory, at its own offset beside smaller categories; checked against torchvision's
    CUDA kernels on integer coordinates (exact IoUs in any evaluation order)."""
    torchvision = pytest.importorskip("torchvision")
    g = torch.Generator().manual_seed(1)
    n_wide, n_small = 4097 * 64, 3000
    boxes = (clustered_boxes(g, n_wide + n_small, torch.float64, clusters=2000)).round().float()
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    scores = torch.randperm(n_wide + n_small, generator=g).float()  # distinct: no tie order to disagree on
    idxs = torch.cat([torch.full((n_wide,), 5), torch.randint(0, 4, (n_small,), generator=g)])
    perm = torch.randperm(len(idxs), generator=g)  # categories interleaved in the input
    boxes, scores, idxs = boxes[perm].cuda(), scores[perm].cuda(), idxs[perm].cuda()
    got = batched_nms(boxes, scores, idxs, 0.5)
    expected = torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(got.cpu(), expected.cpu())
