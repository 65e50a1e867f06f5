"""Training curves from ``OUTPUT_DIR/metrics.jsonl`` as one PNG of small line charts (Pillow only).

metrics.jsonl (written by the trainer) holds one JSON object per line: training records
``{"iteration", "loss", "loss_<term>"..., "lr", "time", ...}`` every LOG_PERIOD, and
evaluation records ``{"iteration": i, "eval": {dataset: {iou_type: {metric: value}}}}``.
:func:`plot_metrics` draws one panel per loss term (total loss first), one for the learning
rate and one per (dataset, iou type) with a line per metric (AP, AP50, ...).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from PIL import Image, ImageDraw, ImageFont

from detbench.utils.visualizer import load_font

Series = dict[str, list[tuple[float, float]]]  # line name -> (iteration, value) points

PANEL_SIZE = (360, 240)  # (width, height) of one chart, pixels
COLUMNS = 3
LINE_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                (140, 86, 75), (227, 119, 194), (127, 127, 127))
_MARGIN = (52, 26, 12, 24)  # left, top, right, bottom space around the plot area, pixels


def read_metrics(path: str | Path) -> list[dict]:
    """The JSON objects of ``path``, one per line; a line that is not a JSON object (a
    truncated last line after a crash) is skipped with a RuntimeWarning naming file and line."""
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                warnings.warn(f"{path}:{number}: skipped, not valid JSON ({exc.msg})", RuntimeWarning, stacklevel=2)
                continue
            if not isinstance(record, dict) or not isinstance(record.get("iteration"), (int, float)):
                warnings.warn(f"{path}:{number}: skipped, not an object with an 'iteration'", RuntimeWarning,
                              stacklevel=2)
                continue
            records.append(record)
    return records


def _number(value: Any) -> float | None:
    """A finite float, else None (null, NaN, inf, strings; COCO's -1 'no ground truth' too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _leaves(tree: Any, prefix: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], Any]]:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from _leaves(value, (*prefix, str(key)))
    else:
        yield prefix, tree


def collect_panels(records: Iterable[dict]) -> dict[str, Series]:
    """Panel title -> its lines: "loss", each "loss_*" term, "lr", then one panel per
    evaluation group (e.g. "shapes_val bbox") with a line per metric (negative values,
    COCO's "no ground truth", and non-finite ones are left out)."""
    train: dict[str, Series] = {}
    evals: dict[str, Series] = {}
    for record in records:
        it = float(record["iteration"])
        for key, value in record.items():
            if key == "eval" or not (key.startswith("loss") or key == "lr"):
                continue
            if (y := _number(value)) is not None:
                train.setdefault(key, {}).setdefault(key, []).append((it, y))
        for path, value in _leaves(record.get("eval", {})):
            y = _number(value)
            if y is not None and y >= 0 and path:
                title = " ".join(path[:-1]) or "eval"
                evals.setdefault(title, {}).setdefault(path[-1], []).append((it, 100 * y))  # fractions -> %
    order = sorted(train, key=lambda k: (k != "loss", k == "lr", k))  # total loss first, lr last
    return {**{k: train[k] for k in order}, **{f"{k} (%)": v for k, v in evals.items()}}


def nice_ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values in [low, high]: the finest step of 1, 2, 5 or 10 times a power of
    ten that gives at most ``count + 1`` ticks (a step of at least 1 when ``integer``)."""
    if not high > low:
        return [low]
    power = 10 ** math.floor(math.log10((high - low) / max(count, 1)))
    if integer:
        power = max(power, 1)
    for step in (power, 2 * power, 5 * power, 10 * power, 20 * power):
        first = math.ceil(low / step - 1e-9) * step  # the 1e-9 keeps a tick that sits on ``low``
        ticks = [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]
        if len(ticks) <= count + 1:
            break
    return ticks


def _tick_label(value: float, step: float) -> str:
    if abs(value) >= 10000 and value % 1000 == 0:
        return f"{value / 1000:g}k"
    digits = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    return f"{value:.{digits}f}" if digits <= 6 else f"{value:.1e}"


def smooth(values: list[float], window: int) -> list[float]:
    """Centred moving average over ``window`` points (fewer at the ends), so no lag."""
    half = window // 2
    prefix = [0.0]
    for v in values:
        prefix.append(prefix[-1] + v)
    out = []
    for i in range(len(values)):
        a, b = max(i - half, 0), min(i + half + 1, len(values))
        out.append((prefix[b] - prefix[a]) / (b - a))
    return out


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font: ImageFont.ImageFont,
          fill: tuple, anchor: str) -> None:
    """``text`` placed by ``anchor``: horizontal l/m/r then vertical t/m (Pillow's anchors need
    a FreeType font, and Pillow < 10.1 has only a bitmap default font)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    dx = {"l": 0, "m": (right - left) / 2, "r": right - left}[anchor[0]] + left
    dy = {"t": 0, "m": (bottom - top) / 2}[anchor[1]] + top
    draw.text((xy[0] - dx, xy[1] - dy), text, fill=fill, font=font)


def _range(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high == low:  # a flat line: give it some room
        pad = abs(low) * 0.1 or 1.0
        return low - pad, high + pad
    return low, high


def _axes(draw: ImageDraw.ImageDraw, area: tuple[float, float, float, float], x_range: tuple[float, float],
          y_range: tuple[float, float], font: ImageFont.ImageFont) -> None:
    """Grid lines and tick labels of the plot ``area`` (left, top, right, bottom), then its frame."""
    left, top, right, bottom = area
    for axis, (low, high) in (("x", x_range), ("y", y_range)):
        ticks = nice_ticks(low, high, 5, integer=True) if axis == "x" else nice_ticks(low, high, 4)
        step = ticks[1] - ticks[0] if len(ticks) > 1 else abs(low) or 1.0
        for t in ticks:
            label = _tick_label(t, step)
            if axis == "x":
                px = left + (t - low) / (high - low) * (right - left)
                draw.line((px, top, px, bottom), fill=(228, 228, 228))
                _text(draw, (px, bottom + 4), label, font, (80, 80, 80), "mt")
            else:
                py = bottom - (t - low) / (high - low) * (bottom - top)
                draw.line((left, py, right, py), fill=(228, 228, 228))
                _text(draw, (left - 4, py), label, font, (80, 80, 80), "rm")
    draw.rectangle((left, top, right, bottom), outline=(90, 90, 90))


def draw_panel(image: Image.Image, origin: tuple[int, int], title: str, series: Series,
               font: ImageFont.ImageFont, smoothed: bool = False) -> None:
    """One line chart of ``series`` in the PANEL_SIZE box at ``origin`` (top-left) of ``image``:
    the title top-left, a legend top-right when there are several lines. With ``smoothed``
    (and enough points) a line is drawn faint with its moving average on top."""
    draw = ImageDraw.Draw(image)
    area = (origin[0] + _MARGIN[0], origin[1] + _MARGIN[1],
            origin[0] + PANEL_SIZE[0] - _MARGIN[2], origin[1] + PANEL_SIZE[1] - _MARGIN[3])
    left, top, right, bottom = area
    _text(draw, (left, origin[1] + 6), title, font, (0, 0, 0), "lt")
    (x0, x1) = _range([x for points in series.values() for x, _ in points])
    (y0, y1) = _range([y for points in series.values() for _, y in points])
    y0, y1 = y0 - 0.05 * (y1 - y0), y1 + 0.05 * (y1 - y0)  # keep lines off the frame
    _axes(draw, area, (x0, x1), (y0, y1), font)

    def to_px(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)

    legend_x = right
    for i, (name, points) in reversed(list(enumerate(series.items()))):  # legend laid out right to left
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        points = sorted(points)
        pixels = [to_px(x, y) for x, y in points]
        if smoothed and len(points) >= 10:
            draw.line(pixels, fill=tuple(255 - (255 - c) // 3 for c in colour), width=1)  # a third of the colour
            averaged = smooth([y for _, y in points], max(3, len(points) // 15))
            pixels = [to_px(x, y) for (x, _), y in zip(points, averaged)]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        if len(pixels) <= 20:  # few points (evaluations): mark each
            for px, py in pixels:
                draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=colour)
        if len(series) > 1:
            _text(draw, (legend_x, origin[1] + 6), name, font, colour, "rt")
            legend_x -= draw.textlength(name, font=font) + 8


def plot_metrics(output_dir: str | Path, output: str | Path | None = None) -> Path:
    """Read ``output_dir/metrics.jsonl`` and write its charts to ``output`` (default
    ``output_dir/training_curves.png``); returns the PNG's path."""
    metrics = Path(output_dir) / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"no metrics file {metrics} (train_net.py writes it into OUTPUT_DIR)")
    panels = collect_panels(read_metrics(metrics))
    if not panels:
        raise ValueError(f"{metrics} holds no loss, learning-rate or evaluation values to plot")
    rows = math.ceil(len(panels) / COLUMNS)
    columns = min(len(panels), COLUMNS)
    image = Image.new("RGB", (columns * PANEL_SIZE[0], rows * PANEL_SIZE[1]), (255, 255, 255))
    font = load_font(11)
    for i, (title, series) in enumerate(panels.items()):
        origin = ((i % COLUMNS) * PANEL_SIZE[0], (i // COLUMNS) * PANEL_SIZE[1])
        draw_panel(image, origin, title, series, font, smoothed=title.startswith("loss"))
    output = Path(output) if output is not None else Path(output_dir) / "training_curves.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    image.save(output, format="PNG")
    return output
