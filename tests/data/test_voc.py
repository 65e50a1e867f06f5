"""PascalVOCDataset on tiny devkit folders: the box convention, difficult objects, the catalog
names, and bad input (broken XML, boxes outside the image, unknown classes, missing files)."""

from __future__ import annotations

import logging

import pytest
import torch
from torch.testing import assert_close

from detbench.config import ConfigError, load_config
from detbench.data import build_dataset, catalog
from detbench.data.datasets.coco import ImageLoadError
from detbench.data.datasets.coco_checks import DatasetError
from detbench.data.datasets.voc import PascalVOCDataset, parse_voc_xml, voc_box_to_continuous


def test_box_convention():
    # VOC's whole-image box (1, 1, W, H) covers every pixel: continuous (0, 0, W, H).
    assert voc_box_to_continuous(1, 1, 500, 375) == (0.0, 0.0, 500.0, 375.0)
    # Columns 3..7 (1-based) are 5 pixels, [2, 7) in continuous coordinates.
    x1, y1, x2, y2 = voc_box_to_continuous(3, 4, 7, 9)
    assert (x1, y1, x2, y2) == (2.0, 3.0, 7.0, 9.0) and x2 - x1 == 7 - 3 + 1


def test_targets_labels_and_difficult(voc, tmp_path):
    objects = [("dog", (3, 4, 7, 9), 0), ("Person ", (1, 1, 20, 10), 1), ("tvmonitor", (10, 2, 20, 8), 0)]
    root = voc.write(tmp_path / "VOC2007", {"000001": (20, 10, objects)}, {"train": ["000001"]})
    dataset = PascalVOCDataset(root, "train")
    assert len(dataset.categories) == 20 and dataset.categories[12] == "dog" and dataset.categories[15] == "person"
    assert dataset.get_img_info(0) == {"height": 10, "width": 20, "file_name": "000001.jpg", "id": "000001"}
    gt = dataset.get_groundtruth(0)
    assert_close(gt.bbox, torch.tensor([[2.0, 3, 7, 9], [0, 0, 20, 10], [9, 1, 20, 8]]))
    assert gt.get_field("labels").tolist() == [12, 15, 20]  # names are stripped and lower-cased
    assert gt.get_field("difficult").tolist() == [False, True, False]
    image, target, index = dataset[0]
    assert image.size == (20, 10) and index == 0
    assert target.get_field("labels").tolist() == [12, 20]  # the difficult person is no training target
    _, with_difficult, _ = PascalVOCDataset(root, "train", use_difficult=True)[0]
    assert with_difficult.get_field("labels").tolist() == [12, 15, 20]


def test_images_without_training_targets_are_dropped_on_request(voc, tmp_path):
    anns = {"a": (8, 8, [("cat", (1, 1, 4, 4), 1)]), "b": (8, 8, [("cat", (1, 1, 4, 4), 0)]), "c": (8, 8, [])}
    root = voc.write(tmp_path / "VOC2012", anns, {"train": ["a", "b", "c"]})
    assert PascalVOCDataset(root, "train").ids == ["a", "b", "c"]
    assert PascalVOCDataset(root, "train", remove_images_without_annotations=True).ids == ["b"]
    assert PascalVOCDataset(root, "train", use_difficult=True, remove_images_without_annotations=True).ids == ["a", "b"]


def test_catalog_names_and_build_dataset(voc, tmp_path, monkeypatch):
    for year in ("2007", "2012"):
        for split in ("train", "val", "trainval", "test"):
            spec = catalog.get(f"voc_{year}_{split}", root=tmp_path)
            assert spec.factory == "PascalVOCDataset" and spec.args["root"] == tmp_path / f"voc/VOC{year}"
            assert spec.class_names() == catalog.VOC_CLASSES
    coco_style = catalog.get("voc_2012_val_cocostyle", root=tmp_path)
    assert coco_style.factory == "COCODataset"
    assert coco_style.args == {"root": tmp_path / "voc/VOC2012/JPEGImages",
                               "ann_file": tmp_path / "voc/VOC2012/Annotations/pascal_val2012.json"}
    voc.write(tmp_path / "voc/VOC2007", {"x": (16, 12, [("cow", (2, 2, 9, 9), 0), ("cow", (1, 1, 3, 3), 1)])},
              {"test": ["x"]})
    monkeypatch.setenv(catalog.ENV_ROOT, str(tmp_path))
    cfg = load_config(None, ["DATASETS.VOC_USE_DIFFICULT", "True", "TEST.VOC_METRIC", "area"])
    dataset = build_dataset(cfg, "voc_2007_test", is_train=True)
    assert dataset.voc_metric == "area" and dataset.year == 2007 and len(dataset[0][1]) == 2
    assert build_dataset(load_config(None, []), "voc_2007_test", is_train=False).voc_metric == "11point"
    with pytest.raises(ConfigError, match="TEST.VOC_METRIC"):
        load_config(None, ["TEST.VOC_METRIC", "07"])


