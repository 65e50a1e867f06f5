"""The Pascal VOC metric: a hand-computed case, ground truth scoring 1.0, difficult objects, the
devkit's IoU threshold, and evaluate() on a tiny devkit folder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from detbench.data.datasets.evaluation import evaluate
from detbench.data.datasets.evaluation.voc import average_precision, eval_detection_voc, match_detections
from detbench.data.datasets.voc import PascalVOCDataset
from detbench.structures import BoxList

NAMES = {1: "aeroplane", 2: "bicycle", 3: "bird"}


def boxlist(boxes, labels, size=(100, 100), scores=None, difficult=None) -> BoxList:
    out = BoxList(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), size)
    out.add_field("labels", torch.tensor(labels, dtype=torch.int64))
    if scores is not None:
        out.add_field("scores", torch.tensor(scores, dtype=torch.float32))
    if difficult is not None:
        out.add_field("difficult", torch.tensor(difficult, dtype=torch.bool))
    return out


def hand_case() -> tuple[list[BoxList], list[BoxList]]:
    """Class 1: image A has g1, g2 and g3 (difficult), image B has g4; class 2 only a difficult
    object; class 3 one object and no detection. Class-1 detections:
    A: d1 0.9 on g1, d2 0.8 on g1 again (IoU 0.81), d3 0.7 on g3, d4 0.5 on nothing; B: d5 0.6 on g4."""
    gt_a = boxlist([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60], [70, 0, 80, 10]], [1, 1, 1, 2],
                   difficult=[False, False, True, True])
    gt_b = boxlist([[0, 0, 10, 10], [40, 40, 50, 50]], [1, 3], difficult=[False, False])
    det_a = boxlist([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60], [80, 80, 90, 90]], [1, 1, 1, 1],
                    scores=[0.9, 0.8, 0.7, 0.5])
    det_b = boxlist([[0, 0, 10, 10]], [1], scores=[0.6])
    return [det_a, det_b], [gt_a, gt_b]


def test_hand_computed_case():
    # Class 1, detections by score: d1 TP (takes g1), d2 FP (g1 taken), d3 ignored (its match g3 is
    # difficult), d5 TP (g4), d4 FP. Positives: g1, g2, g4 = 3 (g3 is difficult).
    #   after d1: TP 1 FP 0 -> precision 1,   recall 1/3
    #   after d2: TP 1 FP 1 -> precision 1/2, recall 1/3
    #   after d5: TP 2 FP 1 -> precision 2/3, recall 2/3
    #   after d4: TP 2 FP 2 -> precision 1/2, recall 2/3
    # 11-point: t = 0, .1, .2, .3 -> max precision at recall >= t is 1; t = .4, .5, .6 -> 2/3;
    #   t = .7 .. 1 -> recall never reaches t -> 0. AP = (4 * 1 + 3 * 2/3) / 11 = 6/11.
    # Area: precision made monotone from the right is 1 up to recall 1/3, then 2/3 up to 2/3, then 0:
    #   AP = 1/3 * 1 + 1/3 * 2/3 + 1/3 * 0 = 5/9.
    # Class 2 has only a difficult object: AP NaN, not in the mean. Class 3: a missed object, AP 0.
    predictions, truth = hand_case()
    for metric, ap in (("11point", 6 / 11), ("area", 5 / 9)):
        result = eval_detection_voc(predictions, truth, NAMES, metric)
        assert result["per_category"]["aeroplane"] == pytest.approx(ap, abs=1e-12)
        assert math.isnan(result["per_category"]["bicycle"])
        assert result["per_category"]["bird"] == 0.0
        assert result["mAP"] == pytest.approx(ap / 2, abs=1e-12)


def test_precision_recall_steps_of_the_hand_case():
    predictions, truth = hand_case()
    outcome = match_detections(predictions[0].bbox, predictions[0].get_field("scores"), truth[0].bbox[:3],
                               truth[0].get_field("difficult")[:3])
    assert outcome.tolist() == [1, 0, -1, 0]  # TP, FP (duplicate), ignored (difficult), FP
    precision, recall = np.array([1, 1 / 2, 2 / 3, 1 / 2]), np.array([1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert average_precision(precision, recall, "11point") == pytest.approx(6 / 11)
    assert average_precision(precision, recall, "area") == pytest.approx(5 / 9)


@pytest.mark.parametrize("metric", ["11point", "area"])
def test_ground_truth_as_detections_scores_one(metric):
    _, truth = hand_case()
    # Every object, difficult ones included (they are ignored), detected with score 1.0.
    predictions = [boxlist(t.bbox.tolist(), t.get_field("labels").tolist(), scores=[1.0] * len(t)) for t in truth]
    result = eval_detection_voc(predictions, truth, NAMES, metric)
    assert result["mAP"] == 1.0
    assert result["per_category"]["aeroplane"] == 1.0 and result["per_category"]["bird"] == 1.0


def test_difficult_objects_are_neither_missed_nor_false_positives():
    truth = [boxlist([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], difficult=[False, True])]
    only_easy = [boxlist([[0, 0, 10, 10]], [1], scores=[0.5])]
    assert eval_detection_voc(only_easy, truth, NAMES, "area")["per_category"]["aeroplane"] == 1.0
    # A higher-scored detection of the difficult object changes nothing either.
    both = [boxlist([[20, 20, 30, 30], [0, 0, 10, 10]], [1, 1], scores=[0.9, 0.5])]
    assert eval_detection_voc(both, truth, NAMES, "area")["per_category"]["aeroplane"] == 1.0
    # Without the flag the same object counts: missed (recall 1/2) or a true positive.
    plain = [boxlist(truth[0].bbox.tolist(), [1, 1])]
    assert eval_detection_voc(only_easy, plain, NAMES, "area")["per_category"]["aeroplane"] == 0.5


def test_iou_threshold_is_inclusive_as_in_the_devkit():
    # VOC boxes (1, 1, 10, 10) and (1, 1, 5, 10): the devkit's IoU is 5*10 / (10*10) = 0.5 exactly,
    # and it counts overlap >= 0.5 as a match. Continuous boxes (0, 0, 10, 10), (0, 0, 5, 10): also 0.5.
    truth = [boxlist([[0, 0, 10, 10]], [1], difficult=[False])]
    half = [boxlist([[0, 0, 5, 10]], [1], scores=[0.9])]
    assert eval_detection_voc(half, truth, NAMES, "area")["per_category"]["aeroplane"] == 1.0
    less = [boxlist([[0, 0, 4.99, 10]], [1], scores=[0.9])]
    assert eval_detection_voc(less, truth, NAMES, "area")["per_category"]["aeroplane"] == 0.0


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="11point"):
        average_precision(np.ones(1), np.ones(1), "coco")


def _devkit(voc, root):
    objects_a = [("aeroplane", (1, 1, 10, 10), 0), ("aeroplane", (21, 21, 30, 30), 0),
                 ("aeroplane", (51, 51, 60, 60), 1)]
    objects_b = [("aeroplane", (1, 1, 10, 10), 0), ("bird", (41, 41, 50, 50), 0)]
    return voc.write(root, {"a": (100, 100, objects_a), "b": (100, 80, objects_b)}, {"test": ["a", "b"]})


@pytest.mark.parametrize("folder, metric, expected", [("VOC2007", "auto", 6 / 11), ("VOC2012", "auto", 5 / 9),
                                                      ("VOC2007", "area", 5 / 9)])
def test_evaluate_on_a_devkit_folder(voc, tmp_path, folder, metric, expected):
    """evaluate() picks the VOC metric for a PascalVOCDataset; predictions in another size are
    resized, and an image without predictions only contributes its ground truth."""
    dataset = PascalVOCDataset(_devkit(voc, tmp_path / folder), "test", metric=metric)
    # The hand case's class-1 detections of image A (continuous = VOC box - 1 at the top left),
    # given at twice the size; image B's prediction is missing, so g4 and the bird are missed.
    det_a = boxlist([[0, 0, 20, 20], [2, 2, 20, 20], [100, 100, 120, 120], [160, 160, 180, 180]], [1, 1, 1, 1],
                    size=(200, 200), scores=[0.9, 0.8, 0.7, 0.5])
    # Class 1 now: TP, FP, ignored, FP with 3 positives -> precision 1, 1/2, 1/3; recall 1/3 each.
    # 11-point: t = 0 .. .3 -> 1, rest 0 -> 4/11; area: 1/3 * 1 = 1/3. Bird: AP 0.
    only_a = {0: det_a}
    result = evaluate(dataset, only_a, tmp_path / "out", iou_types=("bbox", "segm"))
    ap = 4 / 11 if dataset.voc_metric == "11point" else 1 / 3
    assert result["bbox"]["per_category"]["aeroplane"] == pytest.approx(ap)
    assert result["bbox"]["per_category"]["bird"] == 0.0
    assert result["bbox"]["mAP"] == pytest.approx(ap / 2)
    assert set(result) == {"bbox"}  # no segm ground truth in VOC
    written = json.loads((tmp_path / "out" / "voc_results.json").read_text())
    assert written["bbox"]["metric"] == dataset.voc_metric and written["bbox"]["per_category"]["cat"] is None
    # With image B's detection the hand case is complete.
    det_b = boxlist([[0, 0, 10, 10]], [1], size=(100, 80), scores=[0.6])
    full = evaluate(dataset, [det_a, det_b])
    assert full["bbox"]["per_category"]["aeroplane"] == pytest.approx(expected)
