"""Datasets and data loaders from a config: the one place where DATASETS.*, DATALOADER.*,
INPUT.* and the batch sizes are read."""

from __future__ import annotations

import bisect
import logging
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler
from yacs.config import CfgNode

from detbench.utils import comm

from . import catalog
from .collate_batch import BatchCollator
from .datasets import CityscapesDataset, COCODataset, PascalVOCDataset, PennFudanDataset
from .datasets.shapes import ensure_shapes
from .samplers import DistributedSampler, GroupedBatchSampler, IterationBasedBatchSampler
from .seeded import KeyedBatchSampler, SeededDataset
from .transforms import build_transforms

logger = logging.getLogger(__name__)


class ConcatDataset(torch.utils.data.ConcatDataset):
    """Datasets one after another; items and ``get_img_info`` use the global index."""

    def _locate(self, index: int) -> tuple[int, int]:
        which = bisect.bisect_right(self.cumulative_sizes, index)
        return which, index - (self.cumulative_sizes[which - 1] if which else 0)

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        which, local = self._locate(index)
        image, target, _ = self.datasets[which][local]
        return image, target, index

    def get_img_info(self, index: int) -> dict:
        which, local = self._locate(index)
        return self.datasets[which].get_img_info(local)


def dataset_names(cfg: CfgNode, is_train: bool) -> tuple[str, ...]:
    """DATASETS.TRAIN or DATASETS.TEST as a tuple of names."""
    names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
    return (names,) if isinstance(names, str) else tuple(names)


def build_dataset(cfg: CfgNode, name: str, is_train: bool, transforms: Any = None) -> Dataset:
    """The dataset named ``name`` in the catalog (see :mod:`detbench.data.catalog`).

    Training sets drop images without usable annotations when
    DATASETS.REMOVE_IMAGES_WITHOUT_ANNOTATIONS; test sets keep every image. The shapes
    splits are generated into their cache folder first if they are not there yet. Pascal VOC
    also reads DATASETS.VOC_USE_DIFFICULT and, for its metric, TEST.VOC_METRIC.
    """
    spec = catalog.get(name, cfg.DATASETS.CUSTOM)
    remove = bool(is_train and cfg.DATASETS.REMOVE_IMAGES_WITHOUT_ANNOTATIONS)
    verify = cfg.DATASETS.VERIFY_IMAGES
    if spec.factory == "COCODataset":
        return COCODataset(spec.args["ann_file"], spec.args["root"], remove, transforms, verify_images=verify)
    if spec.factory == "Shapes":
        images, ann_file = ensure_shapes(spec.args["root"], spec.args["split"])
        return COCODataset(ann_file, images, remove, transforms, verify_images=verify)
    if spec.factory == "PascalVOCDataset":
        return PascalVOCDataset(spec.args["root"], spec.args["split"], cfg.DATASETS.VOC_USE_DIFFICULT, transforms,
                                spec.args["year"], cfg.TEST.VOC_METRIC, remove, verify)
    if spec.factory == "CityscapesDataset":
        args = {k: spec.args[k] for k in ("img_dir", "ann_dir", "split", "mode", "mini")}
        return CityscapesDataset(**args, transforms=transforms, remove_images_without_annotations=remove)
    if spec.factory == "PennFudanDataset":
        return PennFudanDataset(spec.args["root"], spec.args["split"], cfg.DATASETS.PENN_FUDAN_NUM_TEST, transforms)
    raise ValueError(f"catalog entry {name!r} names an unknown dataset class {spec.factory!r}")


def _per_process_batch(total: int, world_size: int, key: str) -> int:
    if total <= 0 or total % world_size:
        raise ValueError(f"{key} = {total} must be a positive multiple of the number of processes ({world_size})")
    return total // world_size


def aspect_ratio_groups(dataset: Any) -> list[int]:
    """Per image, from its original size: 1 if portrait or square (height / width >= 1), 0 if landscape."""
    groups = []
    for i in range(len(dataset)):
        info = dataset.get_img_info(i)
        groups.append(int(info["height"] / info["width"] >= 1.0))
    return groups


