"""``detbench-train`` (also ``python tools/train_net.py``): train a detector, then evaluate it."""

from __future__ import annotations

import logging

import torch

from detbench.engine.launch import check_final_results, run_test, setup
from detbench.engine.resume_check import check_resume_compatible
from detbench.engine.trainer import MetricsFile, do_train
from detbench.modeling.detector import build_detection_model
from detbench.solver import make_gradient_clipper, make_lr_scheduler, make_optimizer
from detbench.solver.ema import build_ema
from detbench.utils import comm
from detbench.utils.checkpoint import Checkpointer
from detbench.utils.plot_metrics import plot_metrics

from .common import add_resume_flags, argument_parser, parse_args, run_tool

PROG = "detbench-train"
EXAMPLES = """\
  # the quickstart: Mask R-CNN on the generated shapes dataset, on the CPU (about 10 minutes)
  detbench-train --config-file detbench://configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml
  # Penn-Fudan from scratch (python tools/download.py penn_fudan first), a shorter run
  detbench-train --config-file configs/pennfudan/mask_rcnn_R_18_FPN_scratch.yaml SOLVER.MAX_ITER 300
  # start again from MODEL.WEIGHT although OUTPUT_DIR has a checkpoint
  detbench-train --config-file my.yaml --no-resume OUTPUT_DIR output/run2
  # 8 GPUs
  torchrun --nproc_per_node=8 tools/train_net.py --config-file configs/e2e_mask_rcnn_R_50_FPN_1x.yaml
Checkpoints, log.txt, metrics.jsonl, TensorBoard events and training_curves.png go to OUTPUT_DIR
(default output/<config file name>). Running the same command again resumes from its last checkpoint.
"""


def should_resume(cfg, checkpointer: Checkpointer, flag: bool | None, logger: logging.Logger) -> bool:
    """Whether to continue from OUTPUT_DIR's ``last_checkpoint``, per ``--resume`` / ``--no-resume``.

    ``flag`` None (neither given): resume exactly when there is a checkpoint. True: there must be
    one (else ConfigError). False: ignore it; training starts from MODEL.WEIGHT.
    This is the one place that decides; once the checkpoint is read, :func:`train` refuses it
    when its saved config builds another model or data order
    (:func:`detbench.engine.resume_check.check_resume_compatible`).
    """
    from detbench.config import ConfigError

    found = checkpointer.has_checkpoint()
    if flag is True and not found:
        raise ConfigError(f"--resume: OUTPUT_DIR {cfg.OUTPUT_DIR!r} has no last_checkpoint to resume from")
    if flag is False and found:
        logger.warning("--no-resume: ignoring %s; starting from %s", checkpointer.get_checkpoint_file(),
                       cfg.MODEL.WEIGHT or "random initialisation")
    return found and flag is not False


def check_precision(cfg) -> None:
    """DTYPE float16 (autocast + GradScaler) is for CUDA devices: refused elsewhere, before anything
    is built, with a ConfigError naming DTYPE and MODEL.DEVICE."""
    from detbench.config import ConfigError

    if cfg.DTYPE == "float16" and not cfg.MODEL.DEVICE.startswith("cuda"):
        raise ConfigError(f"DTYPE 'float16' (mixed-precision training) needs a CUDA device, but MODEL.DEVICE is "
                          f"{cfg.MODEL.DEVICE!r}; use DTYPE float32 on the CPU")


def train(cfg, distributed: bool, logger: logging.Logger, resume: bool | None = None) -> tuple[torch.nn.Module, int]:
    """Train (or resume) per ``cfg``; returns the model and the last iteration."""
    from detbench.data import make_data_loader

    check_precision(cfg)
    device = torch.device(cfg.MODEL.DEVICE)
    model = build_detection_model(cfg).to(device)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer)
    checkpointer = Checkpointer(model, optimizer, scheduler, cfg.OUTPUT_DIR, comm.is_main_process(), logger,
                                keep=cfg.SOLVER.CHECKPOINTS_TO_KEEP)
    use_latest = should_resume(cfg, checkpointer, resume, logger)
    extra = checkpointer.load(cfg.MODEL.WEIGHT, use_latest=use_latest)
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
    test_fn = (lambda m: run_test(cfg, m, distributed)) if cfg.SOLVER.TEST_PERIOD > 0 else None
    do_train(model, data_loader, optimizer, scheduler, checkpointer, device, cfg.SOLVER.CHECKPOINT_PERIOD,
             arguments, log_period=cfg.SOLVER.LOG_PERIOD, output_dir=cfg.OUTPUT_DIR,
             test_period=cfg.SOLVER.TEST_PERIOD, test_fn=test_fn, amp=amp,
             clip_gradients=make_gradient_clipper(cfg), ema=ema)
    return model, int(arguments["iteration"])


def write_curves(cfg, final_iter: int, results: dict, logger: logging.Logger) -> None:
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


def _main(argv: list[str] | None) -> None:
    parser = argument_parser(PROG, "Train a detbench detector, then evaluate it on DATASETS.TEST", EXAMPLES)
    parser.add_argument("--skip-test", action="store_true", help="do not evaluate after training")
    add_resume_flags(parser)
    args = parse_args(parser, argv)
    cfg, distributed, logger = setup(args, "train_net")
    try:
        model, final_iter = train(cfg, distributed, logger, args.resume)
    except KeyboardInterrupt:  # Ctrl-C: the trainer saved the current iteration first
        raise SystemExit(130) from None
    results = {} if args.skip_test else run_test(cfg, model, distributed)
    write_curves(cfg, final_iter, results, logger)
    if distributed:
        torch.distributed.destroy_process_group()
    if args.skip_test:
        if cfg.TEST.EXPECTED_RESULTS:
            logger.warning("--skip-test: TEST.EXPECTED_RESULTS is not checked")
        return
    check_final_results(cfg, results)


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``detbench-train``."""
    run_tool(PROG, lambda: _main(argv))
