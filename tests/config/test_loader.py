"""Loading YAML files and overrides: maskrcnn-benchmark compatibility and error messages."""

import textwrap

import pytest

from detbench.config import ConfigError, load_config


def _write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_maskrcnn_benchmark_style_file_loads(tmp_path):
    f = _write(
        tmp_path / "mrcnn.yaml",
        """
        MODEL:
          META_ARCHITECTURE: "GeneralizedRCNN"
          BACKBONE:
            CONV_BODY: "R-50-FPN"
          RPN:
            USE_FPN: True
            ANCHOR_STRIDE: (4, 8, 16, 32, 64)
            MIN_SIZE: 0
          ROI_BOX_HEAD:
            POOLER_SCALES: (0.25, 0.125, 0.0625, 0.03125)
        INPUT:
          MIN_SIZE_TRAIN: 800
        DATASETS:
          TRAIN: ("coco_2014_train", "coco_2014_valminusminival")
        SOLVER:
          BASE_LR: 0.02
          WEIGHT_DECAY_BIAS: 0
          STEPS: (60000, 80000)
        """,
    )
    cfg = load_config(f)
    assert cfg.MODEL.RPN.ANCHOR_STRIDE == (4, 8, 16, 32, 64)
    assert cfg.MODEL.RPN.MIN_SIZE == 0.0 and isinstance(cfg.MODEL.RPN.MIN_SIZE, float)
    assert cfg.INPUT.MIN_SIZE_TRAIN == (800,)
    assert cfg.DATASETS.TRAIN == ("coco_2014_train", "coco_2014_valminusminival")
    assert cfg.SOLVER.WEIGHT_DECAY_BIAS == 0.0 and cfg.SOLVER.STEPS == (60000, 80000)
    assert cfg.is_frozen()


def test_base_inheritance_and_overrides(tmp_path):
    _write(tmp_path / "base.yaml", "SOLVER:\n  BASE_LR: 0.02\n  MAX_ITER: 100\n")
    child = _write(tmp_path / "child.yaml", "_BASE_: base.yaml\nSOLVER:\n  MAX_ITER: 7\n")
    cfg = load_config(child, ["SOLVER.BASE_LR", "0.5", "MODEL.DEVICE", "cpu", "DATASETS.TEST", "('a', 'b')"])
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, cfg.MODEL.DEVICE) == (0.5, 7, "cpu")
    assert cfg.DATASETS.TEST == ("a", "b")


def test_base_chain_of_any_depth_merges_deepest_first(tmp_path):
    _write(tmp_path / "a.yaml", "SOLVER:\n  MAX_ITER: 1\n  BASE_LR: 0.1\n  GAMMA: 0.5\n")
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "b.yaml", "_BASE_: ../a.yaml\nSOLVER:\n  MAX_ITER: 2\n  BASE_LR: 0.2\n")
    c = _write(tmp_path / "c.yaml", "_BASE_: sub/b.yaml\nSOLVER:\n  MAX_ITER: 3\n")
    cfg = load_config(c)
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.BASE_LR, cfg.SOLVER.GAMMA) == (3, 0.2, 0.5)


def test_base_cycle_is_named_with_the_chain(tmp_path):
    _write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    _write(tmp_path / "b.yaml", "_BASE_: c.yaml\n")
    _write(tmp_path / "c.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "a.yaml")
    a, b, c = (str(tmp_path / n) for n in ("a.yaml", "b.yaml", "c.yaml"))
    assert str(info.value) == f"_BASE_ cycle: {a} -> {b} -> {c} -> {a}"


def test_missing_base_names_the_chain(tmp_path):
    _write(tmp_path / "b.yaml", "_BASE_: gone.yaml\n")
    _write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "a.yaml")
    chain = " -> ".join(str(tmp_path / n) for n in ("a.yaml", "b.yaml", "gone.yaml"))
    assert "cannot read config file" in str(info.value) and chain in str(info.value)


def test_a_shipped_recipe_with_its_own_base_is_a_valid_base(tmp_path):
    # The README's "start from a recipe" path: configs/pennfudan/... has _BASE_ ../Base-RCNN-FPN.yaml.
    mine = _write(tmp_path / "mine.yaml",
                  "_BASE_: detbench://configs/pennfudan/mask_rcnn_R_18_FPN_scratch.yaml\n"
                  "SOLVER:\n  MAX_ITER: 11\n")
    cfg = load_config(mine)
    assert cfg.MODEL.BACKBONE.CONV_BODY == "R-18-FPN" and cfg.MODEL.RPN.USE_FPN and cfg.SOLVER.MAX_ITER == 11