def test_box_outside_the_image_is_clipped_or_dropped_and_logged(voc, tmp_path, caplog):
    objects = [("car", (5, 5, 30, 8), 0), ("car", (40, 1, 50, 5), 0), ("car", (6, 6, 4, 8), 0),
               ("car", (2, 2, 4, 4), 0)]
    root = voc.write(tmp_path / "VOC2007", {"img7": (20, 10, objects)}, {"val": ["img7"]})
    with caplog.at_level(logging.WARNING):
        dataset = PascalVOCDataset(root, "val")
    assert_close(dataset.get_groundtruth(0).bbox, torch.tensor([[4.0, 4, 20, 8], [1, 1, 4, 4]]))
    log = caplog.text
    assert "img7.xml: object #0 ('car')" in log and "clipped" in log
    assert "img7.xml: object #1 ('car')" in log and "entirely outside the image" in log
    assert "img7.xml: object #2 ('car')" in log and "inverted" in log


def test_unknown_class_and_malformed_objects_are_dropped_and_logged(voc, tmp_path, caplog):
    xml = voc.xml(20, 10, [("unicorn", (1, 1, 5, 5), 0), ("cat", (1, 1, 5, 5), 0)]).replace(
        "</annotation>", "<object><name>dog</name><bndbox><xmin>a</xmin></bndbox></object></annotation>")
    (tmp_path / "one.xml").write_text(xml)
    image, dropped = parse_voc_xml(tmp_path / "one.xml")
    assert [o.name for o in image.objects] == ["cat"]
    assert dropped == {"unknown class name 'unicorn'": ["object #0 ('unicorn')"],
                       "no <bndbox> with numeric xmin, ymin, xmax, ymax": ["object #2 ('dog')"]}


def test_broken_xml_names_the_file_and_position(voc, tmp_path):
    anns = {"good": (8, 8, [("cat", (1, 1, 4, 4), 0)]), "bad": "<annotation><size><width>8</width></size>",
            "nosize": "<annotation><object><name>cat</name></object></annotation>"}
    root = voc.write(tmp_path / "VOC2007", anns, {"train": ["good", "bad", "nosize", "gone"]})
    with pytest.raises(DatasetError) as info:
        PascalVOCDataset(root, "train")
    message = str(info.value)
    assert "3 annotation file(s)" in message
    assert f"{root / 'Annotations' / 'bad.xml'}: broken XML at line 1" in message
    assert "nosize.xml: no valid <size>" in message
    assert "gone.xml: cannot read annotation file" in message


def test_missing_image_set_lists_the_splits_there(voc, tmp_path):
    root = voc.write(tmp_path / "VOC2012", {"a": (8, 8, [])}, {"train": ["a"], "val": ["a"]})
    with pytest.raises(DatasetError, match=r"ImageSets/Main/test.txt \(splits there: \['train', 'val'\]\)"):
        PascalVOCDataset(root, "test")


def test_missing_or_wrong_size_image(voc, tmp_path):
    root = voc.write(tmp_path / "VOC2007", {"a": (8, 8, []), "b": (8, 6, [])}, {"train": ["a"], "val": ["b"]})
    (root / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(DatasetError, match="a.jpg .*missing"):
        PascalVOCDataset(root, "train")
    (root / "Annotations" / "b.xml").write_text(voc.xml(8, 7, []))
    with pytest.raises(ImageLoadError, match=r"b.jpg: image is \(8, 6\).*XML says \(8, 7\)"):
        PascalVOCDataset(root, "val")[0]


def test_trains_a_step_and_evaluates_through_the_engine(voc, tmp_path, monkeypatch):
    """A VOC devkit split through the real data loader, one training step of a small Faster R-CNN
    (difficult objects never reach the losses) and run_test's VOC evaluation."""
    from detbench.data import make_data_loader
    from detbench.engine.launch import run_test
    from detbench.modeling.detector import build_detection_model

    anns = {f"{i:06d}": (64, 48, [("dog", (5, 5, 40, 30), 0), ("cat", (30, 20, 60, 45), i % 2)]) for i in range(3)}
    voc.write(tmp_path / "voc" / "VOC2012", anns, {"train": list(anns), "val": list(anns)[:2]})
    monkeypatch.setenv(catalog.ENV_ROOT, str(tmp_path))
    torch.manual_seed(0)
    cfg = load_config("configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml", [
        "MODEL.MASK_ON", "False", "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "21", "DATASETS.TRAIN", "('voc_2012_train',)",
        "DATASETS.TEST", "('voc_2012_val',)", "SOLVER.IMS_PER_BATCH", "3", "TEST.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", "1", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64",
        "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path / "out")])
    model = build_detection_model(cfg)
    images, targets, _ = next(iter(make_data_loader(cfg, is_train=True)))
    assert sorted(len(t) for t in targets) == [1, 2, 2]  # image 000001 keeps only its dog: its cat is difficult
    assert all(not t.get_field("difficult").any() for t in targets)
    losses = model(images, list(targets))
    sum(losses.values()).backward()
    results = run_test(cfg, model, distributed=False)["voc_2012_val"]
    assert set(results["bbox"]) == {"mAP", "per_category"} and len(results["bbox"]["per_category"]) == 20
    assert 0.0 <= results["bbox"]["mAP"] <= 1.0
    assert (tmp_path / "out" / "inference" / "voc_2012_val" / "voc_results.json").is_file()
