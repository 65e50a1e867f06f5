"""The shipped recipes say what their comments say."""

from __future__ import annotations

from pathlib import Path

from detbench.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _flat(node, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        if hasattr(value, "items"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_pennfudan_finetune_is_torchvisions_model_with_two_classes():
    tuned = _flat(load_config(CONFIGS / "pennfudan" / "mask_rcnn_R_50_FPN_finetune.yaml"))
    original = _flat(load_config(CONFIGS / "torchvision" / "maskrcnn_resnet50_fpn.yaml"))
    differ = {k for k in original if k.startswith(("MODEL.", "INPUT.")) and tuned[k] != original[k]}
    assert differ == {"MODEL.ROI_BOX_HEAD.NUM_CLASSES"}
    assert tuned["MODEL.ROI_BOX_HEAD.NUM_CLASSES"] == 2
    assert tuned["MODEL.WEIGHT"] == "torchvision://maskrcnn_resnet50_fpn_coco"
    # The tutorial's schedule: 10 epochs of 120 images at 2 per batch, lr / 10 every 3 epochs.
    epoch = 120 // tuned["SOLVER.IMS_PER_BATCH"]
    assert tuned["SOLVER.MAX_ITER"] == 10 * epoch
    assert tuned["SOLVER.STEPS"] == (3 * epoch, 6 * epoch, 9 * epoch)
    assert tuned["DATASETS.PENN_FUDAN_NUM_TEST"] == 50


def test_from_scratch_recipes_load_no_weights_and_freeze_nothing():
    for name in ("quickstart/mask_rcnn_R_18_FPN_shapes.yaml", "pennfudan/mask_rcnn_R_18_FPN_scratch.yaml"):
        cfg = load_config(CONFIGS / name)
        assert cfg.MODEL.WEIGHT == "" and cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT == 0, name
        assert cfg.MODEL.RESNETS.TRANS_FUNC == "BasicBlockWithGN" and cfg.MODEL.FPN.USE_GN, name