def test_global_cfg_and_node_methods_understand_base(tmp_path):
    from detbench.config import cfg, get_cfg

    node = get_cfg()
    node.merge_from_file("configs/e2e_mask_rcnn_R_50_FPN_1x.yaml")  # _BASE_: Base-RCNN-FPN.yaml
    node.merge_from_list(["SOLVER.BASE_LR", "0.5"])
    assert node.MODEL.BACKBONE.CONV_BODY == "R-50-FPN" and node.SOLVER.BASE_LR == 0.5
    assert node.MODEL.MASK_ON and node.MODEL.RPN.USE_FPN
    # The global node is its own copy: get_cfg() stays the defaults whatever a script does to cfg.
    saved = cfg.SOLVER.MAX_ITER
    try:
        cfg.merge_from_list(["SOLVER.MAX_ITER", "5"])
        assert cfg.SOLVER.MAX_ITER == 5 and get_cfg().SOLVER.MAX_ITER != 5
    finally:
        cfg.SOLVER.MAX_ITER = saved
    node.freeze()
    with pytest.raises(ConfigError, match="frozen"):
        node.merge_from_list(["SOLVER.BASE_LR", "0.1"])


def test_unknown_shipped_recipe_suggests_names():
    with pytest.raises(ConfigError, match="pennfudan/mask_rcnn_R_18_FPN_scratch.yaml"):
        load_config("detbench://configs/pennfudan/mask_rcnn_R_18_FPN_scratc.yaml")


def test_unknown_key_names_file_and_nearest_keys(tmp_path):
    f = _write(tmp_path / "typo.yaml", "MODEL:\n  RPN:\n    NMS_THRES: 0.6\n")
    with pytest.raises(ConfigError) as info:
        load_config(f)
    message = str(info.value)
    assert str(f) in message and "MODEL.RPN.NMS_THRES" in message and "MODEL.RPN.NMS_THRESH" in message


def test_unknown_key_in_wrong_section_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"MODEL\.RPN\.NMS_THRESH"):
        load_config(None, ["MODEL.NMS_THRESH", "0.5"])


@pytest.mark.parametrize(
    "opts, feature",
    [(["MODEL.FBNET.ARCH", "default"], "FBNet"), (["PATHS_CATALOG", "paths_catalog.py"], "paths_catalog")],
)
def test_unsupported_features_say_so(opts, feature):
    with pytest.raises(ConfigError, match=feature):
        load_config(None, opts)


@pytest.mark.parametrize(
    "opts, message",
    [
        (["SOLVER.BASE_LR", "fast"], "SOLVER.BASE_LR must be of type float"),
        (["MODEL.MASK_ON", "1"], "MODEL.MASK_ON must be of type bool"),
        (["SOLVER.MAX_ITER", "1.5"], "SOLVER.MAX_ITER must be of type int"),
        (["MODEL", "x"], "MODEL is a section"),
        (["SOLVER.MAX_ITER"], "KEY VALUE pairs"),
    ],
)
def test_wrong_types_are_refused(opts, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, opts)


def test_broken_and_missing_files(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "MODEL: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config file .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    scalar = _write(tmp_path / "scalar.yaml", "42\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(scalar)


def test_device_auto_is_settled_when_loaded_or_frozen(monkeypatch):
    import torch

    from detbench.config import get_cfg

    assert get_cfg().MODEL.DEVICE == "auto"
    from detbench.config.node import describe_device

    for visible, expected in ((False, "cpu"), (True, "cuda")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda visible=visible: visible)
        loaded = load_config(None, [])
        assert loaded.MODEL.DEVICE == expected
        why = "a GPU is visible" if visible else "no GPU is visible"
        assert describe_device(loaded) == f"{expected} (MODEL.DEVICE auto: {why})"
        node = get_cfg()
        node.freeze()  # the maskrcnn-benchmark way: merge, freeze, torch.device(cfg.MODEL.DEVICE)
        assert node.MODEL.DEVICE == expected
    # An explicit device is kept as written (the tools refuse "cuda" without a GPU).
    explicit = load_config(None, ["MODEL.DEVICE", "cuda:1"])
    assert explicit.MODEL.DEVICE == "cuda:1" and describe_device(explicit) == "cuda:1 (MODEL.DEVICE)"
