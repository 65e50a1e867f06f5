"""BoxList: validation, fields, geometry (hand-derived values and pixel-mask checks), indexing."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from detbench.structures import FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM, BoxList

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class RecordingField:
    """A non-tensor per-box field that logs every geometry call made on it."""

    def __init__(self, n: int, log: tuple = ()) -> None:
        self.n, self.log = n, log

    def _with(self, entry: tuple, n: int | None = None) -> RecordingField:
        return RecordingField(self.n if n is None else n, self.log + (entry,))

    def resize(self, size, *args, **kwargs):
        return self._with(("resize", size, args, kwargs))

    def transpose(self, method):
        return self._with(("transpose", method))

    def crop(self, box):
        return self._with(("crop", box))

    def to(self, device):
        return self._with(("to", str(device)))

    def __getitem__(self, item):
        return self._with(("getitem", item), n=len(range(self.n)[item]) if isinstance(item, slice) else None)

    def __len__(self) -> int:
        return self.n


def make_boxlist(mode: str = "xyxy", dtype: torch.dtype = torch.float32) -> BoxList:
    """Three boxes on a 10 x 20 (width x height) image, given in xyxy and stored in ``mode``."""
    xyxy = torch.tensor([[1.0, 2.0, 4.0, 8.0], [0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 6.0, 15.0]], dtype=dtype)
    boxes = BoxList(xyxy, (10, 20)).convert(mode)
    boxes.add_field("labels", torch.tensor([3, 1, 2]))
    boxes.add_field("extra", RecordingField(3))
    return boxes


def xyxy(boxes: BoxList) -> torch.Tensor:
    return boxes.convert("xyxy").bbox


# ---- construction and fields ---------------------------------------------------------------


@pytest.mark.parametrize(
    "bbox, mode, size, error, match",
    [
        ([[0.0, 0.0, 1.0, 1.0]], "xyxy", (2, 2), TypeError, "torch.Tensor"),
        (torch.zeros(2, 4, dtype=torch.int64), "xyxy", (2, 2), TypeError, "floating point"),
        (torch.zeros(4), "xyxy", (2, 2), ValueError, r"\[N, 4\], got \(4,\)"),
        (torch.zeros(3, 5), "xyxy", (2, 2), ValueError, r"\[N, 4\], got \(3, 5\)"),
        (torch.zeros(3, 4), "cxcywh", (2, 2), ValueError, "unknown box mode 'cxcywh'"),
        (torch.zeros(3, 4), "xyxy", (2, 2, 3), ValueError, "width, height"),
        (torch.zeros(3, 4), "xyxy", (-1, 2), ValueError, "width, height"),
    ],
)
def test_constructor_rejects_bad_input(bbox, mode, size, error, match):
    with pytest.raises(error, match=match):
        BoxList(bbox, size, mode)


def test_constructor_keeps_tensor_dtype_and_identity():
    bbox = torch.rand(5, 4, dtype=torch.float64)
    boxes = BoxList(bbox, (7, 3))
    assert boxes.bbox is bbox and boxes.size == (7, 3) and boxes.mode == "xyxy" and len(boxes) == 5


def test_fields_api():
    boxes = make_boxlist()
    assert boxes.fields() == ["labels", "extra"]
    assert boxes.has_field("labels") and not boxes.has_field("scores")
    assert_close(boxes.get_field("labels"), torch.tensor([3, 1, 2]))
    with pytest.raises(KeyError, match=r"no field 'scores'.*labels"):
        boxes.get_field("scores")
    with pytest.raises(ValueError, match="one row per box"):
        boxes.add_field("scores", torch.rand(2))
    with pytest.raises(ValueError, match="one row per box"):
        boxes.add_field("scores", torch.tensor(1.0))


def test_copy_with_fields():
    boxes = make_boxlist()
    only = boxes.copy_with_fields("labels")
    assert only.fields() == ["labels"] and only.bbox is boxes.bbox
    assert only.get_field("labels") is boxes.get_field("labels")
    assert boxes.copy_with_fields(["extra", "labels"]).fields() == ["extra", "labels"]
    with pytest.raises(KeyError, match="masks"):
        boxes.copy_with_fields(["labels", "masks"])
    assert boxes.copy_with_fields(["labels", "masks"], skip_missing=True).fields() == ["labels"]


def test_repr():
    assert repr(make_boxlist("xywh")) == "BoxList(num_boxes=3, image_width=10, image_height=20, mode=xywh)"


# ---- convert and area ---------------------------------------------------------------------


def test_convert_hand_values_and_round_trip():
    boxes = BoxList(torch.tensor([[1.0, 2.0, 4.0, 8.0], [0.5, 0.25, 0.5, 3.0]]), (10, 20))
    boxes.add_field("labels", torch.tensor([1, 2]))
    as_xywh = boxes.convert("xywh")
    assert as_xywh.mode == "xywh" and as_xywh.size == (10, 20)
    # width = x2 - x1 with no "+1"
    assert_close(as_xywh.bbox, torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.5, 0.25, 0.0, 2.75]]))
    assert as_xywh.get_field("labels") is boxes.get_field("labels")
    assert_close(as_xywh.convert("xyxy").bbox, boxes.bbox)
    assert boxes.convert("xyxy") is boxes
    with pytest.raises(ValueError, match="unknown box mode"):
        boxes.convert("cxcy")


@pytest.mark.parametrize("mode", ["xyxy", "xywh"])
def test_area(mode):
    boxes = make_boxlist(mode)
    assert_close(boxes.area(), torch.tensor([18.0, 200.0, 10.0]))
    assert boxes.area().shape == (3,)


# ---- resize / transpose / crop / clip: hand values --------------------------------------------


@pytest.mark.parametrize("mode", ["xyxy", "xywh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_resize(mode, dtype):
    boxes = make_boxlist(mode, dtype)
    out = boxes.resize((20, 10), "bilinear", antialias=True)  # x scales by 2, y by 1/2
    assert out.size == (20, 10) and out.mode == mode and out.bbox.dtype == dtype
    expected = torch.tensor([[2.0, 1.0, 8.0, 4.0], [0.0, 0.0, 20.0, 10.0], [10.0, 2.5, 12.0, 7.5]], dtype=dtype)
    assert_close(xyxy(out), expected)
    assert out.get_field("labels") is boxes.get_field("labels")
    assert out.get_field("extra").log == (("resize", (20, 10), ("bilinear",), {"antialias": True}),)
    assert_close(xyxy(boxes), xyxy(make_boxlist(mode, dtype)))  # the input is untouched


@pytest.mark.parametrize("mode", ["xyxy", "xywh"])
def test_transpose(mode):
    boxes = make_boxlist(mode)
    flipped_x = boxes.transpose(FLIP_LEFT_RIGHT)  # x -> 10 - x
    assert_close(xyxy(flipped_x), torch.tensor([[6.0, 2.0, 9.0, 8.0], [0.0, 0.0, 10.0, 20.0], [4.0, 5.0, 5.0, 15.0]]))
    flipped_y = boxes.transpose(FLIP_TOP_BOTTOM)  # y -> 20 - y
    assert_close(xyxy(flipped_y), torch.tensor([[1.0, 12.0, 4.0, 18.0], [0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 6.0, 15.0]]))
    assert flipped_x.mode == mode and flipped_x.size == (10, 20)
    assert flipped_x.get_field("extra").log == (("transpose", FLIP_LEFT_RIGHT),)
    assert flipped_y.get_field("extra").log == (("transpose", FLIP_TOP_BOTTOM),)
    assert flipped_x.get_field("labels") is boxes.get_field("labels")
    assert_close(xyxy(flipped_x.transpose(FLIP_LEFT_RIGHT)), xyxy(boxes))
    with pytest.raises(ValueError, match="FLIP_LEFT_RIGHT"):
        boxes.transpose(2)


@pytest.mark.parametrize("mode", ["xyxy", "xywh"])
def test_crop(mode):
    boxes = make_boxlist(mode)
    region = (2, 3, 6, 11)  # 4 wide, 8 high
    out = boxes.crop(region)
    assert out.size == (4, 8) and out.mode == mode and len(out) == 3
    # shifted by (-2, -3), then clamped to [0, 4] x [0, 8]; nothing is removed
    assert_close(xyxy(out), torch.tensor([[0.0, 0.0, 2.0, 5.0], [0.0, 0.0, 4.0, 8.0], [3.0, 2.0, 4.0, 8.0]]))
    assert out.get_field("extra").log == (("crop", region),)
    assert out.get_field("labels") is boxes.get_field("labels")
    outside = BoxList(torch.tensor([[7.0, 12.0, 9.0, 15.0]]), (10, 20)).crop(torch.tensor(region))
    assert_close(outside.bbox, torch.tensor([[4.0, 8.0, 4.0, 8.0]]))  # degenerate, still there
    with pytest.raises(ValueError, match="x2 > x1"):
        boxes.crop((5, 0, 5, 4))


@pytest.mark.parametrize("mode", ["xyxy", "xywh"])
def test_clip_to_image(mode):
    raw = torch.tensor([[-1.0, -2.0, 5.0, 25.0], [11.0, 1.0, 12.0, 3.0], [3.0, 3.0, 3.0, 5.0], [2.0, 4.0, 9.0, 19.5]])
    boxes = BoxList(raw.clone(), (10, 20)).convert(mode)
    boxes.add_field("labels", torch.tensor([0, 1, 2, 3]))
    kept = boxes.clip_to_image(remove_empty=False)
    clipped = torch.tensor([[0.0, 0.0, 5.0, 20.0], [10.0, 1.0, 10.0, 3.0], [3.0, 3.0, 3.0, 5.0], [2.0, 4.0, 9.0, 19.5]])
    assert_close(xyxy(kept), clipped)
    assert kept.mode == mode
    removed = boxes.clip_to_image()  # rows 1 and 2 are empty (x2 <= x1)
    assert_close(xyxy(removed), clipped[[0, 3]])
    assert_close(removed.get_field("labels"), torch.tensor([0, 3]))
    assert_close(xyxy(boxes), raw)  # not modified in place


def test_resize_and_clip_match_torchvision_bitwise():
    from torchvision.models.detection.transform import resize_boxes
    from torchvision.ops import clip_boxes_to_image

    g = torch.Generator().manual_seed(0)
    raw = torch.rand(50, 4, generator=g) * 700 - 50
    raw[:, 2:] += raw[:, :2]
    boxes = BoxList(raw, (613, 427))  # odd sizes give inexact ratios
    expected = resize_boxes(raw, (427, 613), (800, 1146))  # torchvision takes (height, width)
    assert_close(boxes.resize((1146, 800)).bbox, expected, rtol=0, atol=0)
    clipped = clip_boxes_to_image(raw, (427, 613))
    assert_close(boxes.clip_to_image(remove_empty=False).bbox, clipped, rtol=0, atol=0)


# ---- the pixel model, checked on rasterised masks ------------------------------------------------


def mask_of(box: list[int], width: int, height: int) -> torch.Tensor:
    """[H, W] bool image whose pixels (i, j) with [i, i+1) x [j, j+1) inside ``box`` are set."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[box[1] : box[3], box[0] : box[2]] = True
    return mask


