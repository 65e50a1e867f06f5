"""Dataset catalog: standard names, the root from the environment, custom triples, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from detbench.data import catalog


def test_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(catalog.ENV_ROOT, raising=False)
    assert catalog.datasets_root() == Path("./datasets")
    monkeypatch.setenv(catalog.ENV_ROOT, str(tmp_path))
    spec = catalog.get("coco_2017_val")
    assert spec.factory == "COCODataset"
    assert spec.args["root"] == tmp_path / "coco/val2017"
    assert spec.args["ann_file"] == tmp_path / "coco/annotations/instances_val2017.json"


def test_standard_names():
    names = catalog.known_names()
    for split in ("2014_train", "2014_val", "2014_minival", "2014_valminusminival", "2017_train", "2017_val"):
        assert f"coco_{split}" in names and f"keypoints_coco_{split}" in names
    kp = catalog.get("keypoints_coco_2014_minival", root="/d")
    assert kp.args["ann_file"] == Path("/d/coco/annotations/person_keypoints_minival2014.json")
    assert kp.args["root"] == Path("/d/coco/val2014")
    pf = catalog.get("penn_fudan_test", root="/d")
    assert pf.factory == "PennFudanDataset" and pf.args == {"root": Path("/d/PennFudanPed"), "split": "test"}


def test_custom_triples_resolve_relative_paths():
    custom = (("mine", "imgs", "ann/train.json"), ["abs", "/x/imgs", "/x/a.json"])
    spec = catalog.get("mine", custom, root="/data")
    assert spec.args == {"root": Path("/data/imgs"), "ann_file": Path("/data/ann/train.json")}
    assert catalog.get("abs", custom, root="/data").args == {"root": Path("/x/imgs"), "ann_file": Path("/x/a.json")}
    assert "mine" in catalog.known_names(custom)


def test_unknown_name_lists_known_and_nearest():
    with pytest.raises(KeyError) as info:
        catalog.get("coco_2017_vall", (("mine", "i", "a.json"),))
    message = str(info.value)
    assert "Did you mean 'coco_2017_val'?" in message
    assert "penn_fudan_train" in message and "mine" in message and "DATASETS.CUSTOM" in message


@pytest.mark.parametrize("bad", [("only", "two"), "a string", ("x", "y", 3)])
def test_malformed_custom_entries(bad):
    with pytest.raises(ValueError, match="DATASETS.CUSTOM"):
        catalog.get("coco_2017_val", (bad,))


def test_custom_name_may_not_shadow_a_standard_one():
    with pytest.raises(ValueError, match="already defined"):
        catalog.get("x", (("coco_2017_val", "i", "a.json"),))


def test_catalog_knows_class_names(tmp_path):
    from detbench.data import catalog
    from detbench.data.datasets.shapes import CATEGORIES

    assert catalog.get("shapes_val").class_names() == CATEGORIES == ("circle", "square", "triangle", "star", "ring")
    assert catalog.get("penn_fudan_test").class_names() == ("person",)
    ann = tmp_path / "a.json"
    ann.write_text('{"images": [], "annotations": [], "categories": [{"id": 7, "name": "b"}, {"id": 2, "name": "a"}]}')
    spec = catalog.get("mine", [("mine", str(tmp_path), str(ann))])
    assert spec.class_names() == ("a", "b")  # contiguous ids follow the json ids' order
    assert catalog.get("coco_2017_val", root=tmp_path).class_names() is None  # not downloaded: no names, no error


# Every DATASETS name in maskrcnn-benchmark's configs/ and its paths_catalog.py (VOC 2012 test has
# no json; voc_2007_trainval is named by configs/pascal_voc/e2e_faster_rcnn_R_50_C4_1x_1_gpu_voc.yaml,
# the suffix-less cityscapes_fine_* by configs/cityscapes/e2e_{faster,mask}_rcnn_R_50_FPN_1x.yaml).
MASKRCNN_BENCHMARK_NAMES = [
    *(f"coco_{s}" for s in ("2017_train", "2017_val", "2014_train", "2014_val", "2014_minival",
                            "2014_valminusminival")),
    *(f"keypoints_coco_2014_{s}" for s in ("train", "val", "minival", "valminusminival")),
    *(f"voc_{y}_{s}{c}" for y in ("2007", "2012") for s in ("train", "val") for c in ("", "_cocostyle")),
    "voc_2007_test", "voc_2007_test_cocostyle", "voc_2012_test", "voc_2007_trainval",
    *(f"cityscapes_fine_instanceonly_seg_{s}{c}" for s in ("train", "val", "test") for c in ("", "_cocostyle")),
    *(f"cityscapes_{m}_instance_{s}" for m in ("poly", "mask") for s in ("train", "val", "minival")),
]


def test_every_maskrcnn_benchmark_dataset_name_is_known():
    known = set(catalog.known_names())
    assert [n for n in MASKRCNN_BENCHMARK_NAMES if n not in known] == []
    kinds = {catalog.get(n, root="/d").factory for n in MASKRCNN_BENCHMARK_NAMES}
    assert kinds == {"COCODataset", "PascalVOCDataset", "CityscapesDataset"}
    # As in maskrcnn-benchmark: the cocostyle files beside the devkit folders.
    spec = catalog.get("voc_2007_test_cocostyle", root="/d")
    assert spec.args == {"root": Path("/d/voc/VOC2007/JPEGImages"),
                         "ann_file": Path("/d/voc/VOC2007/Annotations/pascal_test2007.json")}
    spec = catalog.get("cityscapes_fine_instanceonly_seg_train_cocostyle", root="/d")
    assert spec.args == {"root": Path("/d/cityscapes/images"),
                         "ann_file": Path("/d/cityscapes/annotations/instancesonly_filtered_gtFine_train.json")}
