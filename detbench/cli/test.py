"""``detbench-test`` (also ``python tools/test_net.py``): evaluate a detector on DATASETS.TEST."""

from __future__ import annotations

import torch

from detbench.config import ConfigError
from detbench.engine.launch import check_final_results, run_test, setup
from detbench.engine.predictions_file import evaluate_saved_predictions
from detbench.modeling.detector import build_detection_model
from detbench.utils.checkpoint import Checkpointer

from .common import argument_parser, parse_args, run_tool

PROG = "detbench-test"
EXAMPLES = """\
  # the quickstart model, after detbench-train with the same config
  detbench-test --config-file detbench://configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml
  # a given weight file, on the CPU
  detbench-test --config-file configs/pennfudan/mask_rcnn_R_18_FPN_scratch.yaml \\
      MODEL.WEIGHT output/pennfudan_scratch/model_final.pth MODEL.DEVICE cpu
  # torchvision's published Mask R-CNN on COCO val2017
  detbench-test --config-file configs/torchvision/maskrcnn_resnet50_fpn.yaml
  # evaluate the saved predictions.pth again (no model built or loaded)
  detbench-test --config-file configs/pennfudan/mask_rcnn_R_18_FPN_scratch.yaml --from-predictions
Weights: MODEL.WEIGHT when set, else OUTPUT_DIR's last checkpoint. Results go to OUTPUT_DIR/inference/.
"""


def _main(argv: list[str] | None) -> None:
    parser = argument_parser(PROG, "Evaluate a detbench detector on DATASETS.TEST", EXAMPLES)
    parser.add_argument("--from-predictions", action="store_true",
                        help="evaluate OUTPUT_DIR/inference/<dataset>/predictions.pth again, without the model")
    args = parse_args(parser, argv)
    cfg, distributed, logger = setup(args, "test_net")
    if args.from_predictions:
        check_final_results(cfg, evaluate_saved_predictions(cfg))
        return
    model = build_detection_model(cfg).to(torch.device(cfg.MODEL.DEVICE))
    checkpointer = Checkpointer(model, save_dir=cfg.OUTPUT_DIR, save_to_disk=False, logger=logger)
    # An explicit MODEL.WEIGHT wins; without one, the last checkpoint of OUTPUT_DIR.
    if not cfg.MODEL.WEIGHT and not checkpointer.has_checkpoint():
        raise ConfigError(f"no weights to evaluate: set MODEL.WEIGHT or train into OUTPUT_DIR ({cfg.OUTPUT_DIR})")
    checkpointer.load(cfg.MODEL.WEIGHT or None, use_latest=not cfg.MODEL.WEIGHT)
    results = run_test(cfg, model, distributed)
    if distributed:
        torch.distributed.destroy_process_group()
    check_final_results(cfg, results)


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``detbench-test``."""
    run_tool(PROG, lambda: _main(argv))
