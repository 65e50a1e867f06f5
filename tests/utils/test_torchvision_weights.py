"""torchvision weights: kind detection, key conversion for every model kind, torchvision:// names
(from a local hub cache, nothing downloaded) and the download path (a file:// URL)."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close
from torchvision import models
from torchvision.models import detection

from detbench.config import load_config
from detbench.modeling.detector import build_detection_model
from detbench.utils import torchvision_weights as tv
from detbench.utils.checkpoint import CheckpointError, Checkpointer, read_weights

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _meta_state_dict(build) -> dict[str, torch.Tensor]:
    """Keys and shapes of a model without allocating or initialising its weights."""
    with torch.device("meta"):
        return build().state_dict()


def _detbench_keys(config: str, *opts: str) -> dict[str, torch.Size]:
    cfg = load_config(CONFIGS / config, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", "", *opts])
    return {k: v.shape for k, v in _meta_state_dict(lambda: build_detection_model(cfg)).items()}


DETECTORS = {
    "fasterrcnn": (detection.fasterrcnn_resnet50_fpn, "torchvision/fasterrcnn_resnet50_fpn.yaml"),
    "maskrcnn": (detection.maskrcnn_resnet50_fpn, "torchvision/maskrcnn_resnet50_fpn.yaml"),
    "keypointrcnn": (detection.keypointrcnn_resnet50_fpn, "torchvision/keypointrcnn_resnet50_fpn.yaml"),
}


@pytest.mark.parametrize("kind", list(DETECTORS))
def test_detector_keys_map_one_to_one(kind):
    builder, config = DETECTORS[kind]
    theirs = _meta_state_dict(lambda: builder(weights=None, weights_backbone=None))
    assert tv.detect_kind(theirs) == kind
    converted, unknown = tv.convert(theirs)
    assert unknown == []
    # Every detbench tensor is filled, with the right shape; only BN's counters are dropped.
    assert {k: v.shape for k, v in converted.items()} == _detbench_keys(config)
    dropped = len(theirs) - len(converted)
    assert dropped == sum(k.endswith("num_batches_tracked") for k in theirs)


def _old_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The key names torchvision used before 0.13 (plain convs instead of Conv2dNormActivation)."""
    def rename(key: str) -> str:
        key = key.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        key = re.sub(r"fpn\.(inner|layer)_blocks\.(\d)\.0\.", r"fpn.\1_blocks.\2.", key)
        return re.sub(r"mask_head\.(\d)\.0\.", lambda m: f"mask_head.mask_fcn{int(m[1]) + 1}.", key)
    return {rename(k): v for k, v in state_dict.items()}


def test_old_torchvision_key_layout_converts_the_same():
    theirs = _meta_state_dict(lambda: detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None))
    old = _old_layout(theirs)
    assert "rpn.head.conv.weight" in old and "roi_heads.mask_head.mask_fcn4.bias" in old
    assert "backbone.fpn.inner_blocks.3.weight" in old
    new_converted, _ = tv.convert(theirs)
    old_converted, unknown = tv.convert(old)
    assert unknown == [] and old_converted.keys() == new_converted.keys()