def box_of(mask: torch.Tensor) -> list[int]:
    """Tight xyxy box around the set pixels of ``mask``: the right edge is the last column + 1."""
    rows, cols = mask.nonzero(as_tuple=True)
    return [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]


INT_BOXES = [[1, 2, 4, 8], [0, 0, 10, 20], [9, 19, 10, 20], [3, 0, 7, 1]]


@pytest.mark.parametrize("box", INT_BOXES)
def test_geometry_matches_pixel_masks(box):
    width, height = 10, 20
    mask = mask_of(box, width, height)
    boxes = BoxList(torch.tensor([box], dtype=torch.float32), (width, height))
    assert boxes.area().item() == mask.sum().item()
    assert xyxy(boxes.transpose(FLIP_LEFT_RIGHT))[0].tolist() == box_of(mask.flip(1))
    assert xyxy(boxes.transpose(FLIP_TOP_BOTTOM))[0].tolist() == box_of(mask.flip(0))
    # nearest-neighbour 3x upscale: each pixel becomes a 3 x 3 block
    big = mask.repeat_interleave(3, 0).repeat_interleave(3, 1)
    assert xyxy(boxes.resize((30, 60)))[0].tolist() == box_of(big)
    left, top, right, bottom = 2, 1, 8, 19
    cropped = mask[top:bottom, left:right]
    out = boxes.crop((left, top, right, bottom))
    assert out.size == (cropped.shape[1], cropped.shape[0])
    if cropped.any():
        assert xyxy(out)[0].tolist() == box_of(cropped)
    else:
        assert len(out.clip_to_image()) == 0


