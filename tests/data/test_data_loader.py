"""make_data_loader on coco_mini / Penn-Fudan and on the synthetic json: batches, padding,
grouping, resume, distributed split, and the config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detbench.config import get_cfg
from detbench.data import BatchCollator, dataset_names, make_data_loader
from detbench.data.build import ConcatDataset
from detbench.structures import BoxList, ImageList
from detbench.utils import comm

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"  # the repo root's sibling
COCO_MINI = DATA / "coco_mini"
PENN_FUDAN = DATA / "PennFudanPed"


needs_coco_mini = pytest.mark.skipif(not COCO_MINI.exists(), reason="coco_mini data not available")


def _cfg(custom, train=(), test=(), **solver):
    cfg = get_cfg()
    cfg.DATASETS.CUSTOM = custom
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = train, test
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (48, 64), 100
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 48, 100
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.SIZE_DIVISIBILITY = 32
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, cfg.TEST.IMS_PER_BATCH = 4, 3, 2
    for key, value in solver.items():
        cfg.SOLVER[key] = value
    return cfg


COCO_MINI_CUSTOM = (
    ("mini_train", str(COCO_MINI / "train2017"), str(COCO_MINI / "annotations" / "instances_train2017.json")),
    ("mini_val", str(COCO_MINI / "val2017"), str(COCO_MINI / "annotations" / "instances_val2017.json")),
)


def _check_batch(images, targets, indices, dataset, divisibility=32):
    assert isinstance(images, ImageList) and images.tensors.dtype == torch.float32
    assert images.tensors.shape[-2] % divisibility == 0 and images.tensors.shape[-1] % divisibility == 0
    assert len(targets) == len(indices) == len(images.image_sizes)
    for (h, w), target, index in zip(images.image_sizes, targets, indices):
        assert isinstance(target, BoxList) and target.size == (w, h)
        info = dataset.get_img_info(index)
        assert (info["height"] >= info["width"]) == (h >= w)  # resized, orientation kept


@needs_coco_mini
def test_train_loader_batches_grouped_padded_and_resumable():
    cfg = _cfg(COCO_MINI_CUSTOM, train=("mini_train",))
    loader = make_data_loader(cfg, is_train=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    for images, targets, indices in batches:
        assert len(indices) == 4
        _check_batch(images, targets, indices, loader.dataset)
        infos = [loader.dataset.get_img_info(i) for i in indices]
        portrait = {info["height"] >= info["width"] for info in infos}
        assert len(portrait) == 1  # aspect-ratio grouping
    resumed = make_data_loader(cfg, is_train=True, start_iter=1)
    assert [b[2] for b in resumed] == [b[2] for b in batches[1:]]
    assert len(resumed) == 2


@needs_coco_mini
def test_test_loaders_cover_each_image_once_in_order():
    cfg = _cfg(COCO_MINI_CUSTOM, test=("mini_val", "mini_train"))
    loaders = make_data_loader(cfg, is_train=False)
    assert dataset_names(cfg, is_train=False) == ("mini_val", "mini_train")
    assert [len(l.dataset) for l in loaders] == [79, 80]  # test sets keep every image
    indices = []
    for images, targets, batch_indices in loaders[0]:
        _check_batch(images, targets, batch_indices, loaders[0].dataset)
        indices += batch_indices
    assert indices == list(range(79))


def test_distributed_split_and_batch_divisibility(tiny_coco, monkeypatch):
    ann, images = tiny_coco
    cfg = _cfg((("tiny", str(images), str(ann)),), train=("tiny",), test=("tiny",))
    cfg.TEST.IMS_PER_BATCH = 2
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    seen = []
    for rank in range(2):
        monkeypatch.setattr(comm, "get_rank", lambda rank=rank: rank)
        (loader,) = make_data_loader(cfg, is_train=False, is_distributed=True)
        seen.append([i for batch in loader for i in batch[2]])
    assert seen == [[0, 2], [1]]  # rank r takes r, r + 2, ...; no padding at test time
    train = make_data_loader(cfg, is_train=True, is_distributed=True)
    assert train.batch_sampler.batches.batch_sampler.batch_size == 2  # 4 images / 2 processes
    cfg.SOLVER.IMS_PER_BATCH = 3
    with pytest.raises(ValueError, match="SOLVER.IMS_PER_BATCH = 3 .* multiple of the number of processes \\(2\\)"):
        make_data_loader(cfg, is_train=True, is_distributed=True)


def test_train_loader_on_synthetic_json_drops_empty_images(tiny_coco):
    ann, images = tiny_coco
    cfg = _cfg((("tiny", str(images), str(ann)), ("tiny2", str(images), str(ann))), train=("tiny", "tiny2"))
    cfg.SOLVER.IMS_PER_BATCH, cfg.DATALOADER.ASPECT_RATIO_GROUPING = 1, False
    loader = make_data_loader(cfg, is_train=True)
    dataset = loader.dataset.dataset  # inside the SeededDataset that keys the random draws
    assert isinstance(dataset, ConcatDataset) and len(dataset) == 4  # 2 usable images each
    assert dataset.get_img_info(3)["file_name"] == "b.png"
    assert dataset[3][2] == 3 and loader.dataset[(3, 0)][2] == 3  # the global index
    batches = list(loader)
    assert len(batches) == 3 and all(len(b[2]) == 1 and 0 <= b[2][0] < 4 for b in batches)


def test_config_errors():
    with pytest.raises(ValueError, match="DATASETS.TRAIN is empty"):
        make_data_loader(_cfg(()), is_train=True)
    with pytest.raises(KeyError, match="Did you mean 'coco_2017_val'"):
        make_data_loader(_cfg((), test=("coco_2017_vall",)), is_train=False)


@pytest.mark.skipif(not PENN_FUDAN.exists(), reason="PennFudanPed data not available")
def test_penn_fudan_through_the_catalog(monkeypatch):
    monkeypatch.setenv("DETBENCH_DATASETS", str(DATA))
    cfg = _cfg((), test=("penn_fudan_test",))
    (loader,) = make_data_loader(cfg, is_train=False)
    assert len(loader.dataset) == 50
    images, targets, indices = next(iter(loader))
    _check_batch(images, targets, indices, loader.dataset)
    assert all(t.get_field("masks").mode == "mask" for t in targets)


def test_batch_collator_pads_to_divisibility():
    items = [(torch.ones(3, 5, 7), "t0", 4), (torch.ones(3, 9, 2), "t1", 1)]
    images, targets, indices = BatchCollator(8)(items)
    assert images.tensors.shape == (2, 3, 16, 8) and images.image_sizes == [(5, 7), (9, 2)]
    assert targets == ("t0", "t1") and indices == (4, 1)
    assert images.tensors[0, :, 5:].abs().sum() == 0 and images.tensors[0, :, :5, :7].eq(1).all()
