"""Smoothed training metrics: a window median for the log, the global mean for the ETA."""

from __future__ import annotations

import statistics
from collections import defaultdict, deque

import torch


class SmoothedValue:
    """A stream of numbers with statistics over the last ``window_size`` values and over all of them.

    The statistics are maskrcnn-benchmark's: ``median`` and ``avg`` of the window, ``global_avg``
    of everything; its ``deque`` (the window) and ``total`` / ``count`` attributes are here too.
    """

    def __init__(self, window_size: int = 20) -> None:
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        self.window: deque[float] = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0

    def update(self, value: float) -> None:
        self.window.append(value)
        self.total += value
        self.count += 1

    @property
    def value(self) -> float:
        """The latest value."""
        return self.window[-1]

    @property
    def deque(self) -> deque[float]:
        """The window (maskrcnn-benchmark's attribute name)."""
        return self.window

    @property
    def median(self) -> float:
        """Median of the window; for an even count the lower of the two middle values, as
        ``torch.median`` (maskrcnn-benchmark's definition) gives it."""
        return statistics.median_low(self.window)

    @property
    def avg(self) -> float:
        """Mean of the window."""
        return sum(self.window) / len(self.window)

    @property
    def global_avg(self) -> float:
        """Mean of every value seen."""
        return self.total / self.count


def _as_float(name: str, value: float | int | torch.Tensor) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"MetricLogger: {name} must be a scalar, got shape {tuple(value.shape)}")
        return float(value.item())
    if not isinstance(value, (float, int)):
        raise TypeError(f"MetricLogger: {name} must be a number or a scalar tensor, got {type(value).__name__}")
    return float(value)


class MetricLogger:
    """Named :class:`SmoothedValue` meters; ``str()`` gives ``name: median (global_avg)`` pairs.

    Meters are created on first update and kept in insertion order; a meter is
    also reachable as an attribute (``meters.time.global_avg``).
    """

    def __init__(self, delimiter: str = "\t", window_size: int = 20) -> None:
        self.meters: dict[str, SmoothedValue] = defaultdict(lambda: SmoothedValue(window_size))
        self.delimiter = delimiter

    def update(self, **values: float | int | torch.Tensor) -> None:
        # Convert everything first, so that a bad value leaves every meter unchanged.
        floats = {name: _as_float(name, value) for name, value in values.items()}
        for name, value in floats.items():
            self.meters[name].update(value)

    def __getattr__(self, name: str) -> SmoothedValue:
        # Only called when normal lookup fails; "meters" itself is looked up normally.
        meters = self.__dict__.get("meters", {})
        if name in meters:
            return meters[name]
        raise AttributeError(f"MetricLogger has no meter {name!r}; known: {', '.join(meters) or 'none'}")

    def __str__(self) -> str:
        return self.delimiter.join(
            f"{name}: {meter.median:.4f} ({meter.global_avg:.4f})" for name, meter in self.meters.items()
        )
