"""Logging setup: rank 0 logs to stdout and to a file; other ranks log nothing."""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"

# Marks the handlers this module installed, so that a second setup replaces them.
_OWNED = "_detbench_handler"


def _own(handler: logging.Handler) -> logging.Handler:
    setattr(handler, _OWNED, True)
    return handler


def setup_logger(name: str, save_dir: str | os.PathLike | None, distributed_rank: int,
                 filename: str = "log.txt") -> logging.Logger:
    """Configure and return the logger ``name`` (its children, ``name.xyz``, inherit it).

    Rank 0: level DEBUG, messages to stdout and appended to ``save_dir/filename``
    (no file when ``save_dir`` is empty or None). Other ranks: every message is
    dropped, so an N-process run prints each line once. Calling it again replaces
    the handlers of the previous call instead of adding duplicates.
    """
    logger = logging.getLogger(name)
    for handler in [h for h in logger.handlers if getattr(h, _OWNED, False)]:
        logger.removeHandler(handler)
        handler.close()
    # Not propagated to the root logger, where another handler would print each line twice.
    logger.propagate = False
    if distributed_rank > 0:
        logger.addHandler(_own(logging.NullHandler()))
        return logger
    logger.setLevel(logging.DEBUG)
    formatter = logging.Formatter(FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(stream=sys.stdout)]
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(save_dir, filename), mode="a"))
    for handler in handlers:
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(formatter)
        logger.addHandler(_own(handler))
    return logger
