"""What every tool shares: argument parsing with examples, clean errors, the resume flags."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from detbench.config import ConfigError
from detbench.data.catalog import UnknownDatasetError
from detbench.utils.checkpoint import CheckpointError
from detbench.utils.env import setup_environment

# Errors about what the user asked for, whose message says what to change: printed as one line.
USER_ERRORS = (ConfigError, UnknownDatasetError, CheckpointError)

CONFIG_HELP = ("YAML config file: a path, or a shipped recipe as detbench://configs/NAME "
               "(e.g. detbench://configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml)")


def argument_parser(prog: str, description: str, examples: str) -> argparse.ArgumentParser:
    """``--config-file`` and trailing ``KEY VALUE`` overrides; ``examples`` shown by ``--help``."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog="examples:\n" + examples,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE", help=CONFIG_HELP)
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides as KEY VALUE pairs, e.g. MODEL.DEVICE cpu SOLVER.MAX_ITER 100")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse, accepting on/off flags (``--skip-test``, ``--no-resume``) anywhere, also after the
    KEY VALUE pairs: the overrides are taken verbatim (values such as ``-1`` are not options), so
    flags that follow them would otherwise be read as config keys."""
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = {opt for action in parser._actions if action.nargs == 0 for opt in action.option_strings}
    front = [a for a in argv if a in flags]
    return parser.parse_args(front + [a for a in argv if a not in flags])


def add_resume_flags(parser: argparse.ArgumentParser) -> None:
    """``--resume`` / ``--no-resume``; neither: resume when OUTPUT_DIR has a ``last_checkpoint``."""
    parser.add_argument(
        "--resume", action=argparse.BooleanOptionalAction, default=None,
        help="--resume: continue from OUTPUT_DIR's last_checkpoint (an error when there is none); "
             "--no-resume: ignore it and start from MODEL.WEIGHT. Default: resume when there is one")


def run_tool(prog: str, main: Callable[[], None]) -> None:
    """Run ``main`` after :func:`setup_environment`; a ConfigError (or another of USER_ERRORS: an
    unknown dataset name, a weight file that cannot be loaded) becomes one line on stderr and exit
    status 2, instead of a traceback."""
    try:
        setup_environment()
        main()
    except USER_ERRORS as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