def _train_loader(cfg: CfgNode, is_distributed: bool, start_iter: int, seed: int) -> DataLoader:
    names = dataset_names(cfg, is_train=True)
    if not names:
        raise ValueError("DATASETS.TRAIN is empty: name at least one training dataset")
    transforms = build_transforms(cfg, is_train=True)
    datasets = [build_dataset(cfg, n, True, transforms) for n in names]
    dataset = datasets[0] if len(datasets) == 1 else ConcatDataset(datasets)
    world, rank = (comm.get_world_size(), comm.get_rank()) if is_distributed else (1, 0)
    per_gpu = _per_process_batch(cfg.SOLVER.IMS_PER_BATCH, world, "SOLVER.IMS_PER_BATCH")
    # Shuffled with seed + epoch on every rank, so a resumed run replays the same order.
    sampler = DistributedSampler(len(dataset), world, rank, shuffle=True, seed=seed, pad=True)
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        batches = GroupedBatchSampler(sampler, aspect_ratio_groups(dataset), per_gpu)
    else:
        batches = BatchSampler(sampler, per_gpu, drop_last=False)
    batches = KeyedBatchSampler(IterationBasedBatchSampler(batches, cfg.SOLVER.MAX_ITER, start_iter))
    logger.info("training on %s: %d images, %d images per process, iterations %d..%d",
                "+".join(names), len(dataset), per_gpu, start_iter, cfg.SOLVER.MAX_ITER)
    # Flips and scales are drawn per (seed, iteration, index), never from a worker's state.
    return _loader(cfg, SeededDataset(dataset, seed), batches, seed)


def _test_loaders(cfg: CfgNode, is_distributed: bool, transforms: Any = None) -> list[DataLoader]:
    transforms = build_transforms(cfg, is_train=False) if transforms is None else transforms
    world, rank = (comm.get_world_size(), comm.get_rank()) if is_distributed else (1, 0)
    per_gpu = _per_process_batch(cfg.TEST.IMS_PER_BATCH, world, "TEST.IMS_PER_BATCH")
    loaders = []
    for name in dataset_names(cfg, is_train=False):
        dataset = build_dataset(cfg, name, False, transforms)
        if is_distributed:
            # No padding: each image goes to exactly one rank.
            sampler = DistributedSampler(len(dataset), world, rank, shuffle=False, pad=False)
        else:
            sampler = SequentialSampler(dataset)
        loaders.append(_loader(cfg, dataset, BatchSampler(sampler, per_gpu, drop_last=False)))
    return loaders


def _loader(cfg: CfgNode, dataset: Dataset, batch_sampler: Any, seed: int = 0) -> DataLoader:
    # DataLoader draws its workers' base seed when it is iterated; from its own generator, that
    # draw leaves torch's global stream alone, which a resumed run has just restored.
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=BatchCollator(cfg.DATALOADER.SIZE_DIVISIBILITY),
        generator=torch.Generator().manual_seed(seed),
    )


def make_data_loader(
    cfg: CfgNode, is_train: bool, is_distributed: bool = False, start_iter: int = 0, seed: int | None = None,
    test_transforms: Any = None,
) -> DataLoader | list[DataLoader]:
    """Training: one DataLoader of SOLVER.MAX_ITER - start_iter batches of
    SOLVER.IMS_PER_BATCH / world size images (aspect-ratio grouped when
    DATALOADER.ASPECT_RATIO_GROUPING), resuming exactly at ``start_iter``. Test: one
    DataLoader per DATASETS.TEST name, in order, TEST.IMS_PER_BATCH / world size images per
    batch. Batches are ``(ImageList, tuple of BoxList, tuple of dataset indices)``.

    ``seed`` fixes the training order and the random augmentations, which are drawn per
    ``(seed, iteration, dataset index)`` and so do not depend on DATALOADER.NUM_WORKERS
    (default: SEED when >= 0, else 0, so that resuming works even when SEED is drawn at random).
    ``test_transforms`` replaces the test pipeline (e.g. test-time augmentation's original images).
    """
    if is_train:
        if seed is None:
            seed = cfg.SEED if cfg.SEED >= 0 else 0
        return _train_loader(cfg, is_distributed, start_iter, seed)
    return _test_loaders(cfg, is_distributed, test_transforms)
