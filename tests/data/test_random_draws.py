"""Augmentation draws keyed by (seed, iteration, index): the same for any NUM_WORKERS and after a resume."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from detbench.config import get_cfg
from detbench.data import make_data_loader
from detbench.data.transforms import RandomHorizontalFlip, Resize, build_transforms
from detbench.data.transforms.random_draws import (
    current_generator,
    sample_generator,
    sample_seed,
    use_generator,
)


def test_sample_seed_depends_on_each_part_only():
    base = sample_seed(3, 10, 7)
    assert base == sample_seed(3, 10, 7) and 0 <= base < 2**63
    others = {sample_seed(4, 10, 7), sample_seed(3, 11, 7), sample_seed(3, 10, 8), sample_seed(-1, 10, 7)}
    assert base not in others and len(others) == 4


def test_use_generator_nests_and_restores():
    assert current_generator() is None
    a, b = torch.Generator(), torch.Generator()
    with use_generator(a):
        with use_generator(b):
            assert current_generator() is b
        assert current_generator() is a
    assert current_generator() is None


def test_transforms_draw_from_the_current_generator_not_the_global_one():
    resize, flip = Resize((10, 20, 30, 40), 1000), RandomHorizontalFlip(0.5)
    image = torch.arange(12.0).reshape(1, 3, 4)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    with use_generator(sample_generator(0, 5, 2)):
        sizes = [resize.draw_size((50, 50)) for _ in range(8)]
        flips = [not torch.equal(flip(image)[0], image) for _ in range(8)]
    assert torch.equal(torch.get_rng_state(), before)  # the global stream was not touched
    # Same draws from a fresh generator of the same key; the reference reads it directly.
    g = sample_generator(0, 5, 2)
    expected = []
    for _ in range(8):
        choice = (10, 20, 30, 40)[int(torch.randint(4, (), generator=g))]
        expected.append((choice, choice))
    assert sizes == expected
    g = sample_generator(0, 5, 2)
    for _ in range(8):
        torch.randint(4, (), generator=g)
    assert flips == [float(torch.rand((), generator=g)) < 0.5 for _ in range(8)]


def _cfg(ann, images, workers: int):
    cfg = get_cfg()
    cfg.DATASETS.CUSTOM = (("tiny", str(images), str(ann)),)
    cfg.DATASETS.TRAIN = ("tiny",)
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (16, 24, 32, 40), 200  # multi-scale
    cfg.INPUT.HORIZONTAL_FLIP_PROB_TRAIN = 0.5
    cfg.DATALOADER.NUM_WORKERS, cfg.DATALOADER.ASPECT_RATIO_GROUPING = workers, False
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, cfg.SEED = 1, 12, 7
    return cfg


def _batches(cfg, start_iter: int = 0) -> list:
    torch.manual_seed(123)  # the global stream must not matter
    return [(b[0].tensors.clone(), b[1][0].bbox.clone(), b[2]) for b in make_data_loader(cfg, True, start_iter=start_iter)]


def test_train_batches_are_the_same_for_0_1_2_workers_and_after_a_resume(tiny_coco):
    ann, images = tiny_coco
    reference = _batches(_cfg(ann, images, 0))
    # The draws vary: several sizes and both flip outcomes occur over the 12 iterations.
    assert len({b[0].shape[-2:] for b in reference}) >= 3
    for workers in (1, 2):
        got = _batches(_cfg(ann, images, workers))
        assert len(got) == len(reference)
        for (ia, ba, ka), (ib, bb, kb) in zip(got, reference):
            assert ka == kb
            assert_close(ia, ib, rtol=0, atol=0)
            assert_close(ba, bb, rtol=0, atol=0)
    resumed = _batches(_cfg(ann, images, 2), start_iter=5)
    assert len(resumed) == 7
    for (ia, ba, ka), (ib, bb, kb) in zip(resumed, reference[5:]):
        assert ka == kb
        assert_close(ia, ib, rtol=0, atol=0)
        assert_close(ba, bb, rtol=0, atol=0)


@pytest.mark.parametrize("iteration", [0, 3])
def test_a_sample_is_its_keyed_transform(tiny_coco, iteration):
    """Independent reference: the dataset's raw item, transformed by hand under the key's generator."""
    ann, images = tiny_coco
    cfg = _cfg(ann, images, 0)
    loader = make_data_loader(cfg, True)
    seeded = loader.dataset
    raw = type(seeded.dataset)(ann, images, True, None)  # same dataset without transforms
    transforms = build_transforms(cfg, is_train=True)
    for index in range(len(raw)):
        image, target, _ = raw[index]
        with use_generator(sample_generator(cfg.SEED, iteration, index)):
            want_image, want_target = transforms(image, target)
        got_image, got_target, got_index = seeded[(index, iteration)]
        assert got_index == index
        assert_close(got_image, want_image, rtol=0, atol=0)
        assert_close(got_target.bbox, want_target.bbox, rtol=0, atol=0)