# ---- indexing, devices, empty lists --------------------------------------------------------------


def test_getitem_int_and_slice():
    boxes = make_boxlist()
    first = boxes[0]
    assert first.bbox.shape == (1, 4) and first.size == boxes.size
    assert_close(first.bbox, boxes.bbox[:1])
    assert_close(first.get_field("labels"), torch.tensor([3]))
    last = boxes[-1]
    assert_close(last.bbox, boxes.bbox[2:])
    assert last.get_field("extra").log == (("getitem", slice(2, 3)),)
    assert_close(boxes[torch.tensor(1)].bbox, boxes.bbox[1:2])  # 0-d index tensor acts like an int
    tail = boxes[1:]
    assert_close(tail.bbox, boxes.bbox[1:])
    assert_close(tail.get_field("labels"), torch.tensor([1, 2]))
    assert len(tail.get_field("extra")) == 2
    for bad in (3, -4):
        with pytest.raises(IndexError, match="out of range"):
            boxes[bad]


def test_getitem_mask_and_index_tensor():
    boxes = make_boxlist("xywh")
    masked = boxes[torch.tensor([True, False, True])]
    assert masked.mode == "xywh"
    assert_close(masked.bbox, boxes.bbox[[0, 2]])
    assert_close(masked.get_field("labels"), torch.tensor([3, 2]))
    picked = boxes[torch.tensor([2, 0, 2])]  # reorders and repeats
    assert_close(picked.bbox, torch.stack([boxes.bbox[2], boxes.bbox[0], boxes.bbox[2]]))
    assert_close(picked.get_field("labels"), torch.tensor([2, 3, 2]))
    assert len(boxes[torch.zeros(0, dtype=torch.int64)]) == 0


