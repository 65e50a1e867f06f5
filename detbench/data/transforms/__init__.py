"""Joint image/target transforms and the builder from the INPUT.* config keys."""

from .build import build_transforms
from .transforms import Compose, Normalize, RandomHorizontalFlip, Resize, ToTensor, get_size

__all__ = ["Compose", "Normalize", "RandomHorizontalFlip", "Resize", "ToTensor", "build_transforms", "get_size"]
