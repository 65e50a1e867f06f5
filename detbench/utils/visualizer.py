"""Drawing detections or ground truth on an image with Pillow and numpy only.

:func:`draw_instances` takes a BoxList of predictions (fields "scores", "labels", "mask",
"keypoints") or of ground truth ("labels", "masks" as a SegmentationMask, "keypoints" with
COCO visibility) and returns a new RGB image: translucent mask fills with an outline, boxes,
person skeletons and a "name 0.93" label per instance, one palette colour per instance.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from detbench.structures.mask_ops import paste_masks_in_image
from detbench.structures.bounding_box import BoxList
from detbench.structures.keypoint import Keypoints, PersonKeypoints

# Instance colours (RGB), cycled: saturated, distinct from each other, readable under white text.
PALETTE = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 200, 200),
    (240, 50, 230), (150, 170, 20), (0, 128, 128), (170, 110, 40), (128, 0, 0), (0, 0, 128),
)
# Limbs of the COCO person skeleton as pairs of PersonKeypoints.NAMES entries.
PERSON_SKELETON = (
    ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
    ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"), ("left_shoulder", "left_elbow"),
    ("right_shoulder", "right_elbow"), ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"),
    ("left_eye", "right_eye"), ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
    ("right_eye", "right_ear"), ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
)


def load_font(size: int) -> ImageFont.ImageFont:
    """Pillow's default font at ``size`` pixels (a fixed bitmap font before Pillow 10.1)."""
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 ships a scalable default font
    except TypeError:
        return ImageFont.load_default()


