"""Evaluate a detector on DATASETS.TEST with the weights of MODEL.WEIGHT or OUTPUT_DIR's last checkpoint.

    python tools/test_net.py --config-file configs/e2e_mask_rcnn_R_50_FPN.yaml [KEY VALUE ...]
    torchrun --nproc_per_node=8 tools/test_net.py --config-file ... [KEY VALUE ...]
    python tools/test_net.py --from-predictions --config-file ... [KEY VALUE ...]   (no model needed)
"""

from __future__ import annotations

import torch

from detbench.engine.launch import argument_parser, check_final_results, parse_args, run_test, setup
from detbench.engine.predictions_file import evaluate_saved_predictions
from detbench.modeling.detector import build_detection_model
from detbench.utils import comm
from detbench.utils.checkpoint import Checkpointer


def main() -> None:
    parser = argument_parser("Evaluate a detbench detector")
    parser.add_argument("--from-predictions", action="store_true",
                        help="evaluate OUTPUT_DIR/inference/<dataset>/predictions.pth again, without the model")
    args = parse_args(parser)
    cfg, distributed, logger = setup(args, "test_net")
    if args.from_predictions:
        check_final_results(cfg, evaluate_saved_predictions(cfg))
        return
    model = build_detection_model(cfg).to(torch.device(cfg.MODEL.DEVICE))
    checkpointer = Checkpointer(model, save_dir=cfg.OUTPUT_DIR, save_to_disk=False, logger=logger)
    # An explicit MODEL.WEIGHT wins; without one, the last checkpoint of OUTPUT_DIR.
    if not cfg.MODEL.WEIGHT and not checkpointer.has_checkpoint():
        raise SystemExit(f"no weights to evaluate: set MODEL.WEIGHT or train into OUTPUT_DIR ({cfg.OUTPUT_DIR})")
    checkpointer.load(cfg.MODEL.WEIGHT or None, use_latest=not cfg.MODEL.WEIGHT)
    results = run_test(cfg, model, distributed)
    if distributed:
        torch.distributed.destroy_process_group()
    check_final_results(cfg, results)


if __name__ == "__main__":
    main()
