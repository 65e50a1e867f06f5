"""Training samples keyed by ``(dataset index, iteration)``, loaded with their own random draws.

:class:`KeyedBatchSampler` tags every index of an :class:`IterationBasedBatchSampler` batch
with the iteration that batch belongs to; :class:`SeededDataset` loads ``dataset[index]``
with the generator of ``(seed, iteration, index)`` current (see
:mod:`detbench.data.transforms.random_draws`). Together they make every augmentation a
function of the seed, the iteration and the image, whatever process loads it.
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple

from torch.utils.data import Dataset, Sampler

from .samplers import IterationBasedBatchSampler
from .transforms.random_draws import sample_generator, use_generator


class SampleKey(NamedTuple):
    """What a training sample's random draws depend on (besides the seed)."""

    index: int  # position in the (concatenated) dataset
    iteration: int  # 0-based iteration whose batch holds the sample


class KeyedBatchSampler(Sampler[list[SampleKey]]):
    """The batches of ``batches`` with each index tagged by its batch's iteration."""

    def __init__(self, batches: IterationBasedBatchSampler) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[SampleKey]]:
        for iteration, batch in enumerate(self.batches, self.batches.start_iter):
            yield [SampleKey(int(index), iteration) for index in batch]

    def __len__(self) -> int:
        return len(self.batches)


class SeededDataset(Dataset):
    """``dataset`` indexed by :class:`SampleKey`; each item is loaded under its own generator.

    Items are ``dataset[key.index]`` (``(image, target, index)``); ``get_img_info(index)``
    and ``len`` are the wrapped dataset's.
    """

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset, self.seed = dataset, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, iteration = key
        with use_generator(sample_generator(self.seed, iteration, index)):
            return self.dataset[index]

    def get_img_info(self, index: int) -> dict:
        return self.dataset.get_img_info(index)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dataset!r}, seed={self.seed})"
