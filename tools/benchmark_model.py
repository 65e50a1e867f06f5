"""Mask R-CNN R-50-FPN cases of tools/benchmark.py: the two models, their inputs, one step of each.

Both libraries run the same network with the same weights: torchvision's ``MaskRCNN`` is built
as its COCO builder builds it (FrozenBatchNorm2d, stem and layer1 frozen; random weights, seed
0) and detbench builds configs/torchvision/maskrcnn_resnet50_fpn.yaml and loads torchvision's
state dict, converted on load. detbench's model also returns pasted mask probabilities
(MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS True, threshold -1), as torchvision's does, so the two
inference cases produce the same outputs. torchvision normalises (and resizes) inside its
model; detbench takes normalised input, so its timed call includes the normalisation.

Every ``*_case`` function returns a callable that runs one step; tools/benchmark.py times it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torchvision.models import resnet50
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d

from detbench.config import load_config
from detbench.modeling.detector import build_detection_model
from detbench.structures import BoxList, SegmentationMask
from detbench.utils import torchvision_weights

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "torchvision" / "maskrcnn_resnet50_fpn.yaml"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
LIBRARIES = ("detbench", "torchvision")


def torchvision_model(
    num_classes: int = 91, score_thresh: float = 0.0, confident: bool = False, size: tuple[int, int] = (800, 1333)
) -> MaskRCNN:
    """torchvision's Mask R-CNN R-50-FPN with random weights (seed 0), resizing images to ``size``
    = (min side, max side) as detbench's INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST (800, 1333) do.

    ``confident``: a classifier with large weights and an unlikely background (as in
    tests/modeling/test_torchvision_parity.py), so that detections pass a 0.05 score
    threshold; the default random classifier gives every class about 1 / num_classes.
    """
    torch.manual_seed(0)
    body = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), trainable_layers=3)
    model = MaskRCNN(body, num_classes=num_classes, box_score_thresh=score_thresh, min_size=size[0], max_size=size[1])
    if confident:
        g = torch.Generator().manual_seed(1)
        predictor = model.roi_heads.box_predictor
        with torch.no_grad():
            predictor.cls_score.weight.normal_(0, 0.5, generator=g)
            predictor.cls_score.bias.zero_()
            predictor.cls_score.bias[0] = -3.0
    return model


def detbench_model(same_as: MaskRCNN, score_thresh: float = 0.0, extra: tuple[str, ...] = ()) -> torch.nn.Module:
    """detbench's Mask R-CNN with torchvision's config and the weights of ``same_as``."""
    num_classes = same_as.roi_heads.box_predictor.cls_score.out_features
    cfg = load_config(CONFIG, [
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHT", "", "MODEL.ROI_HEADS.SCORE_THRESH", str(score_thresh),
        "MODEL.ROI_BOX_HEAD.NUM_CLASSES", str(num_classes), *extra,
    ])
    model = build_detection_model(cfg)
    converted, unknown = torchvision_weights.convert(same_as.state_dict())
    if unknown:
        raise RuntimeError(f"torchvision keys without a detbench name: {unknown}")
    model.load_state_dict(converted)  # strict: every tensor comes from torchvision
    return model


def build_model(library: str, device: torch.device, train: bool, height: int, width: int) -> torch.nn.Module:
    """The benchmarked model of ``library`` on ``device``, in training or evaluation mode.

    torchvision's resizes its input so that the short side is ``min(height, width)``: images of
    ``height`` x ``width`` keep their size, as in detbench, which takes them as they are.
    """
    theirs = torchvision_model(size=(min(height, width), max(height, width)))
    if library == "torchvision":
        return theirs.to(device).train(train)
    paste = ("MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS", "True", "MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD", "-1")
    return detbench_model(theirs, extra=paste).to(device).train(train)


def images(n: int, height: int, width: int, device: torch.device) -> list[torch.Tensor]:
    """n [3, height, width] images in [0, 1] (seed 0)."""
    g = torch.Generator().manual_seed(0)
    return [torch.rand(3, height, width, generator=g).to(device) for _ in range(n)]


def targets(n: int, height: int, width: int, device: torch.device, per_image: int = 8) -> tuple[list, list]:
    """(detbench BoxLists, torchvision dicts): the same random boxes, labels and box-shaped masks."""
    g = torch.Generator().manual_seed(1)
    ours, theirs = [], []
    for _ in range(n):
        xy = torch.rand(per_image, 2, generator=g) * torch.tensor([width * 0.7, height * 0.7])
        wh = 32 + torch.rand(per_image, 2, generator=g) * torch.tensor([width * 0.3, height * 0.3]) - 32
        boxes = torch.cat([xy, xy + wh.clamp(min=16)], dim=1)
        labels = torch.randint(1, 81, (per_image,), generator=g)
        polygons = [[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in boxes.tolist()]
        # Both get the same bitmasks, rasterised here as a data loader would, outside the timing.
        bitmasks = SegmentationMask(polygons, (width, height)).get_mask_tensor()
        target = BoxList(boxes, (width, height))
        target.add_field("labels", labels)
        target.add_field("masks", SegmentationMask(bitmasks, (width, height), mode="mask"))
        ours.append(target.to(device))
        theirs.append({"boxes": boxes.to(device), "labels": labels.to(device), "masks": bitmasks.to(device)})
    return ours, theirs


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.float16, enabled=amp)


def inference_case(library: str, device: torch.device, amp: bool, height: int, width: int,
                   build: Callable[..., torch.nn.Module] = build_model) -> Callable[[], object]:
    """One inference on one image under ``torch.no_grad`` (and float16 autocast with ``amp``);
    ``build(library, device, train, height, width)`` makes the model."""
    model = build(library, device, False, height, width)
    batch = images(1, height, width, device)
    mean, std = MEAN.to(device), STD.to(device)

    def step() -> object:
        with torch.no_grad(), _autocast(device, amp):
            if library == "torchvision":
                return model(batch)
            return model([(image - mean) / std for image in batch])

    return step


def train_case(library: str, device: torch.device, amp: bool, height: int, width: int,
               build: Callable[..., torch.nn.Module] = build_model,
               make_targets: Callable[..., tuple[list, list]] = targets) -> Callable[[], object]:
    """One training iteration on two images: forward, backward, SGD step (a GradScaler with ``amp``);
    ``build`` makes the model, ``make_targets(n, height, width, device)`` both libraries' targets."""
    model = build(library, device, True, height, width)
    batch = images(2, height, width, device)
    ours, theirs = make_targets(2, height, width, device)
    if library == "detbench":
        mean, std = MEAN.to(device), STD.to(device)
        batch, batch_targets = [(image - mean) / std for image in batch], ours
    else:
        batch_targets = theirs
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            losses = model(batch, batch_targets)
        scaler.scale(sum(losses.values())).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def subset_annotations(ann_file: Path, num_images: int, out_dir: Path) -> Path:
    """A COCO json with the first ``num_images`` images of ``ann_file`` (all when <= 0) and their annotations."""
    import json

    data = json.loads(Path(ann_file).read_text())
    if num_images > 0:
        data["images"] = data["images"][:num_images]
        keep = {image["id"] for image in data["images"]}
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    path = Path(out_dir) / "instances_subset.json"
    path.write_text(json.dumps(data))
    return path


