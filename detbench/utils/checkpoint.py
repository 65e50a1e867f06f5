"""Checkpoints: atomic saves with a ``last_checkpoint`` pointer, resuming, and weights for fine-tuning.

A checkpoint file ``<save_dir>/<name>.pth`` is a dict with ``"model"`` (the state
dict, without DDP's ``module.`` prefix), ``"optimizer"``, ``"scheduler"``,
``"rng_states"`` (one entry per rank) and the caller's extra entries (e.g.
``"iteration"``). The text file ``<save_dir>/last_checkpoint`` holds the name of
the newest complete checkpoint. Files are only read with
``torch.load(weights_only=True)``, which refuses pickled objects that could run code.

On disk a run keeps its newest ``keep`` periodic checkpoints plus ``model_final`` (see
``checkpoint_files``). Resuming falls back, with a warning naming the file, from a checkpoint
that cannot be read (truncated, empty, not a zip) to the newest intact one; a save that fails
(e.g. a full disk) leaves the previous checkpoint and ``last_checkpoint`` as they were and
raises :class:`CheckpointError`.

Weights may also come from torchvision: a state-dict file of one of its ResNets or
``*_resnet50_fpn`` detectors is recognised by its keys and renamed on load, and
``torchvision://NAME`` downloads the published file first (see ``torchvision_weights``).
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import torch
from torch import nn

from . import comm
from . import torchvision_weights as tv
from .checkpoint_files import prune_checkpoints, resume_candidates

POINTER = "last_checkpoint"
_RESERVED = ("model", "optimizer", "scheduler", "rng_states")
# Layers whose shape follows the number of classes (or keypoints): the only ones a fine-tuning
# run on another label set should have to re-initialise.
CLASS_DEPENDENT_PREFIXES = (
    "roi_heads.box.predictor.cls_score.",
    "roi_heads.box.predictor.bbox_pred.",
    "roi_heads.mask.predictor.mask_fcn_logits.",
    "roi_heads.keypoint.predictor.kps_score_lowres.",
)


class CheckpointError(RuntimeError):
    """A checkpoint or weight file that detbench cannot (or will not) load; the message says why."""


# ----------------------------------------------------------------------------- state dicts
def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel, else ``model`` itself."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def strip_prefix(state_dict: dict[str, Any], prefix: str = "module.") -> dict[str, Any]:
    """``state_dict`` without ``prefix`` when every key has it (a DDP model's state dict)."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


@dataclass
class LoadReport:
    """What :func:`load_state_dict_flexible` did, key by key."""

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # in both, but with another shape
    missing: list[str] = field(default_factory=list)  # in the model only
    unexpected: list[str] = field(default_factory=list)  # in the state dict only


def load_state_dict_flexible(model: nn.Module, state_dict: dict[str, torch.Tensor],
                             logger: logging.Logger | None = None) -> LoadReport:
    """Load the entries of ``state_dict`` that fit ``model``; log the rest by name.

    A ``module.`` prefix on every key is removed. Entries whose shape differs from
    the model's (a predictor for another number of classes) are skipped, so the
    model keeps its initialisation there; missing and unexpected keys are allowed.
    """
    logger = logger or logging.getLogger(__name__)
    model = unwrap(model)
    state_dict = strip_prefix(state_dict)
    own = model.state_dict()
    report, usable = LoadReport(), {}
    for key, value in state_dict.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.skipped.append(key)
            logger.warning("Skipped %s: shape %s in the checkpoint, %s in the model",
                           key, tuple(value.shape), tuple(own[key].shape))
        else:
            usable[key] = value
    model.load_state_dict(usable, strict=False)
    report.loaded = list(usable)
    report.missing = [k for k in own if k not in state_dict]
    logger.info("Loaded %d of the model's %d weights", len(report.loaded), len(own))
    if report.missing:
        logger.warning("%d weights not in the checkpoint (initialisation kept): %s",
                       len(report.missing), ", ".join(report.missing))
    if report.unexpected:
        logger.warning("%d checkpoint entries unused by the model: %s",
                       len(report.unexpected), ", ".join(report.unexpected))
    return report


# ----------------------------------------------------------------------------- RNG states
def get_rng_state() -> dict[str, Any]:
    """Generator states of torch (CPU, and CUDA once initialised), NumPy and ``random``.

    Stored with tensors and plain Python values only, so ``weights_only`` loading accepts it.
    """
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "random": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    random.setstate(state["random"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------------- files
def _fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (best effort: not every OS can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through a temporary file in the same folder, then rename it over ``path``.

    Readers see either the old file or the complete new one. If ``write`` fails,
    the temporary file is removed and ``path`` is left as it was.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _from_torchvision(state_dict: dict[str, Any], source: str, logger: logging.Logger) -> dict[str, Any]:
    """``state_dict`` renamed to detbench's keys when it is torchvision's, else unchanged."""
    if tv.detect_kind(state_dict) is None:
        return state_dict
    converted, unknown = tv.convert(state_dict)
    logger.info("%s holds torchvision %s weights: %d tensors renamed to detbench's names",
                source, tv.describe(state_dict), len(converted))
    if unknown:
        logger.warning("%d torchvision entries have no detbench counterpart and are dropped: %s",
                       len(unknown), ", ".join(unknown))
    return converted


def _load_file(name: str) -> Any:
    """``torch.load(name, weights_only=True)`` with errors that say what the file is not."""
    if not Path(name).is_file():
        raise FileNotFoundError(f"weight file {name} does not exist")
    if name.endswith(".pkl"):
        raise CheckpointError(f"{name}: Detectron/Caffe2 .pkl weights are not supported; give a .pth file")
    try:
        return torch.load(name, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not zipfile.is_zipfile(name):  # torch.save writes zip archives since PyTorch 1.6
            raise CheckpointError(f"{name} is not a file written by torch.save (not a zip archive)") from e
        raise CheckpointError(
            f"{name} was refused by the safe loader torch.load(weights_only=True): it holds pickled "
            "objects other than tensors and plain containers, and loading them could run code. If you "
            "trust its source, load it yourself and save model.state_dict() with torch.save. "
            f"Loader message: {str(e).splitlines()[0]}") from e
    except Exception as e:  # torch raises many types for files that are not its format
        raise CheckpointError(f"{name} is not a file written by torch.save ({type(e).__name__}: {e})") from e


def read_weights(f: str | os.PathLike, logger: logging.Logger | None = None) -> dict[str, Any]:
    """A checkpoint dict (with ``"model"``) from a detbench checkpoint, a plain state-dict file,
    a torchvision state-dict file or a ``torchvision://NAME`` (both converted to detbench's keys)."""
    logger = logger or logging.getLogger(__name__)
    name = str(f)
    if name.startswith(tv.SCHEME):
        try:
            state_dict = tv.load_by_name(name)
        except tv.TorchvisionWeightsError as e:
            raise CheckpointError(str(e)) from e
        if tv.detect_kind(state_dict) is None:
            raise CheckpointError(f"{name}: the downloaded file is not a torchvision ResNet or detector")
        return {"model": _from_torchvision(state_dict, name, logger)}
    if "://" in name:
        raise CheckpointError(f"{name}: '{name.split('://')[0]}://' weight names are not supported; give "
                              f"the path of a local .pth file or a {tv.SCHEME} name ({', '.join(tv.known_names())})")
    data = _load_file(name)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        # torchvision's reference scripts save {"model": ..., "optimizer": ..., "epoch": ...}.
        return {**data, "model": _from_torchvision(data["model"], name, logger)}
    if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        # A bare state dict, e.g. torch.save(model.state_dict(), f) of detbench or torchvision.
        return {"model": _from_torchvision(data, name, logger)}
    keys = list(data)[:8] if isinstance(data, dict) else type(data).__name__
    raise CheckpointError(f"{name}: unknown weight format (expected a state dict of tensors or a "
                          f"detbench checkpoint with a 'model' entry; found {keys})")


# ----------------------------------------------------------------------------- checkpointer
class Checkpointer:
    """Saves and restores a training run's state in ``save_dir``.

    Args:
        model: the model (DDP-wrapped or not).
        optimizer, scheduler: saved and, on resume, restored when given.
        save_dir: folder of the checkpoints and of the ``last_checkpoint`` pointer ("" disables saving).
        save_to_disk: False on ranks other than 0, which take part in :meth:`save` but write nothing.
        logger: where loading reports go (default: this module's logger).
        keep: periodic checkpoints kept after each save, newest first (0: all; SOLVER.CHECKPOINTS_TO_KEEP).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                 scheduler: Any = None, save_dir: str | os.PathLike = "", save_to_disk: bool = True,
                 logger: logging.Logger | None = None, keep: int = 0) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.save_dir = Path(save_dir) if save_dir else None
        self.save_to_disk = save_to_disk
        self.logger = logger or logging.getLogger(__name__)
        self.keep = keep

    def save(self, name: str, **extra: Any) -> None:
        """Collective: write ``save_dir/name.pth``, then point ``last_checkpoint`` at it.

        Call on every rank: each rank's RNG state is gathered so that a resumed run
        continues every rank's random stream. Only a rank with ``save_to_disk`` writes.
        ``extra`` (e.g. ``iteration=...``) must hold tensors or plain Python values. A failed
        write raises :class:`CheckpointError` on every rank.
        """
        clash = [k for k in extra if k in _RESERVED]
        if clash:
            raise ValueError(f"Checkpointer.save: extra entries may not be named {clash}")
        if self.save_dir is None:
            return
        rng_states = comm.all_gather(get_rng_state())
        error = None
        if self.save_to_disk:
            try:
                self._save_to_disk(name, rng_states, extra)
            except CheckpointError as exc:
                error = exc
        if comm.get_world_size() > 1:
            # Every rank learns that the save failed and stops now, instead of waiting for the
            # writer in the next collective until the distributed timeout.
            failed = [m for m in comm.all_gather(str(error) if error else "") if m]
            if failed and error is None:
                raise CheckpointError(f"the main process could not save checkpoint {name}: {failed[0]}")
        if error is not None:
            raise error

    def _save_to_disk(self, name: str, rng_states: list[dict[str, Any]], extra: dict[str, Any]) -> None:
        data: dict[str, Any] = {"model": unwrap(self.model).state_dict(), "rng_states": rng_states}
        if self.optimizer is not None:
            data["optimizer"] = self.optimizer.state_dict()
        if self.scheduler is not None:
            data["scheduler"] = self.scheduler.state_dict()
        data.update(extra)
        self.save_dir.mkdir(parents=True, exist_ok=True)
        path = self.save_dir / f"{name}.pth"
        self.logger.info("Saving checkpoint to %s", path)
        self._write(path, lambda f: torch.save(data, f))
        # Only now that the checkpoint is complete on disk does the pointer move to it.
        self._write(self.save_dir / POINTER, lambda f: f.write(path.name.encode()))
        prune_checkpoints(self.save_dir, self.keep, path, self.logger)

    def _write(self, path: Path, write: Callable[[BinaryIO], None]) -> None:
        """:func:`atomic_write`, with a failure (disk full, ...) turned into a CheckpointError."""
        try:
            atomic_write(path, write)
        except Exception as exc:
            previous = self.get_checkpoint_file() or "none yet"
            try:  # torch's zip writer reports a full disk only as "unexpected pos ...": say how full it is
                free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free there"
            except OSError:
                free = "free space unknown"
            raise CheckpointError(
                f"could not write {path} ({type(exc).__name__}: {exc}; {free}); the previous checkpoint "
                f"({previous}) and {self.save_dir / POINTER} are unchanged. Free space in "
                f"{self.save_dir} and run the same command again to resume from there") from exc

    def has_checkpoint(self) -> bool:
        """True when ``save_dir`` has a ``last_checkpoint`` pointer."""
        return self.save_dir is not None and (self.save_dir / POINTER).is_file()

    def get_checkpoint_file(self) -> str:
        """The file ``last_checkpoint`` names (relative names are taken in ``save_dir``), or ""."""
        if not self.has_checkpoint():
            return ""
        name = (self.save_dir / POINTER).read_text().strip()
        return str(self.save_dir / name) if name else ""  # an absolute name stays as it is

    def tag_last_checkpoint(self, last_filename: str | os.PathLike) -> None:
        """maskrcnn-benchmark's method: point ``last_checkpoint`` at ``last_filename``."""
        from .detectron_checkpoint import tag_last_checkpoint  # here: that module imports this one

        tag_last_checkpoint(self, last_filename)

    def load(self, f: str | os.PathLike | None = None, use_latest: bool = True,
             resume: bool | None = None) -> dict[str, Any]:
        """Load weights or resume; return the extra entries of a resumed checkpoint.

        With ``use_latest`` and a ``last_checkpoint`` in ``save_dir``, that file is
        loaded and ``f`` ignored; otherwise ``f`` (MODEL.WEIGHT); with neither the
        model keeps its initialisation and ``{}`` is returned. ``resume`` (default:
        True exactly when the file came from ``last_checkpoint``) also restores the
        optimizer, scheduler and RNG states and returns the extra entries (e.g.
        ``{"iteration": 90}``); without it only the model's weights are loaded
        (fine-tuning: shapes that differ are skipped and logged) and ``{}`` returned.
        A ``last_checkpoint`` file that cannot be read makes it fall back to the newest
        readable checkpoint of ``save_dir`` (see :meth:`_read_newest_intact`).
        """
        from_pointer = use_latest and self.has_checkpoint()
        pointed = None
        if from_pointer:
            name = self.get_checkpoint_file()
            pointed = Path(name) if name else None
            # An empty pointer still means a run was saved here: never a restart from iteration 0.
            f = name or str(self.save_dir / POINTER)
        if not f:
            self.logger.info("No checkpoint and no MODEL.WEIGHT: the model keeps its initialisation")
            return {}
        resume = from_pointer if resume is None else resume
        self.logger.info("%s from %s", "Resuming" if resume else "Loading weights", f)
        checkpoint = self._read_newest_intact(pointed) if from_pointer else read_weights(f, self.logger)
        own = unwrap(self.model).state_dict()
        weights, remapped = tv.coco91_to_contiguous(strip_prefix(checkpoint.pop("model")), own)
        if remapped:
            self.logger.info("Mapped the 91 COCO-id classes of %s to the 80 contiguous COCO "
                             "classes + background", ", ".join(remapped))
        report = load_state_dict_flexible(self.model, weights, self.logger)
        self._log_reinitialised(report)
        if not resume:
            return {}
        self._restore_training_state(checkpoint)
        return {k: v for k, v in checkpoint.items() if k not in _RESERVED}

    def _read_newest_intact(self, pointed: Path | None) -> dict[str, Any]:
        """The checkpoint ``last_checkpoint`` names (``pointed``; None when it names nothing)
        or, if that cannot be read, the newest ``model_*.pth`` of ``save_dir`` that can, with a
        warning naming each bad file. Raises CheckpointError naming every file tried when none can."""
        failures = [] if pointed is not None else [f"{self.save_dir / POINTER}: names no checkpoint"]
        for path in resume_candidates(self.save_dir, pointed):
            try:
                checkpoint = read_weights(path, self.logger)
            except (CheckpointError, OSError) as exc:
                self.logger.warning("Cannot resume from %s: %s", path, exc)
                failures.append(f"{path}: {exc}")
                continue
            if failures:
                self.logger.warning("Resuming from %s instead: the newest checkpoint that can be read "
                                    "(the run continues from its iteration)", path)
            return checkpoint
        raise CheckpointError(f"no checkpoint in {self.save_dir} can be read, so the run cannot resume "
                              "(and will not silently restart from iteration 0). Tried:\n  " + "\n  ".join(failures))

    def _class_dependent_prefixes(self) -> tuple[str, ...]:
        """CLASS_DEPENDENT_PREFIXES, plus those a submodule lists in ``class_dependent_prefixes``
        (relative to itself, e.g. RetinaNet's ``head.cls_logits.``)."""
        extra = tuple(f"{name}.{prefix}" if name else prefix
                      for name, module in unwrap(self.model).named_modules()
                      for prefix in getattr(module, "class_dependent_prefixes", ()))
        return CLASS_DEPENDENT_PREFIXES + extra

    def _log_reinitialised(self, report: LoadReport) -> None:
        """Say whether the layers skipped for their shape are only the class-dependent ones."""
        if not report.skipped:
            return
        other = [k for k in report.skipped if not k.startswith(self._class_dependent_prefixes())]
        if other:
            self.logger.warning("Re-initialised because their shapes differ, beyond the class-dependent "
                                "layers: %s", ", ".join(other))
        else:
            self.logger.info("Fine-tuning on another number of classes: only the class-dependent layers "
                             "were re-initialised (%s); backbone, RPN and the other head layers were loaded",
                             ", ".join(report.skipped))

    def _restore_training_state(self, checkpoint: dict[str, Any]) -> None:
        for part, target in (("optimizer", self.optimizer), ("scheduler", self.scheduler)):
            if target is not None and part in checkpoint:
                target.load_state_dict(checkpoint[part])
            elif target is not None:
                self.logger.warning("The checkpoint has no %s state; the %s starts afresh", part, part)
        rng_states = checkpoint.get("rng_states")
        if rng_states is not None and len(rng_states) == comm.get_world_size():
            set_rng_state(rng_states[comm.get_rank()])
        elif rng_states is not None:
            self.logger.warning("RNG states saved by %d process(es), this run has %d: random streams "
                                "are not restored", len(rng_states), comm.get_world_size())



def __getattr__(name: str) -> Any:
    """``from detbench.utils.checkpoint import DetectronCheckpointer`` (maskrcnn-benchmark's path):
    defined in detectron_checkpoint on top of Checkpointer, so imported on first use."""
    if name == "DetectronCheckpointer":
        from .detectron_checkpoint import DetectronCheckpointer

        return DetectronCheckpointer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
