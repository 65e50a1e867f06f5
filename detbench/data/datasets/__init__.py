"""Datasets: COCO-format json + images, the raw Penn-Fudan folder, the Pascal VOC devkit and raw Cityscapes."""

from .cityscapes import CityscapesDataset
from .coco import COCODataset, ImageLoadError, load_coco_json, load_image
from .penn_fudan import PennFudanDataset
from .voc import PascalVOCDataset

__all__ = ["COCODataset", "CityscapesDataset", "ImageLoadError", "PascalVOCDataset", "PennFudanDataset",
           "load_coco_json", "load_image"]