# ResNet-18/34 have no YAML of their own: the R-50 FPN one with basic blocks and 64 res2 channels.
BASIC = ("MODEL.RESNETS.TRANS_FUNC", "BasicBlockWithFixedBatchNorm", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64")


@pytest.mark.parametrize("builder, config, name, opts", [
    (models.resnet18, "torchvision/fasterrcnn_resnet50_fpn.yaml", "resnet18",
     ("MODEL.BACKBONE.CONV_BODY", "R-18-FPN", *BASIC)),
    (models.resnet34, "torchvision/fasterrcnn_resnet50_fpn.yaml", "resnet34",
     ("MODEL.BACKBONE.CONV_BODY", "R-34-FPN", *BASIC)),
    (models.resnet50, "torchvision/fasterrcnn_resnet50_fpn.yaml", "resnet50", ()),
    (models.resnet101, "e2e_faster_rcnn_R_101_FPN_1x.yaml", "resnet101", ()),
    (models.resnet152, "e2e_mask_rcnn_R_152_FPN_1x.yaml", "resnet152", ()),
    (models.resnext101_32x8d, "e2e_faster_rcnn_X_101_32x8d_FPN_1x.yaml", "resnext101_32x8d", ()),
])
def test_imagenet_resnets_fill_the_body(builder, config, name, opts):
    theirs = _meta_state_dict(builder)
    assert tv.detect_kind(theirs) == "resnet"
    assert tv.describe(theirs) == f"{name} (ImageNet)"
    converted, unknown = tv.convert(theirs)
    assert unknown == [] and not any(k.startswith("fc.") or "num_batches" in k for k in converted)
    body = {k: v for k, v in _detbench_keys(config, *opts).items() if k.startswith("backbone.body.")}
    assert {k: v.shape for k, v in converted.items()} == body


def test_keypoint_head_convs_are_renumbered():
    theirs = _meta_state_dict(lambda: detection.keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None))
    converted, _ = tv.convert({k: torch.zeros(()) for k in theirs})
    # torchvision's Sequential (conv, relu) x 8: index 14 is the 8th conv.
    assert "roi_heads.keypoint.feature_extractor.conv_fcn8.weight" in converted
    assert "roi_heads.keypoint.feature_extractor.conv_fcn1.bias" in converted


def test_detbench_and_other_state_dicts_are_not_torchvision():
    ours = _meta_state_dict(lambda: build_detection_model(
        load_config(CONFIGS / "torchvision/maskrcnn_resnet50_fpn.yaml", ["MODEL.DEVICE", "cpu"])))
    assert tv.detect_kind(ours) is None
    assert tv.detect_kind({"weight": torch.zeros(1)}) is None
    with pytest.raises(tv.TorchvisionWeightsError, match="not a torchvision"):
        tv.convert({"weight": torch.zeros(1)})


def test_every_name_resolves_through_torchvision_enums():
    for name in tv.known_names():
        url = tv.url_of(f"torchvision://{name}")
        assert url.startswith("https://") and url.endswith(".pth")
        assert re.search(r"-[0-9a-f]{8,}\.pth$", url), "the hub checks this hash prefix"
    assert tv.url_of("torchvision://maskrcnn_resnet50_fpn_coco") == \
        detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1.url
    assert tv.url_of("resnet18") == models.ResNet18_Weights.IMAGENET1K_V1.url
    with pytest.raises(CheckpointError, match="known: .*fasterrcnn_resnet50_fpn_coco"):
        read_weights("torchvision://resnet26")


@pytest.mark.parametrize("name", ["catalog://ImageNetPretrained/MSRA/R-50", "https://example.com/model.pth"])
def test_other_schemes_are_refused(name):
    with pytest.raises(CheckpointError, match="not supported.*torchvision://"):
        read_weights(name)


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache in a temporary TORCH_HOME; returns its checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # get_dir() follows TORCH_HOME again
    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def test_torchvision_name_loads_from_the_hub_cache(hub, caplog):
    """torchvision://resnet50 with the file already cached: converted and loaded into detbench."""
    torch.manual_seed(0)
    resnet = models.resnet50()
    url = tv.url_of("resnet50")
    torch.save(resnet.state_dict(), hub / url.rsplit("/", 1)[1])
    cfg = load_config(CONFIGS / "torchvision/fasterrcnn_resnet50_fpn.yaml",
                      ["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", "torchvision://resnet50"])
    model = build_detection_model(cfg)
    with caplog.at_level(logging.INFO):
        Checkpointer(model).load(cfg.MODEL.WEIGHT)
    ours = model.state_dict()
    theirs = resnet.state_dict()
    assert_close(ours["backbone.body.stem.conv1.weight"], theirs["conv1.weight"])
    assert_close(ours["backbone.body.stem.bn1.running_var"], theirs["bn1.running_var"])
    assert_close(ours["backbone.body.layer3.5.conv2.weight"], theirs["layer3.5.conv2.weight"])
    assert_close(ours["backbone.body.layer4.0.downsample.1.bias"], theirs["layer4.0.downsample.1.bias"])
    assert "torchvision resnet50 (ImageNet) weights" in caplog.text


