"""The ops cases of tools/benchmark.py: detbench's compiled ops against ``torchvision.ops``.

Each case gives the median wall time (milliseconds) over ``repeats`` timed calls, after
``warmup`` untimed calls, for both libraries. Both libraries get exactly the
same tensors, and their calls alternate so that other load on the machine affects
both alike. On CUDA every call is followed by ``torch.cuda.synchronize()`` inside
the timed region.

Cases:
  * nms: 1k, 5k and 20k heavily overlapping boxes (clusters of jittered copies of
    a few boxes on an 800x1333 image), IoU threshold 0.5.
  * batched_nms (rows selected by ``--ops batched_nms``):
      - "80 classes x 1000 boxes": the box head's post-processing with score threshold
        0: 1000 proposals, each decoded once per class with its own small jitter,
        random scores, labels k * 80 + c -> c as in the flattened [K, C] layout; IoU 0.5;
      - "5 levels x 2000 boxes": RPN-like, 2000 clustered boxes per FPN level, IoU 0.7.
    torchvision.ops.batched_nms uses its coordinate-offset trick (one nms) up to 1000
    boxes on CPU and 25000 on CUDA, and one nms per category above: on CPU both rows
    compare with the per-category loop, on CUDA the RPN row with the trick.
  * roi_align forward and backward: 1000 RoIs on a 1x256x200x336 float32 map
    (stride 4 of an 800x1344 image, spatial_scale 0.25), output 7x7 and 14x14,
    sampling_ratio 2, aligned False and True. The backward row times the
    ``roi_align_backward`` operators themselves with a fixed random gradient. The
    "channels-last map" rows give both libraries the same map in NHWC memory order, as
    the CPU backbone produces it (torchvision copies it to NCHW first).
  * roi_pool forward and backward: 1000 RoIs on a 1x256x50x84 float32 map (stride 16 of
    an 800x1344 image, Fast R-CNN's C4 pooling), output 7x7 and 14x14. The backward row
    times the ``roi_pool_backward`` operators with each library's own argmax.
  * sigmoid_focal_loss: RetinaNet's classification loss on 120000 anchors x 80 classes
    (about an 800x1216 image's P3..P7 x 9 anchors), 1 % positives, alpha 0.25, gamma 2;
    "fwd" without autograd, "fwd+bwd" the summed loss and its gradient (torchvision.ops'
    composite of element-wise ops against the one-pass kernels).

Run through tools/benchmark.py (``--sections ops``, ``--ops nms roi_align``).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torchvision

OPS = ["nms", "batched_nms", "roi_align", "roi_pool", "sigmoid_focal_loss"]
IMAGE_H, IMAGE_W = 800, 1344  # the feature map below is this image at stride 4


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``fn``, the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def clustered_boxes(n: int, generator: torch.Generator, boxes_per_cluster: int = 50) -> torch.Tensor:
    """[n, 4] boxes: n / boxes_per_cluster random boxes, each copied with +-10 % jitter."""
    clusters = max(n // boxes_per_cluster, 1)
    size = torch.empty(clusters, 2).uniform_(32, 256, generator=generator)
    corner = torch.rand(clusters, 2, generator=generator) * torch.tensor([1333.0, 800.0])
    which = torch.randint(0, clusters, (n,), generator=generator)
    jitter = (torch.rand(n, 4, generator=generator) - 0.5) * 0.2 * size[which].repeat(1, 2)
    boxes = torch.cat([corner[which], corner[which] + size[which]], dim=1) + jitter
    return torch.cat([boxes[:, :2], torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)], dim=1)


def random_rois(k: int, generator: torch.Generator) -> torch.Tensor:
    """[k, 5] RoIs (batch index 0) in image pixels, sides uniform in [8, 400]."""
    size = torch.empty(k, 2).uniform_(8, 400, generator=generator)
    corner = torch.rand(k, 2, generator=generator) * (torch.tensor([IMAGE_W, IMAGE_H]) - size)
    return torch.cat([torch.zeros(k, 1), corner, corner + size], dim=1)


def paired_median_ms(
    ours: Callable[[], object], theirs: Callable[[], object], device: torch.device, repeats: int, warmup: int
) -> tuple[float, float]:
    """Median wall times of ``ours()`` and ``theirs()`` in milliseconds.

    The two calls alternate, so that a load change on a shared machine hits both alike.
    On CUDA the device is synchronised before the clock stops.
    """
    for _ in range(warmup):
        ours(), theirs()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, bucket in zip((ours, theirs), times):
            bucket.append(timed(fn, device) * 1e3)
    return statistics.median(times[0]), statistics.median(times[1])


def nms_cases(device: torch.device) -> list[tuple[str, Callable, Callable]]:
    g = torch.Generator().manual_seed(0)
    cases = []
    for n in (1000, 5000, 20000):
        boxes = clustered_boxes(n, g).to(device)
        scores = torch.rand(n, generator=g).to(device)
        kept = torch.ops.detbench.nms(boxes, scores, 0.5).numel()
        name = f"nms {n} boxes ({kept} kept)"
        ours = lambda b=boxes, s=scores: torch.ops.detbench.nms(b, s, 0.5)  # noqa: E731
        theirs = lambda b=boxes, s=scores: torchvision.ops.nms(b, s, 0.5)  # noqa: E731
        cases.append((name, ours, theirs))
    return cases


def batched_nms_cases(device: torch.device) -> list[tuple[str, Callable, Callable]]:
    g = torch.Generator().manual_seed(0)
    classes, proposals = 80, 1000
    base = clustered_boxes(proposals, g)
    # Each class decodes the proposal with its own regression: a jitter of a few pixels.
    per_class = base[:, None, :] + torch.randn(proposals, classes, 4, generator=g) * 4
    box_head = (
        per_class.reshape(-1, 4),
        torch.rand(proposals * classes, generator=g),
        torch.arange(classes).repeat(proposals),  # row k * classes + c has label c
        0.5,
    )
    levels, per_level = 5, 2000
    rpn = (
        torch.cat([clustered_boxes(per_level, g) for _ in range(levels)]),
        torch.rand(levels * per_level, generator=g),
        torch.arange(levels).repeat_interleave(per_level),
        0.7,
    )
    cases = []
    named = ((f"{classes} classes x {proposals} boxes", box_head), (f"{levels} levels x {per_level} boxes", rpn))
    for label, args in named:
        args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
        kept = torch.ops.detbench.batched_nms(*args).numel()
        cases.append((
            f"batched_nms {label} ({kept} kept)",
            lambda a=args: torch.ops.detbench.batched_nms(*a),
            lambda a=args: torchvision.ops.batched_nms(*a),
        ))
    return cases


def roi_align_cases(device: torch.device) -> list[tuple[str, Callable, Callable]]:
    g = torch.Generator().manual_seed(0)
    feats = torch.rand(1, 256, 200, 336, generator=g).to(device)
    rois = random_rois(1000, g).to(device)
    feats_nhwc = feats.contiguous(memory_format=torch.channels_last)
    tv_backward = torch.ops.torchvision._roi_align_backward
    cases = []
    for size in (7, 14):
        grad = torch.rand(1000, 256, size, size, generator=g).to(device)
        for aligned in (False, True):
            args = (0.25, size, size)
            tail = (2, aligned)
            bwd_args = (grad, rois, *args, *feats.shape, *tail)
            label = f"{size}x{size} aligned={aligned}"
            cases.append((
                f"roi_align fwd {label}",
                lambda a=args, t=tail: torch.ops.detbench.roi_align(feats, rois, *a, *t),
                lambda a=args, t=tail: torch.ops.torchvision.roi_align(feats, rois, *a, *t),
            ))
            cases.append((
                f"roi_align bwd {label}",
                lambda b=bwd_args: torch.ops.detbench.roi_align_backward(*b),
                lambda b=bwd_args: tv_backward(*b),
            ))
        # The CPU backbone's maps are channels-last: both libraries get the same NHWC map.
        args = (0.25, size, size)
        cases.append((
            f"roi_align fwd {size}x{size} channels-last map",
            lambda a=args: torch.ops.detbench.roi_align(feats_nhwc, rois, *a, 2, False),
            lambda a=args: torch.ops.torchvision.roi_align(feats_nhwc, rois, *a, 2, False),
        ))
    return cases


def roi_pool_cases(device: torch.device) -> list[tuple[str, Callable, Callable]]:
    g = torch.Generator().manual_seed(0)
    feats = torch.rand(1, 256, 50, 84, generator=g).to(device)
    rois = random_rois(1000, g).to(device)
    cases = []
    for size in (7, 14):
        args = (0.0625, size, size)
        grad = torch.rand(1000, 256, size, size, generator=g).to(device)
        ours_argmax = torch.ops.detbench.roi_pool(feats, rois, *args)[1]
        theirs_argmax = torch.ops.torchvision.roi_pool(feats, rois, *args)[1]
        cases.append((
            f"roi_pool fwd {size}x{size}",
            lambda a=args: torch.ops.detbench.roi_pool(feats, rois, *a),
            lambda a=args: torch.ops.torchvision.roi_pool(feats, rois, *a),
        ))
        cases.append((
            f"roi_pool bwd {size}x{size}",
            lambda a=args, gr=grad, am=ours_argmax: torch.ops.detbench.roi_pool_backward(gr, rois, am, *a,
                                                                                          *feats.shape),
            lambda a=args, gr=grad, am=theirs_argmax: torch.ops.torchvision._roi_pool_backward(gr, rois, am, *a,
                                                                                                *feats.shape),
        ))
    return cases


def sigmoid_focal_loss_cases(device: torch.device) -> list[tuple[str, Callable, Callable]]:
    from detbench.layers import sigmoid_focal_loss

    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(120000, 80, generator=g) * 2 - 4).to(device)
    targets = (torch.rand(120000, 80, generator=g) < 0.01).float().to(device)
    leaf = logits.clone().requires_grad_()

    def train_step(fn: Callable) -> Callable[[], object]:
        def run() -> object:
            with torch.enable_grad():  # the ops section runs under no_grad
                return torch.autograd.grad(fn(leaf, targets, 0.25, 2.0, "sum"), leaf)
        return run

    def forward(fn: Callable) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return fn(logits, targets, 0.25, 2.0, "none")
        return run

    ours, theirs = sigmoid_focal_loss, torchvision.ops.sigmoid_focal_loss
    return [("sigmoid_focal_loss fwd 120000x80", forward(ours), forward(theirs)),
            ("sigmoid_focal_loss fwd+bwd 120000x80", train_step(ours), train_step(theirs))]


def ops_rows(device: torch.device, ops: list[str], repeats: int, warmup: int,
             peak_mib: Callable[[Callable[[], object]], float] | None = None) -> list[list]:
    """One row per case: [name, detbench ms, torchvision ms], plus each library's peak memory of one
    call in MiB when ``peak_mib`` (a function measuring it for a callable) is given."""
    cases = []
    if "nms" in ops:
        cases += nms_cases(device)
    if "batched_nms" in ops:
        cases += batched_nms_cases(device)
    if "roi_align" in ops:
        cases += roi_align_cases(device)
    if "roi_pool" in ops:
        cases += roi_pool_cases(device)
    if "sigmoid_focal_loss" in ops:
        cases += sigmoid_focal_loss_cases(device)
    rows = []
    for name, ours, theirs in cases:
        t_ours, t_theirs = paired_median_ms(ours, theirs, device, repeats, warmup)
        row = [name, t_ours, t_theirs]
        if peak_mib is not None:
            row += [peak_mib(ours), peak_mib(theirs)]
        rows.append(row)
    return rows