def _eval_models() -> MaskRCNN:
    # 81 classes: labels are the COCO datasets' contiguous ids for both libraries, so no class
    # mapping changes the scores; the confident classifier gives up to 100 detections per image.
    return torchvision_model(num_classes=81, score_thresh=0.05, confident=True)


def detbench_eval_case(device: torch.device, amp: bool, image_dir: Path, ann_file: Path, workers: int):
    """detbench's own path: make_data_loader + engine.inference (COCO bbox and segm evaluation).

    The returned callable runs the whole evaluation and returns (images, detections).
    """
    from detbench.data import make_data_loader
    from detbench.engine.inference import inference

    model = detbench_model(_eval_models(), score_thresh=0.05).to(device).eval()
    cfg = load_config(CONFIG, [
        "MODEL.DEVICE", device.type, "MODEL.WEIGHT", "", "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "81",
        "DATASETS.CUSTOM", repr((("benchmark_val", str(image_dir), str(ann_file)),)),
        "DATASETS.TEST", "('benchmark_val',)", "DATALOADER.NUM_WORKERS", str(workers), "TEST.IMS_PER_BATCH", "1",
    ])

    def run() -> tuple[int, int]:
        loader = make_data_loader(cfg, is_train=False)[0]
        counted = []  # detections per image, for the check that both libraries detect the same
        hook = model.register_forward_hook(lambda m, i, outputs: counted.extend(len(o) for o in outputs))
        try:
            with _autocast(device, amp):
                inference(model, loader, "benchmark_val", ("bbox", "segm"), device)
        finally:
            hook.remove()
        return len(loader.dataset), sum(counted)

    return run


class _CocoImages(torch.utils.data.Dataset):
    """(image [3, H, W] in [0, 1], COCO image id) for every image of a COCO json, in file order."""

    def __init__(self, image_dir: Path, coco) -> None:
        self.image_dir, self.coco = Path(image_dir), coco
        self.ids = [image["id"] for image in coco.dataset["images"]]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image
        from torchvision.transforms.functional import to_tensor

        info = self.coco.imgs[self.ids[index]]
        image = Image.open(self.image_dir / info["file_name"]).convert("RGB")
        return to_tensor(image), self.ids[index]


def _coco_results(output: dict, image_id: int, json_ids: list[int]) -> tuple[list[dict], list[dict]]:
    """torchvision's output for one image -> COCO bbox and segm result dicts (masks thresholded at 0.5)."""
    import numpy as np
    from pycocotools import mask as mask_util

    boxes = output["boxes"].float().cpu()
    boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh
    masks = (output["masks"][:, 0] > 0.5).cpu().numpy().astype(np.uint8)
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    bbox, segm = [], []
    for box, score, label, rle in zip(boxes.tolist(), output["scores"].tolist(), output["labels"].tolist(), rles):
        rle["counts"] = rle["counts"].decode("ascii")
        common = {"image_id": image_id, "category_id": json_ids[label - 1], "score": score}
        bbox.append({**common, "bbox": box})
        segm.append({**common, "segmentation": rle})
    return bbox, segm


def torchvision_eval_case(device: torch.device, amp: bool, image_dir: Path, ann_file: Path, workers: int):
    """torchvision's model in a plain loop (1 image per batch), then pycocotools COCOeval for bbox and segm.

    The returned callable runs the whole evaluation and returns (images, detections).
    """
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    model = _eval_models().to(device).eval()
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ann_file))
    json_ids = sorted(coco.getCatIds())  # contiguous id c is the c-th category id, as in detbench's dataset

    def run() -> tuple[int, int]:
        dataset = _CocoImages(image_dir, coco)
        loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=workers, collate_fn=lambda b: b[0])
        results = {"bbox": [], "segm": []}
        with torch.no_grad(), _autocast(device, amp):
            for image, image_id in loader:
                bbox, segm = _coco_results(model([image.to(device)])[0], image_id, json_ids)
                results["bbox"] += bbox
                results["segm"] += segm
        for iou_type, dets in results.items():
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
                evaluator = COCOeval(coco, coco.loadRes(dets) if dets else COCO(), iou_type)
                evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
        return len(dataset), len(results["bbox"])

    return run
