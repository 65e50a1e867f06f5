"""``predictions.pth``: a test set's predictions, readable with ``torch.load(weights_only=True)``.

Layout: ``{"format": FORMAT, "dataset": name, "predictions": {dataset index: stored BoxList}}``
(see :mod:`detbench.structures.boxlist_io`), in the original image sizes, sorted by index.
``tools/test_net.py --from-predictions`` evaluates such a file again without the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from detbench.structures import BoxList
from detbench.structures.boxlist_io import boxlist_from_dict, boxlist_to_dict
from detbench.utils.checkpoint import atomic_write

FORMAT = "detbench.predictions.v1"
FILENAME = "predictions.pth"


def save_predictions(path: str | Path, predictions: Mapping[int, BoxList], dataset_name: str = "") -> None:
    """Write ``predictions`` ({dataset index: BoxList}) to ``path`` (atomically)."""
    data = {"format": FORMAT, "dataset": dataset_name,
            "predictions": {int(i): boxlist_to_dict(p) for i, p in sorted(predictions.items())}}
    atomic_write(Path(path), lambda f: torch.save(data, f))


def load_predictions(path: str | Path) -> dict[int, BoxList]:
    """{dataset index: BoxList} from a file :func:`save_predictions` wrote; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file {path} does not exist (run tools/test_net.py with the model first)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for files that are not its format
        raise ValueError(f"{path} cannot be read with torch.load(weights_only=True): {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} is not a detbench predictions file (format {found!r}, expected {FORMAT!r})")
    try:
        return {int(i): boxlist_from_dict(p) for i, p in data["predictions"].items()}
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def evaluate_saved_predictions(cfg) -> dict:
    """Evaluate ``OUTPUT_DIR/inference/<name>/predictions.pth`` of every DATASETS.TEST name on
    its dataset again, without the model; results by dataset name (main process only)."""
    from detbench.data import build_dataset, dataset_names
    from detbench.data.datasets.evaluation import evaluate
    from detbench.engine.launch import iou_types
    from detbench.utils import comm

    if not comm.is_main_process():
        return {}
    names = dataset_names(cfg, is_train=False)
    if not names:
        raise ValueError("DATASETS.TEST is empty: name the test sets whose predictions to evaluate")
    results = {}
    for name in names:
        folder = Path(cfg.OUTPUT_DIR) / "inference" / name
        predictions = load_predictions(folder / FILENAME)
        dataset = build_dataset(cfg, name, is_train=False)
        aligned = cfg.MODEL.MASK_ON and cfg.MODEL.ROI_MASK_HEAD.ALIGNED_MASKS
        results[name] = evaluate(dataset, predictions, folder, iou_types(cfg), masks_aligned=aligned)
    return results
