"""The iteration-based training loop."""

from __future__ import annotations

import datetime
import json
import logging
import math
import random
import resource
import signal
import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from detbench.utils import comm
from detbench.utils.events import EventWriter
from detbench.utils.metric_logger import MetricLogger

logger = logging.getLogger("detbench.trainer")


def _memory_mb(device: torch.device) -> float:
    """Peak memory: CUDA allocator peak on a GPU, else the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def check_losses_finite(loss_dict: dict[str, torch.Tensor], iteration: int) -> None:
    """Raise FloatingPointError naming the first non-finite loss term and the iteration."""
    # One host sync per iteration for the common, all-finite case; the loop only runs on failure.
    if not loss_dict or torch.isfinite(torch.stack([v.detach().float().reshape(()) for v in loss_dict.values()])).all():
        return
    for name, value in loss_dict.items():
        if not torch.isfinite(value).all():
            raise FloatingPointError(
                f"loss {name} = {value.item()} at iteration {iteration}: training stopped; "
                f"the last checkpoint in OUTPUT_DIR is intact (lower SOLVER.BASE_LR or check the data)"
            )


class StopOnSignal:
    """Turns SIGINT (Ctrl-C) and SIGTERM into a request to stop after the current iteration.

    Used as a context manager around the training loop: on entry the handlers are
    installed (main thread only: Python delivers signals there, and ``signal.signal``
    refuses other threads; a signal the process was told to ignore stays ignored),
    on exit the previous ones are restored. The first signal
    only records its number; a second one raises at once (see :meth:`exception`), a
    way out of an iteration that hangs. DataLoader workers forked inside the block
    inherit the handler, so a Ctrl-C that reaches the whole process group does not
    kill them before the main process has finished its iteration.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum = 0  # 0: no signal received
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:  # e.g. SIGINT in a background job
                    self._previous[signum] = signal.signal(signum, self._handle)
        else:
            logger.warning("Training outside the main thread: SIGINT/SIGTERM will not save a checkpoint")
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            # None means a handler installed from C, which Python cannot reinstall: use the default.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        # Only record the signal: logging or saving here could re-enter code the signal interrupted.
        if self.signum:
            raise self.exception(signum)
        self.signum = signum

    def requested(self, device: torch.device) -> bool:
        """Collective when distributed: True on every rank once any rank got a signal.

        The ranks must stop at the same iteration, since saving a checkpoint is
        collective; the signal number is agreed on too (the largest: SIGTERM over SIGINT).
        """
        if comm.get_world_size() > 1:
            flag = torch.tensor([self.signum], dtype=torch.int64, device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self.signum = int(flag.item())
        return self.signum != 0

    def exception(self, signum: int | None = None) -> BaseException:
        """KeyboardInterrupt for SIGINT, else SystemExit with the shell's status 128 + signal number."""
        signum = signum or self.signum
        if signum == signal.SIGINT:
            return KeyboardInterrupt(f"training stopped by {signal.Signals(signum).name}")
        return SystemExit(128 + signum)


class MetricsFile:
    """Appends one JSON object per line to ``OUTPUT_DIR/metrics.jsonl`` (main process only), and
    the same values to TensorBoard event files in OUTPUT_DIR (detbench.utils.events)."""

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / "metrics.jsonl" if output_dir else None
        self.events = EventWriter(output_dir)

    def write(self, record: dict) -> None:
        if self.path is None or not comm.is_main_process():
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.events.write(record)

    def append_eval(self, iteration: int, results: dict) -> bool:
        """Write ``{"iteration": iteration, "eval": results}`` unless the file already has an
        evaluation of ``iteration`` (a rerun of a finished training) or ``results`` holds
        nothing (``{}``, or ``{dataset: {}}``). True when a line was written."""
        if self.path is None or not comm.is_main_process() or not any(results.values()):
            return False
        if self.path.is_file():
            from detbench.utils.plot_metrics import read_metrics

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # bad lines are reported when plotting
                if any("eval" in r and r["iteration"] == iteration for r in read_metrics(self.path)):
                    return False
        self.write({"iteration": iteration, "eval": results})
        return True


def do_train(
    model: nn.Module,
    data_loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler,
    checkpointer,
    device: torch.device,
    checkpoint_period: int,
    arguments: dict,
    log_period: int = 20,
    output_dir: str = "",
    test_period: int = 0,
    test_fn: Callable[[nn.Module], dict] | None = None,
    amp: bool = False,
    clip_gradients: Callable[[Iterable[torch.Tensor]], object] | None = None,
    ema=None,
) -> None:
    """Train from ``arguments["iteration"]`` for the ``len(data_loader)`` iterations that remain.

    Each batch is ``(ImageList, targets, indices)``. Losses are summed, checked for
    finiteness, back-propagated (with a GradScaler under ``amp``, CUDA only); the
    scheduler steps every iteration. ``clip_gradients`` (see
    :func:`detbench.solver.make_gradient_clipper`) gets the optimizer's parameters, their
    gradients unscaled, before each step. ``ema`` (a :class:`detbench.solver.ema.ModelEMA`)
    is updated after each step, saved in every checkpoint as "ema", its weights are the
    ones ``test_fn`` evaluates, and they replace the model's at the end (model_final). Metrics are logged every ``log_period`` and
    appended to ``metrics.jsonl``; checkpoints are saved every ``checkpoint_period``
    and as ``model_final`` at the end; ``test_fn`` runs every ``test_period``.

    SIGINT or SIGTERM (on any rank) stops training once the current iteration is
    done: its checkpoint is saved, then KeyboardInterrupt (SIGINT) or SystemExit(143)
    (SIGTERM) is raised, so the process exits with a non-zero status. A second
    signal raises at once, without finishing the iteration or saving.
    """
    meters = MetricLogger(delimiter="  ")
    metrics_file = MetricsFile(output_dir)
    start_iter = arguments["iteration"]
    max_iter = start_iter + len(data_loader)  # the loader yields the remaining iterations only
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    if amp and "grad_scaler" in arguments:  # resumed mixed-precision run
        scaler.load_state_dict(arguments["grad_scaler"])
    autocast = torch.autocast(device.type, dtype=torch.float16) if amp else nullcontext()
    iters_per_epoch = iterations_per_epoch(data_loader)
    model.train()
    logger.info("Start training at iteration %d of %d%s", start_iter, max_iter,
                f" ({iters_per_epoch} iterations per epoch)" if iters_per_epoch else "")
    start = end = time.perf_counter()
    # Installed before the loader is iterated, so that forked workers inherit the handlers.
    with StopOnSignal() as stop:
        for iteration, (images, targets, _) in enumerate(data_loader, start_iter + 1):
            data_time = time.perf_counter() - end
            arguments["iteration"] = iteration
            images = images.to(device)
            targets = [t.to(device) for t in targets]
            with autocast:
                loss_dict = model(images, targets)
            losses = sum(loss_dict.values())
            # Checked after the all-reduce, so a non-finite loss on any rank stops every rank together.
            reduced = comm.reduce_dict({k: v.detach() for k, v in loss_dict.items()})
            check_losses_finite(reduced, iteration)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses).backward()
            if clip_gradients is not None:
                scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
                clip_gradients(p for group in optimizer.param_groups for p in group["params"])
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update(_unwrapped(model))
                arguments["ema"] = ema.state_dict()  # references, not copies: cheap every iteration

            batch_time = time.perf_counter() - end
            end = time.perf_counter()
            meters.update(loss=sum(reduced.values()), **reduced, time=batch_time, data=data_time)
            if iteration % log_period == 0 or iteration == max_iter:
                _log(meters, optimizer, device, iteration, max_iter, metrics_file, iters_per_epoch)
            if amp:
                arguments["grad_scaler"] = scaler.state_dict()
            saved = iteration % checkpoint_period == 0
            if saved:  # every rank calls save (it gathers RNG states)
                checkpointer.save(f"model_{iteration:07d}", **arguments)
            stopping = stop.requested(device)  # asked on every rank: it is collective when distributed
            evaluated = (test_fn is not None and test_period > 0 and iteration % test_period == 0
                         and iteration != max_iter and not stopping)
            if evaluated:
                with ema.swapped_into(_unwrapped(model)) if ema is not None else nullcontext(), \
                        random_state_kept(device):
                    metrics_file.write({"iteration": iteration, "eval": test_fn(model)})
                model.train()
            if saved or evaluated:  # the next iteration's times (and so the ETA) leave these out
                end = time.perf_counter()
            if iteration == max_iter:
                if ema is not None:  # the result of training is the averaged model
                    # The trained weights stay in the file too, so that a longer schedule resumes exactly.
                    arguments["weights_before_ema"] = {k: v.detach().clone()
                                                       for k, v in _unwrapped(model).state_dict().items()}
                    ema.copy_to(_unwrapped(model))
                    logger.info("Final weights: the EMA of the weights (%d updates)", ema.updates)
                checkpointer.save("model_final", **arguments)
                saved = True
            if stopping:
                raise _stopped(stop, checkpointer, arguments, saved)
    total = time.perf_counter() - start
    done = max(max_iter - start_iter, 1)
    logger.info("Total training time: %s (%.4f s / it)", datetime.timedelta(seconds=int(total)), total / done)


