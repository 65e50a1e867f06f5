"""Resume refusal: keys that change the model or the data order are named; others may change."""

from __future__ import annotations

import pytest

from detbench.config import get_cfg
from detbench.config.loader import ConfigError
from detbench.engine.resume_check import ResumeConfigError, check_resume_compatible, differing_keys


def _cfg():
    cfg = get_cfg()
    cfg.DATASETS.CUSTOM = (("mine", "/data/img", "/data/train.json"),)
    cfg.DATASETS.TRAIN, cfg.SEED = ("mine",), 5
    cfg.INPUT.MIN_SIZE_TRAIN = (600, 800)
    return cfg


def _changed(**changes):
    cfg = _cfg()
    for dotted, value in changes.items():
        *path, leaf = dotted.split("__")
        node = cfg
        for part in path:
            node = node[part]
        node[leaf] = value
    return cfg


def test_unchanged_config_after_a_yaml_round_trip_passes():
    check_resume_compatible(_cfg().dump(), _cfg())  # tuples become lists in YAML: still equal
    check_resume_compatible(None, _cfg())  # an old checkpoint without its config: nothing to check


@pytest.mark.parametrize("changes", [
    {"SOLVER__MAX_ITER": 90000, "SOLVER__BASE_LR": 0.01, "SOLVER__STEPS": (5,), "SOLVER__CHECKPOINT_PERIOD": 7},
    {"DATALOADER__NUM_WORKERS": 0, "MODEL__DEVICE": "cpu", "OUTPUT_DIR": "/elsewhere", "MODEL__WEIGHT": "x.pth"},
    {"MODEL__ROI_HEADS__SCORE_THRESH": 0.3, "MODEL__RPN__POST_NMS_TOP_N_TEST": 10, "INPUT__MIN_SIZE_TEST": 500},
    {"DATASETS__TEST": ("val",), "DATASETS__CUSTOM": (("mine", "/data/img", "/data/train.json"), ("val", "a", "b"))},
])
def test_keys_that_do_not_change_the_run_may_change(changes):
    check_resume_compatible(_cfg().dump(), _changed(**changes))


def test_negative_seed_trains_with_seed_0():
    saved = _changed(SEED=-1)
    assert differing_keys(saved, _changed(SEED=0)) == []
    assert [k for k, _, _ in differing_keys(saved, _changed(SEED=1))] == ["SEED"]


def test_changed_model_and_data_keys_are_all_named():
    new = _changed(MODEL__ROI_BOX_HEAD__NUM_CLASSES=3, INPUT__MIN_SIZE_TRAIN=(800,), SOLVER__IMS_PER_BATCH=8,
                   SEED=6, DATALOADER__ASPECT_RATIO_GROUPING=False, SOLVER__MAX_ITER=5)
    with pytest.raises(ResumeConfigError) as info:
        check_resume_compatible(_cfg().dump(), new, "out/model_0000100.pth")
    message = str(info.value)
    assert isinstance(info.value, ConfigError) and "out/model_0000100.pth" in message
    for key, old, now in (("MODEL.ROI_BOX_HEAD.NUM_CLASSES", "81", "3"), ("INPUT.MIN_SIZE_TRAIN", "[600, 800]", "[800]"),
                          ("SOLVER.IMS_PER_BATCH", "16", "8"), ("SEED", "5", "6"),
                          ("DATALOADER.ASPECT_RATIO_GROUPING", "True", "False")):
        assert f"  {key}: {old} when saved, {now} now" in message
    assert "5 key(s)" in message and "MAX_ITER" not in message


def test_training_dataset_files_count_but_its_catalog_spelling_does_not():
    moved = _changed(DATASETS__CUSTOM=(("mine", "/data/img2", "/data/train.json"),))
    assert [k for k, _, _ in differing_keys(_cfg(), moved)] == ["DATASETS.TRAIN:mine"]
    renamed = _changed(DATASETS__TRAIN=("other",), DATASETS__CUSTOM=(("other", "/data/img", "/data/train.json"),))
    assert [k for k, _, _ in differing_keys(_cfg(), renamed)] == ["DATASETS.TRAIN"]


def test_keys_missing_from_an_old_saved_config_are_skipped():
    saved = _cfg()
    saved.defrost()
    del saved.MODEL["MASK_ON"]
    assert differing_keys(saved, _changed(MODEL__MASK_ON=True)) == []


def test_voc_difficult_objects_count_but_the_voc_metric_does_not():
    assert [k for k, _, _ in differing_keys(_cfg(), _changed(DATASETS__VOC_USE_DIFFICULT=True))] == [
        "DATASETS.VOC_USE_DIFFICULT"]
    check_resume_compatible(_cfg().dump(), _changed(TEST__VOC_METRIC="area"))
