"""Penn-Fudan: the real folder's counts and split, boxes from masks, the in-memory COCO,
and the download helper against a local zip served by a file:// URL."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from detbench.data.datasets import PennFudanDataset
from detbench.data.datasets.penn_fudan import boxes_from_masks, download

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"  # the repo root's sibling
PENN_FUDAN = DATA / "PennFudanPed"


def test_boxes_from_masks_are_tight():
    masks = torch.zeros((2, 6, 8), dtype=torch.uint8)
    masks[0, 1:3, 2:5] = 1  # rows 1..2, columns 2..4
    masks[1, 5, 7] = 1  # the bottom-right pixel alone
    # Pixel (row r, col c) covers [c, c+1) x [r, r+1): the tight box ends one past the last pixel.
    assert_close(boxes_from_masks(masks), torch.tensor([[2.0, 1.0, 5.0, 3.0], [7.0, 5.0, 8.0, 6.0]]))
    assert boxes_from_masks(torch.zeros((0, 6, 8))).shape == (0, 4)


def _fake_penn_fudan(folder, n=3):
    """n images of 8 x 6; image k has k + 1 pedestrians, pedestrian j on column 2 * j."""
    (folder / "PNGImages").mkdir(parents=True)
    (folder / "PedMasks").mkdir()
    for k in range(n):
        Image.new("RGB", (8, 6), (k, 0, 0)).save(folder / "PNGImages" / f"P{k:03d}.png")
        ids = np.zeros((6, 8), dtype=np.uint8)
        for j in range(k + 1):
            ids[1:4, 2 * j] = j + 1
        Image.fromarray(ids, mode="L").save(folder / "PedMasks" / f"P{k:03d}_mask.png")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2
def test_synthetic_folder_split_targets_and_coco(tmp_path):
    _fake_penn_fudan(tmp_path)
    train, test = PennFudanDataset(tmp_path, "train", 1), PennFudanDataset(tmp_path, "test", 1)
    assert len(train) == 2 and len(test) == 1 and train.ids == [1, 2] and test.ids == [3]
    image, target, index = test[0]
    assert index == 0 and image.size == (8, 6) and len(target) == 3
    assert_close(target.bbox[2], torch.tensor([4.0, 1.0, 5.0, 4.0]))
    assert target.get_field("labels").tolist() == [1, 1, 1]
    assert target.get_field("masks").get_mask_tensor().sum() == 9
    coco = test.coco
    assert list(coco.imgs) == [3] and len(coco.anns) == 3
    ann = coco.anns[3]
    assert ann["bbox"] == [4.0, 1.0, 1.0, 3.0] and ann["area"] == 3.0
    assert (coco.annToMask(ann) == target.get_field("masks").get_mask_tensor()[2].numpy()).all()
    with pytest.raises(ValueError, match="num_test"):
        PennFudanDataset(tmp_path, "train", 4)


@pytest.mark.skipif(not PENN_FUDAN.exists(), reason="PennFudanPed data not available")
def test_real_folder_counts():
    train = PennFudanDataset(PENN_FUDAN, "train", num_test=50)
    test = PennFudanDataset(PENN_FUDAN, "test", num_test=50)
    assert (len(train), len(test)) == (120, 50)
    assert len(train.coco.anns) + len(test.coco.anns) == 423
    assert set(train.ids).isdisjoint(test.ids) and max(test.ids) == 170
    info = test.get_img_info(len(test) - 1)
    assert info["file_name"] == "PennPed00096.png" and info["id"] == 170


def _zip_of(folder) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, path.relative_to(folder.parent).as_posix())
    return buffer.getvalue()


def test_download_from_a_local_zip(tmp_path):
    source = tmp_path / "src" / "PennFudanPed"
    _fake_penn_fudan(source)
    archive = tmp_path / "PennFudanPed.zip"
    archive.write_bytes(_zip_of(source))
    root = tmp_path / "datasets"
    folder = download(root, url=archive.as_uri(), expected_images=3)
    assert folder == root / "PennFudanPed" and len(PennFudanDataset(folder, "train", 0)) == 3
    assert sorted(p.name for p in root.iterdir()) == ["PennFudanPed"]  # no temporary files left
    assert download(root, url="file:///nonexistent.zip", expected_images=3) == folder  # complete: kept


def test_download_rejects_bad_archives(tmp_path):
    source = tmp_path / "src" / "PennFudanPed"
    _fake_penn_fudan(source)
    archive = tmp_path / "p.zip"
    archive.write_bytes(_zip_of(source))
    with pytest.raises(RuntimeError, match="sha256"):
        download(tmp_path / "a", url=archive.as_uri(), sha256="0" * 64, expected_images=3)
    with pytest.raises(RuntimeError, match="expected 170"):
        download(tmp_path / "b", url=archive.as_uri())  # the official count
    not_zip = tmp_path / "x.zip"
    not_zip.write_bytes(b"<html>moved</html>")
    with pytest.raises(RuntimeError, match="not return a zip"):
        download(tmp_path / "c", url=not_zip.as_uri(), expected_images=3)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../outside.txt", "x")
    with pytest.raises(RuntimeError, match="outside"):
        download(tmp_path / "d", url=evil.as_uri(), expected_images=3)
    assert not (tmp_path / "outside.txt").exists()
