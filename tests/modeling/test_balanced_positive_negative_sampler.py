"""BalancedPositiveNegativeSampler: counts, fractions, ignored labels, seeding, torchvision's draws."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler as TVSampler

from detbench.modeling.balanced_positive_negative_sampler import BalancedPositiveNegativeSampler


def make_labels(num_pos: int, num_neg: int, num_ignored: int, seed: int = 0) -> torch.Tensor:
    labels = torch.tensor([1] * num_pos + [0] * num_neg + [-1] * num_ignored)
    return labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))]


@pytest.mark.parametrize(
    "num_pos, num_neg, expected_pos, expected_neg",
    [
        (100, 1000, 64, 192),  # enough of both: 256 * 0.25 = 64 positives
        (10, 1000, 10, 246),  # few positives: negatives fill up the batch
        (100, 20, 64, 20),  # few negatives: the batch stays short
        (0, 0, 0, 0),
    ],
)
def test_counts(num_pos, num_neg, expected_pos, expected_neg):
    labels = make_labels(num_pos, num_neg, 50)
    pos, neg = BalancedPositiveNegativeSampler(256, 0.25)([labels])
    assert pos[0].dtype == torch.bool and pos[0].shape == labels.shape
    assert int(pos[0].sum()) == expected_pos and int(neg[0].sum()) == expected_neg
    assert bool((labels[pos[0]] == 1).all()) and bool((labels[neg[0]] == 0).all())  # never an ignored one


def test_fraction_is_truncated_and_labels_above_one_are_positive():
    labels = torch.tensor([2] * 20 + [0] * 20)  # e.g. class labels of a box head
    pos, neg = BalancedPositiveNegativeSampler(10, 0.33)(labels.split(40))
    assert int(pos[0].sum()) == 3 and int(neg[0].sum()) == 7  # int(10 * 0.33) = 3


def test_per_image_and_seeded():
    labels = [make_labels(30, 300, 10, seed=1), make_labels(5, 40, 0, seed=2)]
    sampler = BalancedPositiveNegativeSampler(64, 0.5)
    torch.manual_seed(7)
    first = sampler(labels)
    torch.manual_seed(7)
    second = sampler(labels)
    third = sampler(labels)
    assert [int(p.sum()) for p in first[0]] == [30, 5] and [int(n.sum()) for n in first[1]] == [34, 40]
    for a, b in zip(first[0] + first[1], second[0] + second[1]):
        assert torch.equal(a, b)
    assert not torch.equal(first[1][0], third[1][0])  # a new draw without reseeding


def test_same_draws_as_torchvision():
    labels = [make_labels(80, 500, 30, seed=3), make_labels(3, 100, 7, seed=4)]
    torch.manual_seed(0)
    pos, neg = BalancedPositiveNegativeSampler(128, 0.5)(labels)
    torch.manual_seed(0)
    tv_pos, tv_neg = TVSampler(128, 0.5)(labels)
    for ours, theirs in zip(pos + neg, tv_pos + tv_neg):
        assert torch.equal(ours, theirs.bool())


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size_per_image"):
        BalancedPositiveNegativeSampler(0, 0.5)
    with pytest.raises(ValueError, match="positive_fraction"):
        BalancedPositiveNegativeSampler(8, 1.5)
