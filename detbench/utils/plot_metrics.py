"""Training curves from ``OUTPUT_DIR/metrics.jsonl`` as one PNG of small line charts (matplotlib).

metrics.jsonl (written by the trainer) holds one JSON object per line: training records
``{"iteration", "loss", "loss_<term>"..., "lr", "time", ...}`` every LOG_PERIOD, and
evaluation records ``{"iteration": i, "eval": {dataset: {iou_type: {metric: value}}}}``.
:func:`plot_metrics` draws one panel per loss term (total loss first), one for the learning
rate and one per (dataset, iou type) with a line per metric (AP, AP50, ...).
matplotlib is imported only when a chart is drawn, with its non-interactive Agg canvas
(no display needed, no pyplot state).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

Series = dict[str, list[tuple[float, float]]]  # line name -> (iteration, value) points

PANEL_SIZE = (400, 270)  # (width, height) of one chart, pixels
DPI = 100
COLUMNS = 3


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


def _draw_panel(ax, title: str, series: Series, smoothed: bool) -> None:
    """One line chart of ``series`` on the matplotlib axes ``ax``; a legend when there are several
    lines. With ``smoothed`` (and enough points) a line is drawn faint with its moving average on
    top; few points (evaluations) are marked."""
    from matplotlib.ticker import MaxNLocator

    for i, (name, points) in enumerate(series.items()):
        colour = f"C{i % 10}"
        xs, ys = zip(*sorted(points))
        if smoothed and len(points) >= 10:
            ax.plot(xs, ys, color=colour, alpha=0.3, linewidth=1)
            ys = smooth(list(ys), max(3, len(points) // 15))
        ax.plot(xs, ys, color=colour, linewidth=1.8, label=name, marker="o" if len(points) <= 20 else None,
                markersize=3)
    ax.set_title(title, fontsize=10)  # centred: the y axis' "1e-5" multiplier sits top left
    ax.set_xlabel("iteration", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations are whole numbers
    steps = {x for points in series.values() for x, _ in points}
    if len(steps) == 1:  # one evaluation: a range of whole iterations around it
        ax.set_xlim(min(steps) - 1, min(steps) + 1)
    ax.tick_params(labelsize=8)
    ax.grid(True, color="0.9")
    if len(series) > 1:
        ax.legend(fontsize=7, loc="best", frameon=False)


def plot_metrics(output_dir: str | Path, output: str | Path | None = None) -> Path:
    """Read ``output_dir/metrics.jsonl`` and write its charts to ``output`` (default
    ``output_dir/training_curves.png``); returns the PNG's path. The image is
    ``min(panels, COLUMNS) * PANEL_SIZE[0]`` by ``rows * PANEL_SIZE[1]`` pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = Path(output_dir) / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"no metrics file {metrics} (detbench-train writes it into OUTPUT_DIR)")
    panels = collect_panels(read_metrics(metrics))
    if not panels:
        raise ValueError(f"{metrics} holds no loss, learning-rate or evaluation values to plot")
    rows, columns = math.ceil(len(panels) / COLUMNS), min(len(panels), COLUMNS)
    figure = Figure(figsize=(columns * PANEL_SIZE[0] / DPI, rows * PANEL_SIZE[1] / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    for i, (title, series) in enumerate(panels.items()):
        _draw_panel(figure.add_subplot(rows, columns, i + 1), title, series, smoothed=title.startswith("loss"))
    figure.tight_layout(pad=0.6)
    output = Path(output) if output is not None else Path(output_dir) / "training_curves.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, format="png", dpi=DPI)
    return output
