"""Pascal VOC detection metric (mean AP at IoU 0.5, the 11-point or the area version)."""

from .voc_eval import average_precision, do_voc_evaluation, eval_detection_voc, match_detections

__all__ = ["average_precision", "do_voc_evaluation", "eval_detection_voc", "match_detections"]
