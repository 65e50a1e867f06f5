"""Config system: yacs nodes with maskrcnn-benchmark's key names.

``cfg`` is maskrcnn-benchmark's global node (``from detbench.config import cfg``), a copy of the
defaults made at import: changing it never changes what :func:`get_cfg` returns.
"""

from .defaults import get_cfg
from .loader import ConfigError, load_config, merge_from_file, merge_from_list
from .node import CfgNode
from .validate import validate_config

cfg = get_cfg()

__all__ = ["CfgNode", "ConfigError", "cfg", "get_cfg", "load_config", "merge_from_file", "merge_from_list",
           "validate_config"]
