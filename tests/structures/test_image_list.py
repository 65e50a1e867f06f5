"""ImageList / to_image_list: padding against hand-built tensors, divisibility, input kinds."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from detbench.structures import ImageList, to_image_list

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_list_is_padded_bottom_right():
    tall = torch.tensor([[[1.0], [2.0], [3.0]]])  # [1, 3, 1]: height 3, width 1
    wide = torch.tensor([[[4.0, 5.0]]])  # [1, 1, 2]: height 1, width 2
    batch = to_image_list([tall, wide])
    expected = torch.tensor(
        [
            [[[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]],
            [[[4.0, 5.0], [0.0, 0.0], [0.0, 0.0]]],
        ]
    )
    assert_close(batch.tensors, expected)
    assert batch.image_sizes == [(3, 1), (1, 2)]  # (height, width)


def test_size_divisibility_rounds_each_side_up():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 5, 7, generator=g), torch.rand(3, 3, 9, generator=g), torch.rand(3, 8, 8, generator=g)]
    batch = to_image_list(images, size_divisibility=4)
    assert batch.tensors.shape == (3, 3, 8, 12)  # max (8, 9) rounded up to multiples of 4
    assert batch.image_sizes == [(5, 7), (3, 9), (8, 8)]
    for image, padded in zip(images, batch.tensors):
        h, w = image.shape[1:]
        assert_close(padded[:, :h, :w], image)
        valid = torch.zeros(8, 12, dtype=torch.bool)
        valid[:h, :w] = True
        assert padded[:, ~valid].abs().sum().item() == 0.0
    assert to_image_list(images, size_divisibility=8).tensors.shape == (3, 3, 8, 16)
    assert to_image_list(images, size_divisibility=1).tensors.shape == (3, 3, 8, 9)


def test_single_image_tensor():
    image = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(2, 3, 5)
    batch = to_image_list(image)
    assert batch.tensors.shape == (1, 2, 3, 5) and batch.image_sizes == [(3, 5)]
    assert_close(batch.tensors[0], image)
    padded = to_image_list(image, size_divisibility=4)
    expected = torch.zeros(1, 2, 4, 8)
    expected[0, :, :3, :5] = image
    assert_close(padded.tensors, expected)
    assert padded.image_sizes == [(3, 5)]


def test_batch_tensor():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 1, 6, 4, generator=g)
    batch = to_image_list(images)
    assert batch.tensors is images and batch.image_sizes == [(6, 4), (6, 4)]
    padded = to_image_list(images, size_divisibility=5)
    expected = torch.zeros(2, 1, 10, 5)
    expected[:, :, :6, :4] = images
    assert_close(padded.tensors, expected)
    assert padded.image_sizes == [(6, 4), (6, 4)]


def test_image_list_input():
    images = torch.ones(1, 1, 6, 4)
    existing = ImageList(images, [(5, 3)])
    assert to_image_list(existing) is existing
    assert to_image_list(existing, size_divisibility=2) is existing  # already divisible
    repadded = to_image_list(existing, size_divisibility=4)
    assert repadded.tensors.shape == (1, 1, 8, 4) and repadded.image_sizes == [(5, 3)]
    assert repadded.tensors[0, 0, :6].sum().item() == 24.0 and repadded.tensors[0, 0, 6:].sum().item() == 0.0


def test_dtype_and_gradient_are_kept():
    assert to_image_list([torch.ones(3, 2, 2, dtype=torch.uint8)], 4).tensors.dtype == torch.uint8
    image = torch.rand(1, 3, 2, requires_grad=True)
    batch = to_image_list([image, torch.rand(1, 4, 4)], size_divisibility=8)
    (batch.tensors * 2).sum().backward()
    assert_close(image.grad, torch.full_like(image, 2.0))


@pytest.mark.parametrize("device", DEVICES)
def test_to(device):
    batch = to_image_list([torch.rand(3, 4, 5), torch.rand(3, 2, 6)]).to(device)
    assert batch.tensors.device.type == device and batch.image_sizes == [(4, 5), (2, 6)]
    assert len(batch) == 2
    assert repr(batch) == "ImageList(tensors=(2, 3, 4, 6), image_sizes=[(4, 5), (2, 6)])"


@pytest.mark.parametrize(
    "value, error, match",
    [
        ([], TypeError, "non-empty list"),
        ("image", TypeError, "ImageList, a tensor"),
        (torch.zeros(4, 4), ValueError, r"\[C, H, W\] or \[B, C, H, W\]"),
        ([torch.zeros(3, 4, 4), torch.zeros(1, 4, 4)], ValueError, "same C"),
        ([torch.zeros(3, 4, 4), torch.zeros(1, 3, 4, 4)], ValueError, "same C"),
        ([torch.zeros(3, 4, 4), torch.zeros(3, 4, 4, dtype=torch.float64)], ValueError, "one dtype"),
    ],
)
def test_to_image_list_rejects_bad_input(value, error, match):
    with pytest.raises(error, match=match):
        to_image_list(value)


def test_image_list_validates_sizes():
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        ImageList(torch.zeros(3, 4, 4), [(4, 4)])
    with pytest.raises(ValueError, match="2 image sizes for a batch of 1"):
        ImageList(torch.zeros(1, 3, 4, 4), [(4, 4), (4, 4)])
    with pytest.raises(ValueError, match="exceed"):
        ImageList(torch.zeros(1, 3, 4, 6), [(6, 4)])  # (height, width), not (width, height)
