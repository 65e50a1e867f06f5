"""Mask R-CNN R-50-FPN: detbench vs torchvision, same machine, same run, same inputs.

Times one inference (1 image) and one training step (forward + backward + SGD step,
2 images) of detbench's configs/e2e_mask_rcnn_R_50_FPN.yaml next to torchvision's
maskrcnn_resnet50_fpn built the same way (FrozenBatchNorm, stem and res2 frozen,
random weights). Both keep every detection (score threshold 0), so both run their
mask head on 100 detections per image. Prints medians and the ratio with tabulate.
With ``--same-weights``, detbench uses configs/torchvision/maskrcnn_resnet50_fpn.yaml
(torchvision's settings, 91 classes) and torchvision's weights, converted on load.

    python tools/benchmark_model.py --repeats 3 --threads 2 [--same-weights]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from tabulate import tabulate
from torchvision.models import resnet50
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d

from detbench.config import load_config
from detbench.modeling.detector import build_detection_model
from detbench.structures import BoxList, SegmentationMask
from detbench.utils import torchvision_weights

ROOT = Path(__file__).resolve().parents[1]
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first-call allocations and oneDNN primitive creation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _detbench_model(train: bool, same_as: torch.nn.Module | None = None):
    """detbench's Mask R-CNN; with ``same_as`` (a torchvision model) its config and weights."""
    config = "configs/torchvision/maskrcnn_resnet50_fpn.yaml" if same_as else "configs/e2e_mask_rcnn_R_50_FPN.yaml"
    cfg = load_config(ROOT / config, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", "", "MODEL.ROI_HEADS.SCORE_THRESH", "0.0"])
    model = build_detection_model(cfg)
    if same_as is not None:
        converted, unknown = torchvision_weights.convert(same_as.state_dict())
        assert not unknown, unknown
        model.load_state_dict(converted)  # strict: every tensor comes from torchvision
    return model.train(train)


def _torchvision_model(train: bool, num_classes: int = 81):
    torch.manual_seed(0)
    body = resnet50(norm_layer=FrozenBatchNorm2d)
    model = MaskRCNN(_resnet_fpn_extractor(body, trainable_layers=3), num_classes=num_classes, box_score_thresh=0.0)
    return model.train(train)


def _pair(train: bool, same_weights: bool):
    """(detbench model, torchvision model)."""
    theirs = _torchvision_model(train, 91 if same_weights else 81)
    return _detbench_model(train, theirs if same_weights else None), theirs


def _images(n: int, h: int, w: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(3, h, w, generator=g) for _ in range(n)]


def _targets(n: int, h: int, w: int, per_image: int = 8):
    """Random boxes with box-shaped polygon masks, in both libraries' formats."""
    g = torch.Generator().manual_seed(1)
    ours, theirs = [], []
    for _ in range(n):
        xy = torch.rand(per_image, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = 32 + torch.rand(per_image, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) - 32
        boxes = torch.cat([xy, xy + wh.clamp(min=16)], dim=1)
        labels = torch.randint(1, 81, (per_image,), generator=g)
        polys = [[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in boxes.tolist()]
        # Both get the same bitmasks, rasterised here as a data loader would, outside the timing.
        bitmasks = SegmentationMask(polys, (w, h)).get_mask_tensor()
        target = BoxList(boxes, (w, h))
        target.add_field("labels", labels)
        target.add_field("masks", SegmentationMask(bitmasks, (w, h), mode="mask"))
        ours.append(target)
        theirs.append({"boxes": boxes, "labels": labels, "masks": bitmasks})
    return ours, theirs


def _train_step(model, images, targets) -> Callable[[], None]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        losses = model(images, targets)
        sum(losses.values()).backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up (median)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--same-weights", action="store_true",
                        help="detbench runs torchvision's config and weights (converted) instead of its own")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w = args.height, args.width
    rows = []

    image = _images(1, h, w)
    ours, theirs = _pair(False, args.same_weights)
    with torch.no_grad():
        # detbench models take normalised input; torchvision normalises inside, so both are timed with it.
        t_ours = _median_seconds(lambda: ours([(img - MEAN) / STD for img in image]), args.repeats)
        t_theirs = _median_seconds(lambda: theirs(image), args.repeats)
    rows.append(["inference, 1 image", f"{h}x{w}", t_ours, t_theirs, t_ours / t_theirs])

    images = _images(2, h, w)
    ours_t, theirs_t = _targets(2, h, w)
    ours, theirs = _pair(True, args.same_weights)
    normalised = [(img - MEAN) / STD for img in images]
    t_ours = _median_seconds(_train_step(ours, normalised, ours_t), args.repeats)
    t_theirs = _median_seconds(_train_step(theirs, images, theirs_t), args.repeats)
    rows.append(["train step, 2 images", f"{h}x{w}", t_ours, t_theirs, t_ours / t_theirs])

    print(f"Mask R-CNN R-50-FPN on CPU, {torch.get_num_threads()} threads, median of {args.repeats} "
          f"after 1 warm-up, torch {torch.__version__}"
          + (", same weights (torchvision's, converted)" if args.same_weights else ""))
    print(tabulate(rows, headers=["case", "input", "detbench s", "torchvision s", "ratio"], floatfmt=".3f"))


if __name__ == "__main__":
    main()
