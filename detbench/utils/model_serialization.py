"""maskrcnn-benchmark's ``load_state_dict``: weights matched to the model by key suffix, logged.

A checkpoint saved from a part of a model (a backbone's ``body.layer1.0.conv1.weight``) or
under another prefix (``module.``, ``model.``) loads into the whole model: each model key takes
the checkpoint key that is its longest dot-aligned suffix (``backbone.body.layer1.0.conv1.weight``
<- ``body.layer1.0.conv1.weight``). Unlike maskrcnn-benchmark, a suffix must start at a dot (so
``conv1.weight`` never matches ``bn_conv1.weight``), and a match with another shape is skipped
with a warning instead of failing the whole load.
"""

from __future__ import annotations

import logging
from typing import Mapping

import torch
from torch import nn

logger = logging.getLogger(__name__)


def _is_suffix(model_key: str, ckpt_key: str) -> bool:
    return model_key == ckpt_key or model_key.endswith("." + ckpt_key)


def align_and_update_state_dicts(model_state_dict: dict[str, torch.Tensor],
                                 loaded_state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Copy into ``model_state_dict`` (in place) every entry of ``loaded_state_dict`` whose key is
    the longest dot-aligned suffix of a model key and whose shape matches; returns
    {model key: checkpoint key} of what was copied. Each copy is logged at INFO, skips at WARNING."""
    loaded = strip_prefix_if_present(dict(loaded_state_dict), "module.")
    matched: dict[str, str] = {}
    width = max((len(k) for k in model_state_dict), default=0)
    for model_key in sorted(model_state_dict):
        candidates = [k for k in loaded if _is_suffix(model_key, k)]
        if not candidates:
            continue
        ckpt_key = max(candidates, key=len)  # the most specific match
        value = loaded[ckpt_key]
        if tuple(value.shape) != tuple(model_state_dict[model_key].shape):
            logger.warning("Skipped %s: %s in the checkpoint is %s, the model's is %s", model_key, ckpt_key,
                           tuple(value.shape), tuple(model_state_dict[model_key].shape))
            continue
        model_state_dict[model_key] = value
        matched[model_key] = ckpt_key
        logger.info("%-*s loaded from %s of shape %s", width, model_key, ckpt_key, tuple(value.shape))
    unused = sorted(set(loaded) - set(matched.values()))
    if unused:
        logger.warning("%d checkpoint entries matched no model key: %s", len(unused), ", ".join(unused))
    return matched


def strip_prefix_if_present(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """``state_dict`` without ``prefix`` when every key starts with it."""
    if not state_dict or not all(key.startswith(prefix) for key in state_dict):
        return state_dict
    return {key[len(prefix):]: value for key, value in state_dict.items()}


def load_state_dict(model: nn.Module, loaded_state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Load ``loaded_state_dict`` into ``model`` by suffix matching (see the module docstring);
    keys left unmatched keep their values. Returns {model key: checkpoint key} of what was loaded."""
    model_state_dict = model.state_dict()
    matched = align_and_update_state_dicts(model_state_dict, loaded_state_dict)
    model.load_state_dict(model_state_dict)
    return matched