@pytest.mark.parametrize(
    "item, error",
    [
        (torch.tensor([True, False]), IndexError),
        (torch.tensor([0.0, 1.0]), TypeError),
        (torch.tensor([[0, 1]]), TypeError),
        (torch.tensor(True), TypeError),
        (True, TypeError),
        ("labels", TypeError),
    ],
)
def test_getitem_rejects_bad_index(item, error):
    with pytest.raises(error):
        make_boxlist()[item]


@pytest.mark.parametrize("device", DEVICES)
def test_to_moves_boxes_and_fields(device):
    boxes = make_boxlist().to(device)
    assert boxes.bbox.device.type == device and boxes.get_field("labels").device.type == device
    assert boxes.get_field("extra").log == (("to", device),)
    assert_close(boxes.bbox.cpu(), make_boxlist().bbox)


def test_non_contiguous_boxes():
    base = torch.tensor([[1.0, 0.0, 5.0], [2.0, 1.0, 6.0], [4.0, 3.0, 9.0], [8.0, 2.0, 7.0]])
    boxes = BoxList(base.t(), (10, 10))  # rows (1, 2, 4, 8), (0, 1, 3, 2), (5, 6, 9, 7)
    assert not boxes.bbox.is_contiguous()
    assert_close(boxes.area(), torch.tensor([18.0, 3.0, 4.0]))
    assert_close(boxes.transpose(FLIP_LEFT_RIGHT).bbox[:, 0], torch.tensor([6.0, 7.0, 1.0]))


@pytest.mark.parametrize("mode", ["xyxy", "xywh"])
def test_empty_boxlist(mode):
    boxes = BoxList(torch.zeros(0, 4, dtype=torch.float64), (10, 20), mode)
    boxes.add_field("labels", torch.zeros(0, dtype=torch.int64))
    results = [
        boxes.convert("xywh" if mode == "xyxy" else "xyxy"),
        boxes.resize((5, 5)),
        boxes.transpose(FLIP_LEFT_RIGHT),
        boxes.transpose(FLIP_TOP_BOTTOM),
        boxes.crop((0, 0, 4, 4)),
        boxes.clip_to_image(),
        boxes.clip_to_image(remove_empty=False),
        boxes[torch.zeros(0, dtype=torch.bool)],
        boxes[:],
        boxes.copy_with_fields("labels"),
    ]
    for out in results:
        assert out.bbox.shape == (0, 4) and out.bbox.dtype == torch.float64
        assert out.get_field("labels").shape == (0,)
    assert boxes.area().shape == (0,)
    with pytest.raises(IndexError):
        boxes[0]
