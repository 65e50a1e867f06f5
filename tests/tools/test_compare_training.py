"""tools/compare_training.py and its torchvision twin: the same schedule, one training step of each
library, torchvision's trained weights giving torchvision's detections in detbench, the tables.

The full comparison (hundreds of iterations) is not run here: docs/ACCURACY.md has its numbers.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from detbench.config import load_config
from detbench.data.transforms import build_transforms
from detbench.modeling.detector import build_detection_model
from detbench.solver import make_lr_scheduler
from detbench.structures import BoxList, SegmentationMask
from detbench.utils.checkpoint import Checkpointer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "compare" / "mask_rcnn_R_18_GN_FPN_pennfudan.yaml"
PENN_FUDAN = ROOT.parent / "shared" / "data" / "PennFudanPed"
TINY = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "96", "MODEL.RPN.PRE_NMS_TOP_N_TRAIN", "200", "MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN", "200",
        "MODEL.RPN.PRE_NMS_TOP_N_TEST", "100", "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST", "100"]

pytestmark = pytest.mark.usefixtures("native_cpu_convolutions")  # see tests/conftest.py


def _load(name: str):
    if name not in sys.modules:
        sys.path.insert(0, str(ROOT / "tools"))
        spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


class _TwoImages(torch.utils.data.Dataset):
    """Two 120 x 90 photos-to-be, one pedestrian-like rectangle each: (PIL image, BoxList, index)."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        g = torch.Generator().manual_seed(index)
        pixels = (torch.rand(90, 120, 3, generator=g) * 255).to(torch.uint8)
        masks = torch.zeros(1, 90, 120, dtype=torch.uint8)
        masks[0, 10 + index:80, 30:60 + 10 * index] = 1
        pixels[masks[0].bool()] = 200
        target = BoxList(torch.tensor([[30.0, 10.0 + index, 60.0 + 10 * index, 80.0]]), (120, 90))
        target.add_field("labels", torch.tensor([1]))
        target.add_field("masks", SegmentationMask(masks, (120, 90), mode="mask"))
        return Image.fromarray(pixels.numpy()), target, index


def test_both_sides_have_the_same_learning_rates():
    cfg = load_config(CONFIG, TINY)
    twin = _load("torchvision_twin")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    scheduler = make_lr_scheduler(cfg, optimizer)
    for iteration in range(cfg.SOLVER.MAX_ITER):
        expected = cfg.SOLVER.BASE_LR * twin.warmup_multistep(
            iteration, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR, cfg.SOLVER.STEPS, cfg.SOLVER.GAMMA)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12), iteration
        optimizer.step()
        scheduler.step()


def test_one_torchvision_step_then_the_same_detections_in_detbench(tmp_path):
    """The tutorial loop trains the twin one step; its weights, loaded into detbench through
    MODEL.WEIGHT with INPUT.RESIZE_MODE "torchvision", give torchvision's detections on an image
    that both resize (120 x 90 -> 85 x 64)."""
    cfg = load_config(CONFIG, [*TINY, "SOLVER.IMS_PER_BATCH", "2"])
    twin = _load("torchvision_twin")
    torch.manual_seed(0)
    model = twin.build_twin(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seconds = twin.train(model, twin.TwinDataset(_TwoImages(), flip_prob=0.5), cfg, 1, log=lambda line: None)
    assert seconds > 0
    assert not torch.equal(before["roi_heads.box_predictor.cls_score.weight"],
                           model.state_dict()["roi_heads.box_predictor.cls_score.weight"])
    with torch.no_grad():  # a confident classifier, so that detections pass the score threshold
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-3.0, 3.0]))
    torch.save(model.state_dict(), tmp_path / "tv.pth")
    theirs = twin.predict(model, _TwoImages())[1]

    cfg = load_config(CONFIG, [*TINY, "MODEL.WEIGHT", str(tmp_path / "tv.pth"), "INPUT.RESIZE_MODE", "torchvision"])
    db_model = build_detection_model(cfg)
    Checkpointer(db_model).load(cfg.MODEL.WEIGHT)
    image, _ = build_transforms(cfg, is_train=False)(_TwoImages()[1][0])
    assert image.shape == (3, 64, 85)
    with torch.no_grad():
        mine = db_model.eval()([image])[0].resize((120, 90))
    assert len(theirs) > 10 and len(mine) == len(theirs)
    assert_close(mine.bbox, theirs.bbox, atol=1e-3, rtol=0)
    assert_close(mine.get_field("scores"), theirs.get_field("scores"), atol=1e-5, rtol=1e-4)


def test_tables_have_ratios_and_differences():
    tool = _load("compare_training")
    tv = {"bbox": {"AP": 0.4, "AP50": 0.8, "AP75": 0.2}, "segm": {"AP": 0.3, "AP50": 0.6, "AP75": 0.0}}
    db = {"bbox": {"AP": 0.5, "AP50": 0.8, "AP75": 0.1}, "segm": {"AP": 0.3, "AP50": 0.9, "AP75": 0.1}}
    side, check = tool.tables(tv, db, {"torchvision": tv}, tv_time=2.0, db_time=1.5)
    ratio = side.splitlines()[-1].split()
    assert ratio[:3] == ["detbench", "/", "torchvision"]
    assert ratio[3:] == ["1.250", "1.000", "0.500", "1.000", "1.500", "nan", "0.750"]
    assert check.splitlines()[-1].split()[1:] == ["0.0000"] * 6


@pytest.mark.skipif(not (PENN_FUDAN / "PNGImages").is_dir(), reason="needs ../shared/data/PennFudanPed")
def test_detbench_side_is_train_net_from_the_yaml(tmp_path, monkeypatch):
    """One iteration of tools/train_net.py as the script starts it; its log gives the time per iteration."""
    monkeypatch.setenv("DETBENCH_DATASETS", str(PENN_FUDAN.parent))
    tool = _load("compare_training")
    cfg = tool.load_cfg(CONFIG, tmp_path, 1, TINY)
    tool.run_children({"detbench": tool.detbench_command(CONFIG, cfg, TINY)}, 1, True, tmp_path)
    assert (Path(cfg.OUTPUT_DIR) / "model_final.pth").is_file()
    assert tool.detbench_seconds_per_iter(Path(cfg.OUTPUT_DIR) / "log.txt") > 0
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(RuntimeError, match="no 'Total training time'"):
        tool.detbench_seconds_per_iter(tmp_path / "empty.txt")
