"""Config system: yacs nodes with maskrcnn-benchmark's key names."""

from .defaults import get_cfg
from .loader import ConfigError, load_config, merge_from_file, merge_from_list
from .validate import validate_config

__all__ = ["ConfigError", "get_cfg", "load_config", "merge_from_file", "merge_from_list", "validate_config"]
