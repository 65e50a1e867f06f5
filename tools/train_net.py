"""Train a detector, then evaluate it on DATASETS.TEST.

    python tools/train_net.py --config-file configs/e2e_mask_rcnn_R_50_FPN.yaml [KEY VALUE ...]
    torchrun --nproc_per_node=8 tools/train_net.py --config-file ... [KEY VALUE ...]
"""

from __future__ import annotations


import torch

from detbench.engine.launch import argument_parser, check_final_results, parse_args, run_test, setup
from detbench.engine.resume_check import check_resume_compatible
from detbench.engine.trainer import MetricsFile, do_train
from detbench.modeling.detector import build_detection_model
from detbench.solver import make_gradient_clipper, make_lr_scheduler, make_optimizer
from detbench.solver.ema import build_ema
from detbench.utils import comm
from detbench.utils.checkpoint import Checkpointer
from detbench.utils.plot_metrics import plot_metrics


def train(cfg, distributed: bool, logger) -> tuple[torch.nn.Module, int]:
    """Train (or resume) per ``cfg``; returns the model and the last iteration."""
    from detbench.data import make_data_loader

    device = torch.device(cfg.MODEL.DEVICE)
    model = build_detection_model(cfg).to(device)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer)
    checkpointer = Checkpointer(model, optimizer, scheduler, cfg.OUTPUT_DIR, comm.is_main_process(), logger,
                                keep=cfg.SOLVER.CHECKPOINTS_TO_KEEP)
    extra = checkpointer.load(cfg.MODEL.WEIGHT)
    if extra:  # resumed: only the same model and data order may continue
        check_resume_compatible(extra.pop("config", None), cfg, f"the last checkpoint of {cfg.OUTPUT_DIR}")
    # The config travels in every checkpoint, for the check above when this run is resumed.
    arguments = {"iteration": 0, **extra, "config": cfg.dump()}
    ema = build_ema(cfg, model)  # from the loaded weights; a resumed run continues its average
    if ema is not None and "ema" in arguments:
        ema.load_state_dict(arguments["ema"])
    if "weights_before_ema" in arguments:  # resumed from an EMA run's model_final: train on from the raw weights
        model.load_state_dict(arguments.pop("weights_before_ema"))
    if distributed:
        device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    data_loader = make_data_loader(cfg, is_train=True, is_distributed=distributed,
                                   start_iter=arguments["iteration"])
    amp = cfg.DTYPE == "float16"
    if amp and device.type != "cuda":
        raise ValueError("DTYPE float16 (mixed precision) needs MODEL.DEVICE cuda")
    test_fn = (lambda m: run_test(cfg, m, distributed)) if cfg.SOLVER.TEST_PERIOD > 0 else None
    do_train(model, data_loader, optimizer, scheduler, checkpointer, device, cfg.SOLVER.CHECKPOINT_PERIOD,
             arguments, log_period=cfg.SOLVER.LOG_PERIOD, output_dir=cfg.OUTPUT_DIR,
             test_period=cfg.SOLVER.TEST_PERIOD, test_fn=test_fn, amp=amp,
             clip_gradients=make_gradient_clipper(cfg), ema=ema)
    return model, int(arguments["iteration"])


def write_curves(cfg, final_iter: int, results: dict, logger) -> None:
    """Main process: add the final evaluation to metrics.jsonl (once per iteration) and draw
    OUTPUT_DIR/training_curves.png. A failure is logged, never raised: the run has succeeded."""
    if not cfg.OUTPUT_DIR or not comm.is_main_process():
        return
    try:
        metrics = MetricsFile(cfg.OUTPUT_DIR)
        if results and metrics.append_eval(final_iter, results):
            logger.info("Final evaluation (iteration %d) appended to %s", final_iter, metrics.path)
        logger.info("Training curves: %s", plot_metrics(cfg.OUTPUT_DIR))
    except Exception as exc:  # drawing is a convenience: any error is reported, never raised
        logger.warning("Could not draw the training curves: %s: %s", type(exc).__name__, exc)


def main() -> None:
    parser = argument_parser("Train a detbench detector")
    parser.add_argument("--skip-test", action="store_true", help="do not evaluate after training")
    args = parse_args(parser)
    cfg, distributed, logger = setup(args, "train_net")
    try:
        model, final_iter = train(cfg, distributed, logger)
    except KeyboardInterrupt:  # Ctrl-C: the trainer saved the current iteration first
        raise SystemExit(130) from None
    results = {} if args.skip_test else run_test(cfg, model, distributed)
    write_curves(cfg, final_iter, results, logger)
    if distributed:
        torch.distributed.destroy_process_group()
    check_final_results(cfg, results)


if __name__ == "__main__":
    main()
