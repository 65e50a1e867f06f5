"""The in-graph preprocessing against the test data loader (PIL resize, ToTensor, Normalize)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from detbench.config import load_config
from detbench.data.transforms import build_transforms
from detbench.data.transforms.transforms import get_size
from detbench.export import build_preprocess
from detbench.export.preprocess import pil_bilinear_resize, resized_size

from export_families import FAMILIES


def _size(value: int) -> torch.Tensor:
    return torch.tensor([float(value)], dtype=torch.float64)


@pytest.mark.parametrize(
    "width, height, min_size, max_size",
    [
        (640, 480, 800, 1333), (480, 640, 800, 1333), (1000, 200, 800, 1333),  # capped: 1335 x 267
        (800, 600, 600, 1000), (559, 536, 160, 160), (3, 1000, 50, 90), (333, 333, 333, 333),
        (1333, 800, 800, None), (1234, 567, 100, 2000),
    ],
)
def test_resized_size_is_get_size(width: int, height: int, min_size: int, max_size: int | None) -> None:
    new_h, new_w = resized_size(_size(height), _size(width), min_size, max_size)
    assert (int(new_w), int(new_h)) == get_size((width, height), min_size, max_size)


@pytest.mark.parametrize("size, out", [((91, 37), (159, 65)), ((91, 37), (30, 13)), ((64, 48), (64, 20)),
                                       ((200, 150), (67, 50)), ((5, 7), (1, 1))])
def test_resize_is_pillows_to_the_bit(size: tuple[int, int], out: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    expected = torch.from_numpy(np.asarray(image.resize(out, Image.Resampling.BILINEAR)).copy()).permute(2, 0, 1)
    chw = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).double()
    got = pil_bilinear_resize(chw, torch.tensor(out[1]), torch.tensor(out[0]))
    assert torch.equal(got.to(torch.uint8), expected)


@pytest.mark.parametrize("family", ["mask_fpn", "mask_c4"])
def test_preprocess_is_the_test_loaders(family: str) -> None:
    path, opts = FAMILIES[family]
    cfg = load_config(path, [*opts, "DATALOADER.SIZE_DIVISIBILITY", "32"])
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, (123, 217, 3), dtype=np.uint8)
    expected, _ = build_transforms(cfg, is_train=False)(Image.fromarray(array), None)
    batch, size = build_preprocess(cfg)(torch.from_numpy(array))
    assert size.tolist() == list(expected.shape[1:])
    assert batch.shape[2] % 32 == 0 and batch.shape[3] % 32 == 0
    assert_close(batch[0, :, : size[0], : size[1]], expected, atol=0, rtol=0)
    assert not batch[0, :, size[0]:].any() and not batch[0, :, :, size[1]:].any()  # zero padding
