"""Datasets: COCO-format json + images, and the raw Penn-Fudan folder."""

from .coco import COCODataset, ImageLoadError, load_coco_json, load_image
from .penn_fudan import PennFudanDataset

__all__ = ["COCODataset", "ImageLoadError", "PennFudanDataset", "load_coco_json", "load_image"]
