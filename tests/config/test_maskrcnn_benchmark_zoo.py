"""Every maskrcnn-benchmark YAML file loads through load_config, builds and runs inference.

The files under maskrcnn_benchmark_configs/ are maskrcnn-benchmark's own (see the README
there), kept unmodified: they are user input detbench must accept as it is. Each non-FBNet
file is loaded with only these overrides: MODEL.DEVICE cpu, MODEL.WEIGHT "" (their
"catalog://" weights cannot be fetched here, so the models are randomly initialised) and
INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST 32 / 48, so that one small image goes through the test
transforms and the model in eval mode. Files whose MODEL section is the same share one built
model (the test order groups them), which keeps the file fast. FBNet is the one feature of
maskrcnn-benchmark's zoo detbench does not have: its files must fail with a message naming it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from detbench.config import ConfigError, load_config
from detbench.data import catalog
from detbench.data.transforms.build import build_transforms
from detbench.modeling.detector import build_detection_model
from detbench.structures.bounding_box import BoxList

ROOT = Path(__file__).resolve().parent / "maskrcnn_benchmark_configs"
FILES = sorted(ROOT.rglob("*.yaml"))
FBNET = [p for p in FILES if "fbnet" in p.name]
OVERRIDES = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", "", "INPUT.MIN_SIZE_TEST", "32", "INPUT.MAX_SIZE_TEST", "48"]
# oneDNN stays on here (unlike tests/modeling): its start-up cost per model is smaller than
# what it saves on the RoI heads (R-50-C4 inference: 2.9 s against 7.8 s CPU, measured busy).


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _model_key(path: Path) -> str:
    """The file's MODEL section as loaded (files with the same key build the same model), or the
    path for a file that does not load, so that its failure is reported on its own test."""
    try:
        return load_config(path, OVERRIDES).MODEL.dump()
    except ConfigError:
        return _name(path)


def _ordered_by_model() -> list[Path]:
    """The non-FBNet files with those sharing a model next to each other (then by name)."""
    keys = {p: _model_key(p) for p in FILES if p not in FBNET}
    return sorted(keys, key=lambda p: (keys[p], _name(p)))


ZOO = _ordered_by_model()
_last_model: dict[str, torch.nn.Module] = {}  # one entry: the model of the previous file


def test_the_zoo_is_complete():
    """66 files, as in maskrcnn-benchmark's configs/ (7 of them FBNet)."""
    assert len(FILES) == 66 and len(FBNET) == 7


def _model_for(cfg) -> torch.nn.Module:
    key = cfg.MODEL.dump()
    if key not in _last_model:
        _last_model.clear()  # free the previous model before building the next one
        torch.manual_seed(0)
        _last_model[key] = build_detection_model(cfg).eval()
    return _last_model[key]


@pytest.mark.parametrize("path", ZOO, ids=[_name(p) for p in ZOO])
def test_loads_builds_and_runs_inference(path):
    cfg = load_config(path, OVERRIDES)
    model = _model_for(cfg)
    image = Image.new("RGB", (120, 80), color=(90, 120, 150))
    tensor, _ = build_transforms(cfg, is_train=False)(image, None)
    assert max(tensor.shape[-2:]) <= 48 and min(tensor.shape[-2:]) <= 32  # the test resize ran
    with torch.no_grad():
        (result,) = model([tensor])
    assert isinstance(result, BoxList) and result.bbox.shape[1] == 4
    assert result.size == (tensor.shape[-1], tensor.shape[-2])
    if not cfg.MODEL.RPN_ONLY:
        assert result.has_field("scores") and result.has_field("labels")


@pytest.mark.parametrize("path", FBNET, ids=[_name(p) for p in FBNET])
def test_fbnet_files_are_refused_naming_fbnet(path):
    with pytest.raises(ConfigError, match=rf"{path.name}: MODEL\.FBNET belongs to FBNet backbones"):
        load_config(path, OVERRIDES)


def _dataset_names() -> list[str]:
    """Every DATASETS.TRAIN / TEST name of the 66 files, read from the YAML text itself (the
    FBNet files do not load, but their dataset names must still be known). The files write the
    tuples as Python literals in strings, which yacs (and detbench's loader) evaluate."""
    names = set()
    for path in FILES:
        datasets = (yaml.safe_load(path.read_text()) or {}).get("DATASETS", {})
        for split in ("TRAIN", "TEST"):
            value = datasets.get(split, ())
            names.update(ast.literal_eval(value) if isinstance(value, str) else value)
    return sorted(names)


@pytest.mark.parametrize("name", _dataset_names())
def test_dataset_name_is_in_the_catalog(name):
    assert name in catalog.known_names(), f"{name} is not in detbench.data.catalog"