@contextmanager
def random_state_kept(device: torch.device) -> Iterator[None]:
    """Restore torch's (CPU and ``device``'s CUDA), Python's and NumPy's global random states on exit.

    A periodic evaluation runs inside it, so that training continues with the random numbers it
    would have drawn without the evaluation: the test loader's transforms draw from torch's
    default generator when they run in this process (DATALOADER.NUM_WORKERS 0) but not in a
    worker, so without it the model trained on depended on TEST_PERIOD and NUM_WORKERS, and a
    run resumed from a checkpoint saved just before an evaluation diverged from the original.
    """
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def _unwrapped(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _stopped(stop: StopOnSignal, checkpointer, arguments: dict, saved: bool) -> BaseException:
    """Save the iteration just finished (unless already saved) and return the exception to raise."""
    iteration = arguments["iteration"]
    name = f"model_{iteration:07d}"
    if not saved:  # every rank calls save (it gathers RNG states)
        checkpointer.save(name, **arguments)
    logger.warning("%s received: stopped after iteration %d, whose state is in the checkpoint that "
                   "last_checkpoint names; run the same command again to resume from there",
                   signal.Signals(stop.signum).name, iteration)
    return stop.exception()


def iterations_per_epoch(data_loader: Iterable) -> int | None:
    """Batches in one pass over the training set, when the loader's batch sampler says so
    (an IterationBasedBatchSampler over a finite batch sampler), else None."""
    inner = getattr(getattr(data_loader, "batch_sampler", None), "batch_sampler", None)
    try:
        count = len(inner)  # type: ignore[arg-type]
    except TypeError:
        return None
    return count or None


def progress(iteration: int, max_iter: int, iters_per_epoch: int | None) -> str:
    """``iter: 480/1500`` and, when the epoch length is known, ``epoch: 3.84`` (epochs done)."""
    text = f"iter: {iteration}/{max_iter}"
    return text + (f"  epoch: {iteration / iters_per_epoch:.2f}" if iters_per_epoch else "")


def _log(meters: MetricLogger, optimizer, device: torch.device, iteration: int, max_iter: int,
         metrics_file: MetricsFile, iters_per_epoch: int | None = None) -> None:
    # meters.time counts forward, backward and the step only: checkpoints and evaluations are
    # excluded (see do_train), so they do not inflate the ETA.
    seconds_per_iter = meters.time.global_avg
    eta = datetime.timedelta(seconds=int(seconds_per_iter * (max_iter - iteration)))
    lr = optimizer.param_groups[0]["lr"]
    memory = _memory_mb(device)
    logger.info("eta: %s  %s  %s  lr: %.6f  max mem: %.0f MB", eta, progress(iteration, max_iter, iters_per_epoch),
                meters, lr, memory)
    record = {name: meter.median for name, meter in meters.meters.items()}
    record.update(iteration=iteration, lr=lr, memory_mb=memory)
    if iters_per_epoch:
        record["epoch"] = iteration / iters_per_epoch
    if not all(math.isfinite(v) for v in record.values()):
        record = {k: (v if math.isfinite(v) else None) for k, v in record.items()}
    metrics_file.write(record)