def _served_file(tmp_path: Path, state_dict: dict[str, torch.Tensor], digest: str | None = None) -> str:
    """A file:// URL named ``tiny-<hash>.pth`` (the hub's convention) holding ``state_dict``."""
    source = tmp_path / "served" / "tiny.pth"
    source.parent.mkdir()
    torch.save(state_dict, source)
    digest = digest or hashlib.sha256(source.read_bytes()).hexdigest()[:8]
    served = source.with_name(f"tiny-{digest}.pth")
    source.rename(served)
    return served.as_uri()


def test_download_goes_to_the_hub_cache_with_hash_check(hub, tmp_path):
    state = {"conv1.weight": torch.randn(2, 3, 1, 1), "layer1.0.conv1.weight": torch.randn(2, 2, 1, 1),
             "fc.weight": torch.randn(4, 2)}
    url = _served_file(tmp_path, state)
    fetched = tv.fetch(url)
    assert (hub / url.rsplit("/", 1)[1]).is_file()
    for key in state:
        assert_close(fetched[key], state[key])


def test_download_with_a_wrong_hash_fails(hub, tmp_path):
    url = _served_file(tmp_path, {"x": torch.zeros(3)}, digest="00000000")
    with pytest.raises(tv.TorchvisionWeightsError, match="hash"):
        tv.fetch(url)
    assert not (hub / url.rsplit("/", 1)[1]).exists()


def test_missing_file_url_says_how_to_work_offline(hub, tmp_path):
    with pytest.raises(tv.TorchvisionWeightsError, match="checkpoints"):
        tv.fetch((tmp_path / "absent-01234567.pth").as_uri())


def test_coco91_detector_loads_into_81_classes_with_contiguous_labels(tmp_path):
    """torchvision's class k (a COCO category id) becomes detbench's contiguous class."""
    from detbench.config import load_config
    from detbench.modeling.detector import build_detection_model
    from detbench.utils.checkpoint import Checkpointer
    from detbench.utils.torchvision_weights import COCO_CATEGORY_IDS

    opts = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", ""]
    config = Path(__file__).resolve().parents[2] / "configs" / "torchvision" / "maskrcnn_resnet50_fpn.yaml"
    torch.manual_seed(0)
    source = build_detection_model(load_config(config, opts))
    path = tmp_path / "coco91.pth"
    torch.save(source.state_dict(), path)
    target = build_detection_model(load_config(config, opts + ["MODEL.ROI_BOX_HEAD.NUM_CLASSES", "81"]))
    Checkpointer(target).load(str(path))
    src, dst = source.roi_heads["box"].predictor, target.roi_heads["box"].predictor
    # contiguous class 1 is COCO id 1 (person), class 12 is COCO id 13 (stop sign), class 80 is id 90.
    for contiguous, coco_id in ((0, 0), (1, 1), (12, 13), (80, 90)):
        assert COCO_CATEGORY_IDS[contiguous - 1] == coco_id or contiguous == 0
        torch.testing.assert_close(dst.cls_score.weight[contiguous], src.cls_score.weight[coco_id])
        torch.testing.assert_close(dst.bbox_pred.weight[4 * contiguous:4 * contiguous + 4],
                                   src.bbox_pred.weight[4 * coco_id:4 * coco_id + 4])
    src_mask = source.roi_heads["mask"].predictor.mask_fcn_logits.bias
    torch.testing.assert_close(target.roi_heads["mask"].predictor.mask_fcn_logits.bias[12], src_mask[13])
