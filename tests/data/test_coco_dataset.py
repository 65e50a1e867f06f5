"""COCODataset on a synthetic json (every filtering rule) and on coco_mini (real COCO files)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from detbench.data.datasets import COCODataset, ImageLoadError, load_image
from detbench.structures import PersonKeypoints

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"  # the repo root's sibling
COCO_MINI = DATA / "coco_mini"


def test_synthetic_targets_and_filtering(tiny_coco, caplog):
    ann, images = tiny_coco
    with caplog.at_level(logging.WARNING):
        ds = COCODataset(ann, images, remove_images_without_annotations=False)
    # Three non-crowd annotations of image 1 are unusable, each for its own logged reason.
    assert "non-finite bbox" in caplog.text
    assert "box width or height <= 0" in caplog.text and "dropped 2 annotation(s)" in caplog.text
    assert ds.ids == [1, 2, 3]  # the empty image is kept as a pure negative
    # json ids 5 (cat) and 9 (dog) sorted -> contiguous 1 and 2.
    assert ds.json_category_id_to_contiguous_id == {5: 1, 9: 2}
    assert ds.categories == {1: "cat", 2: "dog"}
    target = ds.get_groundtruth(0)
    assert_close(target.bbox, torch.tensor([[10.0, 5.0, 20.0, 15.0]]))  # xywh -> xyxy; crowd gone
    assert target.get_field("labels").tolist() == [1]
    assert target.get_field("masks").mode == "poly"
    assert len(ds.get_groundtruth(2)) == 0 and ds.get_groundtruth(2).size == (30, 30)


def test_synthetic_removal_and_rle(tiny_coco):
    ann, images = tiny_coco
    ds = COCODataset(ann, images, remove_images_without_annotations=True)
    assert ds.ids == [1, 2]
    image, target, index = ds[1]
    assert index == 1 and image.mode == "RGB" and image.size == (20, 50)  # grayscale -> RGB
    masks = target.get_field("masks")
    assert masks.mode == "mask"  # a non-crowd RLE makes the image's masks bitmasks
    expected = torch.zeros((1, 50, 20), dtype=torch.uint8)
    expected[0, :, 2:4] = 1  # the RLE sets columns 2 and 3 (see conftest)
    assert torch.equal(masks.get_mask_tensor(), expected)
    assert target.get_field("labels").tolist() == [2]


def test_broken_json_names_file_and_position(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"images": [\n  {"id": 1,, }\n]}')
    with pytest.raises(ValueError, match=r"broken\.json.*line 2, column 12"):
        COCODataset(bad, tmp_path, False)
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        COCODataset(tmp_path / "nothere.json", tmp_path, False)
    not_coco = tmp_path / "list.json"
    not_coco.write_text("[]")
    with pytest.raises(ValueError, match=r"list\.json.*missing top-level"):
        COCODataset(not_coco, tmp_path, False)


def test_missing_and_corrupt_images_name_the_file(tiny_coco):
    ann, images = tiny_coco
    ds = COCODataset(ann, images, False)
    (images / "a.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(ImageLoadError, match=r"a\.jpg.*image id 1"):
        ds[0]
    (images / "b.png").unlink()
    with pytest.raises(ImageLoadError, match=r"not found.*b\.png"):
        ds[1]


def test_load_image_modes(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red: alpha is dropped
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    assert np.asarray(load_image(tmp_path / "rgba.png"))[0, 0].tolist() == [200, 0, 0]
    gray16 = np.full((4, 6), 65535, dtype=np.uint16)
    gray16[0, 0] = 257 * 10  # 16-bit 2570 -> 8-bit 10
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    out = np.asarray(load_image(tmp_path / "g16.png"))
    assert out.shape == (4, 6, 3) and out[0, 0].tolist() == [10, 10, 10] and out[1, 1].tolist() == [255] * 3


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((2, 3, 3), dtype=np.uint8)  # 3 wide, 2 high; top-left pixel white
    pixels[0, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: display rotated 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "rot.png", exif=exif.tobytes())
    image = np.asarray(load_image(tmp_path / "rot.png"))
    assert image.shape == (3, 2, 3)  # now 2 wide, 3 high
    assert image[0, 1].tolist() == [255, 255, 255]  # clockwise: top-left goes to top-right


needs_coco_mini = pytest.mark.skipif(not COCO_MINI.exists(), reason="coco_mini data not available")


@needs_coco_mini
def test_coco_mini_counts_and_mapping():
    ann = COCO_MINI / "annotations" / "instances_train2017.json"
    ds = COCODataset(ann, COCO_MINI / "train2017", remove_images_without_annotations=True)
    raw = json.loads(ann.read_text())
    assert len(ds) == 80  # every coco_mini train image has a non-crowd annotation
    num_targets = sum(len(ds.get_groundtruth(i)) for i in range(len(ds)))
    crowd = sum(a["iscrowd"] for a in raw["annotations"])
    assert crowd == 8 and num_targets == len(raw["annotations"]) - crowd == 731
    assert sorted(ds.contiguous_category_id_to_json_id) == list(range(1, 81))
    for json_id, contiguous in ds.json_category_id_to_contiguous_id.items():
        assert ds.contiguous_category_id_to_json_id[contiguous] == json_id
        assert ds.categories[contiguous] == ds.coco.cats[json_id]["name"]


@needs_coco_mini
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2
def test_coco_mini_crowd_excluded_and_polygon_matches_pycocotools():
    ds = COCODataset(COCO_MINI / "annotations" / "instances_val2017.json", COCO_MINI / "val2017", False)
    crowd_image = next(a["image_id"] for a in ds.coco.dataset["annotations"] if a["iscrowd"])
    index = ds.ids.index(crowd_image)
    anns = [a for a in ds.coco.imgToAnns[crowd_image] if not a["iscrowd"]]
    target = ds.get_groundtruth(index)
    assert len(target) == len(anns) < len(ds.coco.imgToAnns[crowd_image])
    got = target.get_field("masks").get_mask_tensor()
    for k, a in enumerate(anns):
        # Exact: polygons are kept in float64, as pycocotools reads the json (it rounds 5 * x,
        # so float32 storage flipped e.g. 373.3 -> 1866.5 in 200 of the 619 val masks).
        assert torch.equal(got[k], torch.from_numpy(ds.coco.annToMask(a)))
        assert target.get_field("labels")[k] == ds.json_category_id_to_contiguous_id[a["category_id"]]


@needs_coco_mini
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2
def test_coco_mini_every_polygon_mask_equals_ann_to_mask():
    ds = COCODataset(COCO_MINI / "annotations" / "instances_val2017.json", COCO_MINI / "val2017", False)
    compared = 0
    for index, image_id in enumerate(ds.ids):
        anns = [a for a in ds.coco.imgToAnns[image_id] if not a["iscrowd"] and a["area"] > 0]
        masks = ds.get_groundtruth(index).get_field("masks")
        if masks.mode != "poly":
            continue
        got = masks.get_mask_tensor()
        assert len(got) == len(anns), f"image {image_id}"
        for k, a in enumerate(anns):
            assert torch.equal(got[k], torch.from_numpy(ds.coco.annToMask(a))), f"annotation {a['id']}"
        compared += len(anns)
    assert compared > 500


@needs_coco_mini
def test_coco_mini_keypoints():
    ann = COCO_MINI / "annotations" / "person_keypoints_train2017.json"
    kept = COCODataset(ann, COCO_MINI / "train2017", False)
    removed = COCODataset(ann, COCO_MINI / "train2017", True)
    assert len(kept) == 80 and 0 < len(removed) < 80
    image, target, _ = removed[0]
    keypoints = target.get_field("keypoints")
    assert isinstance(keypoints, PersonKeypoints) and keypoints.keypoints.shape == (len(target), 17, 3)
    first = removed.coco.imgToAnns[removed.ids[0]]
    first = [a for a in first if not a["iscrowd"]]
    expected = torch.tensor([a["keypoints"] for a in first], dtype=torch.float32).view(-1, 17, 3)
    assert_close(keypoints.keypoints, expected)
    assert image.size == target.size
