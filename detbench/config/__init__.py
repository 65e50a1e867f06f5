"""Config system: yacs nodes with maskrcnn-benchmark's key names."""

from .defaults import get_cfg
from .loader import ConfigError, load_config, merge_from_file, merge_from_list

__all__ = ["ConfigError", "get_cfg", "load_config", "merge_from_file", "merge_from_list"]
