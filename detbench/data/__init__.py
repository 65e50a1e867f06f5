"""detbench.data: datasets, the dataset catalog, transforms, samplers and data loaders."""

from .build import build_dataset, dataset_names, make_data_loader
from .collate_batch import BatchCollator

__all__ = ["BatchCollator", "build_dataset", "dataset_names", "make_data_loader"]
