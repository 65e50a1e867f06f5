"""Inference over a test DataLoader: run the model, gather predictions from every rank, and
evaluate them against the dataset's ground truth (rank 0 only)."""

from __future__ import annotations

import contextlib
import datetime
import logging
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from detbench.data.datasets.evaluation import evaluate
from detbench.engine.predictions_file import FILENAME as PREDICTIONS_FILENAME
from detbench.engine.predictions_file import save_predictions
from detbench.structures.bounding_box import BoxList
from detbench.utils import comm

logger = logging.getLogger(__name__)

# Log a progress line after about this many seconds (and after the last batch).
_PROGRESS_SECONDS = 10.0


def _to_original_size(output: BoxList, dataset: Any, index: int) -> BoxList:
    """A prediction in the network input size -> the original image size of ``index``."""
    info = dataset.get_img_info(index)
    return output.resize((int(info["width"]), int(info["height"])))


def _sync(device: torch.device) -> None:
    """Wait for queued kernels, so that wall-clock times cover the model's work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compute_on_dataset(
    model: nn.Module, data_loader: Iterable, device: torch.device | str = "cpu"
) -> tuple[dict[int, BoxList], float]:
    """Run ``model`` on every batch of ``data_loader`` under ``torch.no_grad``.

    Batches are ``(images: ImageList, targets, indices)``. Returns ({dataset index: prediction
    on the CPU, resized to the original image size}, seconds spent in the model's forward).
    """
    device = torch.device(device)
    dataset = data_loader.dataset
    results: dict[int, BoxList] = {}
    model_time, num_batches = 0.0, len(data_loader)
    start = last_log = time.perf_counter()
    with torch.no_grad():
        for i, (images, _, indices) in enumerate(data_loader):
            images = images.to(device)
            _sync(device)
            tic = time.perf_counter()
            outputs = model(images)
            _sync(device)
            model_time += time.perf_counter() - tic
            for index, output in zip(indices, outputs):
                index = int(index)
                results[index] = _to_original_size(output.to("cpu"), dataset, index)
            now = time.perf_counter()
            if comm.is_main_process() and (now - last_log >= _PROGRESS_SECONDS or i + 1 == num_batches):
                last_log = now
                _log_progress(i + 1, num_batches, len(results), now - start)
    return results, model_time


def _log_progress(done: int, total: int, images: int, seconds: float) -> None:
    """One progress line: a text bar, batches done, images/s and the remaining time."""
    width = 30
    filled = width * done // max(total, 1)
    eta = seconds / done * (total - done)
    logger.info(
        "[%s%s] %d/%d batches, %.2f images/s, eta %s",
        "#" * filled,
        "." * (width - filled),
        done,
        total,
        images / max(seconds, 1e-9),
        datetime.timedelta(seconds=int(eta)),
    )


def merge_predictions(per_rank: Sequence[Mapping[int, BoxList]], num_images: int | None = None) -> dict[int, BoxList]:
    """Merge the {dataset index: prediction} dicts of all ranks into one sorted by index.

    An index seen on several ranks (a distributed sampler pads the dataset with repeats) is
    kept once, from the first rank that has it. With ``num_images``, missing indices of
    ``range(num_images)`` are logged as a warning (they are not evaluated).
    """
    merged: dict[int, BoxList] = {}
    for predictions in per_rank:
        for index, prediction in predictions.items():
            merged.setdefault(int(index), prediction)
    if num_images is not None:
        missing = sorted(set(range(num_images)) - merged.keys())
        if missing:
            logger.warning(
                "%d of %d test images have no prediction (first: %s); the evaluation is incomplete",
                len(missing),
                num_images,
                missing[:10],
            )
    return dict(sorted(merged.items()))


def _accumulate_predictions_from_multiple_gpus(
    predictions: Mapping[int, BoxList], num_images: int | None = None
) -> dict[int, BoxList] | None:
    """All ranks' predictions merged on rank 0 (see :func:`merge_predictions`); None elsewhere."""
    per_rank = comm.all_gather(dict(predictions))
    if not comm.is_main_process():
        return None
    return merge_predictions(per_rank, num_images)


def _log_timing(dataset_name: str, num_images: int, total: float, model_time: float) -> None:
    """Total wall time and model time, per image and per device (times are of this rank)."""
    devices = comm.get_world_size()
    per_image = total * devices / max(num_images, 1)
    logger.info(
        "Total inference time on %s: %s (%.4f s / image per device, on %d device(s); %.2f images/s)",
        dataset_name,
        datetime.timedelta(seconds=int(total)),
        per_image,
        devices,
        num_images / max(total, 1e-9),
    )
    logger.info(
        "Model inference time: %s (%.4f s / image per device)",
        datetime.timedelta(seconds=int(model_time)),
        model_time * devices / max(num_images, 1),
    )


def inference(
    model: nn.Module,
    data_loader: Any,
    dataset_name: str,
    iou_types: Sequence[str] = ("bbox",),
    device: torch.device | str = "cpu",
    output_folder: str | Path | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate ``model`` on ``data_loader.dataset``.

    A model that pastes its masks into the image itself (MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS)
    returns box-relative masks while it is evaluated (:func:`box_relative_masks`): evaluation
    pastes them once, into the original image, so the segm AP is the same with and without it.

    Every rank runs its share of the images (the model in eval mode, restored afterwards);
    rank 0 gathers the predictions (each image once), saves them as ``predictions.pth`` in
    ``output_folder`` when given (see :mod:`detbench.engine.predictions_file`), and evaluates ``iou_types`` ("bbox", "segm", "keypoints")
    with pycocotools. Returns {iou_type: {metric: value}} on rank 0 and {} on other ranks.
    """
    dataset = data_loader.dataset
    logger.info("Start evaluation on %s (%d images)", dataset_name, len(dataset))
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        with box_relative_masks(model):
            predictions, model_time = compute_on_dataset(model, data_loader, device)
    finally:
        model.train(was_training)
    comm.synchronize()
    _log_timing(dataset_name, len(dataset), time.perf_counter() - start, model_time)
    merged = _accumulate_predictions_from_multiple_gpus(predictions, len(dataset))
    if merged is None:
        return {}
    if output_folder:
        Path(output_folder).mkdir(parents=True, exist_ok=True)
        save_predictions(Path(output_folder) / PREDICTIONS_FILENAME, merged, dataset_name)
    return evaluate(dataset, merged, output_folder, iou_types, masks_aligned=aligned_masks(model))


def _mask_post_processors(model: nn.Module) -> list:
    from detbench.modeling.roi_heads.mask_head.inference import MaskPostProcessor

    return [m for m in model.modules() if isinstance(m, MaskPostProcessor)]


def aligned_masks(model: nn.Module) -> bool:
    """True when ``model``'s masks follow detectron2's pixel model (MODEL.ROI_MASK_HEAD.ALIGNED_MASKS),
    so that whoever pastes its box-relative masks must paste them aligned."""
    return any(m.aligned for m in _mask_post_processors(model))


def pastes_masks(model: nn.Module) -> bool:
    """True when ``model``'s mask head pastes its masks into the image itself (a MaskPostProcessor
    with a Masker: MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS)."""
    return any(m.masker is not None for m in _mask_post_processors(model))


@contextlib.contextmanager
def box_relative_masks(model: nn.Module) -> Iterator[None]:
    """Within the block, ``model``'s mask head returns [K, 1, M, M] box-relative masks even when
    it pastes them otherwise; its Masker is put back on exit (also after an error)."""
    saved = [(m, m.masker) for m in _mask_post_processors(model)]
    for module, _ in saved:
        module.masker = None
    try:
        yield
    finally:
        for module, masker in saved:
            module.masker = masker