def _as_image(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB array, got shape {array.shape} and dtype {array.dtype}")
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def instance_masks(boxlist: BoxList, mask_threshold: float = 0.5) -> np.ndarray | None:
    """bool [N, H, W] masks of ``boxlist`` (``size = (W, H)``), or None without masks.

    "mask" holds probabilities or bools, [N, 1, H, W] (pasted, e.g. by the Predictor) or
    [N, 1, M, M] inside each box (pasted here; a non-square one is taken as pasted at another
    image size and resized); "masks" is a SegmentationMask (rasterised).
    """
    width, height = boxlist.size
    if boxlist.has_field("mask"):
        masks = boxlist.get_field("mask").detach().cpu()
        if masks.dim() == 4 and tuple(masks.shape[-2:]) != (height, width):
            if masks.shape[-1] == masks.shape[-2]:  # box-relative M x M masks
                masks = paste_masks_in_image(masks.float(), boxlist.convert("xyxy").bbox.cpu(), (height, width))
            else:  # pasted at another image size (the network's input)
                masks = F.interpolate(masks.float(), size=(height, width), mode="bilinear", align_corners=False)
        masks = masks.reshape(len(boxlist), height, width)
    elif boxlist.has_field("masks"):
        masks = boxlist.get_field("masks").get_mask_tensor().cpu()
    else:
        return None
    if masks.dtype == torch.bool:
        return masks.numpy()
    if masks.is_floating_point():
        return (masks > mask_threshold).numpy()
    return (masks > 0).numpy()  # uint8 0/1 bitmasks


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` [H, W] bool with a 4-neighbour outside it (the image border counts as outside)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def _fill_masks(pixels: np.ndarray, masks: np.ndarray, colours: Sequence[tuple], alpha: float) -> None:
    """Blend each mask's colour into ``pixels`` [H, W, 3] float in place, then draw its outline."""
    for mask, colour in zip(masks, colours):
        colour = np.asarray(colour, dtype=np.float32)
        pixels[mask] = (1 - alpha) * pixels[mask] + alpha * colour
        pixels[_outline(mask)] = colour


def _label_text(label: int, score: float | None, class_names: Sequence[str] | None) -> str:
    name = class_names[label] if class_names is not None and 0 <= label < len(class_names) else str(label)
    return name if score is None else f"{name} {score:.2f}"


Rect = tuple[float, float, float, float]  # (x0, y0, x1, y1)


def _overlap(a: Rect, b: Rect) -> float:
    """Area of the intersection of two rectangles."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def place_label(box: Sequence[float], text_size: tuple[float, float], image_size: tuple[int, int],
                occupied: Sequence[Rect] = ()) -> Rect:
    """Where a label of ``text_size`` (w, h) for ``box`` goes: the candidate position around the
    box (above, below, right, left; left- or right-aligned) that, moved inside the image, covers
    the least of its own box, then the least of the ``occupied`` rectangles (other boxes and the
    labels placed so far), preferring the earlier candidates on ties."""
    (w, h), (width, height) = text_size, image_size
    x0, y0, x1, y1 = box
    candidates = [(x0, y0 - h), (x0, y1), (x1 - w, y0 - h), (x1 - w, y1), (x1, y0), (x0 - w, y0),
                  (x1, y1 - h), (x0 - w, y1 - h)]
    best: tuple[float, float, int] | None = None
    chosen: Rect = (0.0, 0.0, w, h)
    for rank, (x, y) in enumerate(candidates):
        x = min(max(x, 0.0), max(width - w, 0.0))
        y = min(max(y, 0.0), max(height - h, 0.0))
        rect = (x, y, x + w, y + h)
        score = (_overlap(rect, (x0, y0, x1, y1)), sum(_overlap(rect, o) for o in occupied), rank)
        if best is None or score < best:
            best, chosen = score, rect
    return chosen


def _draw_label(draw: ImageDraw.ImageDraw, rect: Rect, text: str, colour: tuple, font: ImageFont.ImageFont) -> None:
    """``text`` in white on a ``colour`` rectangle ``rect`` (2 px of padding)."""
    left, top, _, _ = draw.textbbox((0, 0), text, font=font)
    draw.rectangle((rect[0], rect[1], rect[2] - 1, rect[3] - 1), fill=colour)
    draw.text((rect[0] + 2 - left, rect[1] + 2 - top), text, fill=(255, 255, 255), font=font)


def upscale_factor(size: tuple[int, int], min_size: int) -> int:
    """The integer factor that brings the shorter side of ``size`` to at least ``min_size`` (1: none)."""
    short = min(size)
    return max(1, -(-min_size // short)) if min_size > 0 and short > 0 else 1


def _draw_keypoints(draw: ImageDraw.ImageDraw, keypoints: Keypoints, scores: torch.Tensor | None,
                    colours: Sequence[tuple], threshold: float, radius: int) -> None:
    """Dots at keypoints with visibility > 0 (and score > ``threshold`` when scored); limbs of
    PersonKeypoints between two drawn dots."""
    points = keypoints.keypoints.detach().cpu()
    visible = points[..., 2] > 0
    if scores is not None:
        visible &= scores.detach().cpu() > threshold
    names = PersonKeypoints.NAMES
    limbs = []
    if isinstance(keypoints, PersonKeypoints):
        limbs = [(names.index(a), names.index(b)) for a, b in PERSON_SKELETON]
    for kps, shown, colour in zip(points.tolist(), visible.tolist(), colours):
        for a, b in limbs:
            if shown[a] and shown[b]:
                draw.line((kps[a][0], kps[a][1], kps[b][0], kps[b][1]), fill=colour, width=max(radius - 1, 1))
        for (x, y, _), show in zip(kps, shown):
            if show:
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour, outline=(255, 255, 255))


def draw_instances(
    image: Image.Image | np.ndarray,
    boxlist: BoxList,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    keypoint_threshold: float = 2.0,
    alpha: float = 0.45,
    min_size: int = 0,
) -> Image.Image:
    """A copy of ``image`` (PIL or H x W x 3 uint8 RGB) with the instances of ``boxlist`` drawn.

    ``boxlist`` is resized to the image first when its size differs (a prediction at the
    network's input size). Instances scoring below ``score_threshold`` are left out (ground
    truth has no "scores": all are drawn). ``class_names[label]`` names a label (else the
    number is shown). Masks are cut at ``mask_threshold`` when they hold probabilities;
    predicted keypoints are drawn where their heatmap logit exceeds ``keypoint_threshold``.
    With ``min_size``, an image whose shorter side is smaller is enlarged by a whole factor
    (nearest neighbour: each pixel becomes a square, masks too) before drawing, so that lines
    and labels are readable on small images. Labels go beside their box, not over it
    (:func:`place_label`).
    """
    canvas = _as_image(image)
    if tuple(boxlist.size) != canvas.size:
        boxlist = boxlist.resize(canvas.size)
    if boxlist.has_field("scores"):
        boxlist = boxlist[boxlist.get_field("scores").detach().cpu() >= score_threshold]
    masks = instance_masks(boxlist, mask_threshold)  # at the image's own size
    factor = upscale_factor(canvas.size, min_size)
    if factor > 1:
        canvas = canvas.resize((canvas.width * factor, canvas.height * factor), Image.NEAREST)
        boxlist = boxlist.resize(canvas.size)
        masks = None if masks is None else masks.repeat(factor, axis=1).repeat(factor, axis=2)
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(boxlist))]
    if masks is not None and len(boxlist):
        pixels = np.asarray(canvas, dtype=np.float32)
        _fill_masks(pixels, masks, colours, alpha)
        canvas = Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(canvas)
    scale = max(min(canvas.size) / 400, 1.0)  # thicker lines and larger text on large images
    boxes = boxlist.convert("xyxy").bbox.detach().cpu().tolist()
    for box, colour in zip(boxes, colours):
        draw.rectangle(box, outline=colour, width=max(int(2 * scale), 1))
    if boxlist.has_field("keypoints"):
        scores = boxlist.get_field("keypoints_scores") if boxlist.has_field("keypoints_scores") else None
        _draw_keypoints(draw, boxlist.get_field("keypoints"), scores, colours, keypoint_threshold, int(2 * scale) + 1)
    labels = boxlist.get_field("labels").tolist() if boxlist.has_field("labels") else [None] * len(boxlist)
    scores = boxlist.get_field("scores").tolist() if boxlist.has_field("scores") else [None] * len(boxlist)
    font = load_font(int(11 * scale))
    occupied: list[Rect] = [tuple(b) for b in boxes]
    for i, (box, label, score, colour) in enumerate(zip(boxes, labels, scores, colours)):
        if label is None and score is None:
            continue
        text = _label_text(label, score, class_names) if label is not None else f"{score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        others = occupied[:i] + occupied[i + 1:]  # every other box, and the labels placed so far
        rect = place_label(box, (right - left + 4, bottom - top + 4), canvas.size, others)
        _draw_label(draw, rect, text, colour, font)
        occupied.append(rect)
    return canvas
