"""The checkpoint files of a run's folder: which to keep, and which to try when resuming.

Names follow the trainer: ``model_NNNNNNN.pth`` for the periodic checkpoints (and the one
saved when a signal stops training), ``model_final.pth`` for the last iteration. Only
periodic checkpoints are ever deleted; the final one and any other file stay.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

PERIODIC = re.compile(r"^model_(\d+)\.pth$")


def periodic_checkpoints(folder: Path) -> list[Path]:
    """The periodic checkpoints of ``folder``, oldest iteration first."""
    found = [(int(m.group(1)), p) for p in folder.glob("model_*.pth") if (m := PERIODIC.match(p.name))]
    return [p for _, p in sorted(found)]


def prune_checkpoints(folder: Path, keep: int, protect: Path, logger: logging.Logger) -> list[Path]:
    """Delete all but the ``keep`` newest periodic checkpoints (``keep <= 0``: delete none).

    ``protect`` (the file ``last_checkpoint`` names) is never deleted. Returns what was deleted;
    a file that cannot be deleted is logged and left.
    """
    if keep <= 0:
        return []
    periodic = periodic_checkpoints(folder)
    deleted = []
    for path in periodic[: max(len(periodic) - keep, 0)]:
        if path.resolve() == protect.resolve():
            continue
        try:
            path.unlink()
        except OSError as exc:
            logger.warning("Could not delete the old checkpoint %s: %s", path, exc)
            continue
        deleted.append(path)
    if deleted:
        logger.info("Deleted %d old checkpoint(s) (SOLVER.CHECKPOINTS_TO_KEEP = %d): %s",
                    len(deleted), keep, ", ".join(p.name for p in deleted))
    return deleted


def resume_candidates(folder: Path, pointed: Path | None) -> list[Path]:
    """The files to try when resuming from ``folder``: ``pointed`` (what ``last_checkpoint``
    names) first, then the other ``model_*.pth`` files, most recently written first."""
    others = [p for p in folder.glob("model_*.pth") if pointed is None or p.resolve() != pointed.resolve()]

    def written(path: Path) -> tuple[float, str]:
        try:
            return path.stat().st_mtime, path.name
        except OSError:
            return 0.0, path.name

    others.sort(key=written, reverse=True)
    return ([pointed] if pointed is not None else []) + others
