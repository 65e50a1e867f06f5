"""Config system: yacs nodes with maskrcnn-benchmark's key names."""

from .defaults import get_cfg

__all__ = ["get_cfg"]
