"""An exponential moving average (EMA) of a model's weights, for evaluation and checkpoints."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from yacs.config import CfgNode


class ModelEMA:
    """``ema <- d_t * ema + (1 - d_t) * weight`` after every optimizer step, for every
    floating-point parameter and buffer; other buffers (counters) are copied.

    ``d_t = decay * (1 - exp(-t / ramp_iters))`` at update ``t`` (1, 2, ...): early updates
    follow the fast-changing weights closely, later ones average over about 1 / (1 - decay)
    steps; ``ramp_iters = 0`` uses ``decay`` from the start. The averages are kept in float32
    on the model's device (half-precision weights would lose the small increments).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, ramp_iters: int = 2000) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if ramp_iters < 0:
            raise ValueError(f"EMA ramp_iters must be >= 0, got {ramp_iters}")
        self.decay, self.ramp_iters, self.updates = decay, ramp_iters, 0
        self.state = {k: self._copy(v) for k, v in model.state_dict().items()}

    @staticmethod
    def _copy(value: torch.Tensor) -> torch.Tensor:
        value = value.detach()
        return value.float().clone() if value.is_floating_point() else value.clone()

    def current_decay(self) -> float:
        """d_t of the next update."""
        t = self.updates + 1
        return self.decay * (1 - math.exp(-t / self.ramp_iters)) if self.ramp_iters > 0 else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (call after optimizer.step())."""
        d = self.current_decay()
        self.updates += 1
        for key, value in model.state_dict().items():
            avg = self.state[key]
            if avg.is_floating_point():
                avg.mul_(d).add_(value.detach().float(), alpha=1 - d)
            else:
                avg.copy_(value)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (cast to its dtypes), for good."""
        own = model.state_dict()
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in self.state.items()})

    @contextmanager
    def swapped_into(self, model: nn.Module) -> Iterator[nn.Module]:
        """Inside the block ``model`` holds the averaged weights (cast to its dtypes); its own
        weights are put back on exit, also when the block raises."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            model.load_state_dict(own)

    def state_dict(self) -> dict:
        """Tensors and numbers only: loadable with ``torch.load(weights_only=True)``."""
        return {"state": dict(self.state), "updates": self.updates, "decay": self.decay, "ramp_iters": self.ramp_iters}

    def load_state_dict(self, saved: dict) -> None:
        """Restore a :meth:`state_dict` (a resumed run continues the same average)."""
        missing = set(self.state) ^ set(saved["state"])
        if missing:
            raise KeyError(f"EMA state does not match the model; differing keys: {sorted(missing)[:5]}")
        for key, value in saved["state"].items():
            self.state[key].copy_(value)
        self.updates = int(saved["updates"])


def build_ema(cfg: CfgNode, model: nn.Module) -> ModelEMA | None:
    """ModelEMA from MODEL_EMA.{ENABLED, DECAY, RAMP_ITERS}; None when disabled."""
    e = cfg.MODEL_EMA
    return ModelEMA(model, e.DECAY, e.RAMP_ITERS) if e.ENABLED else None
