"""Checks of the deformable convolution keys MODEL.RESNETS.{STAGE_WITH_DCN, WITH_MODULATED_DCN, DEFORMABLE_GROUPS}.

Called by :func:`detbench.config.validate.validate_config`; each problem is one line naming
the key, the value and what is allowed.
"""

from __future__ import annotations

from yacs.config import CfgNode

from .validate import _is_number, _problem

# The body stages a flag of STAGE_WITH_DCN stands for, in order.
DCN_STAGES = ("res2", "res3", "res4", "res5")


def _deformable_widths(r: CfgNode) -> list[tuple[str, int]]:
    """(stage, input channels of its 3x3 conv) for each stage with a deformable conv.

    A bottleneck's 3x3 is NUM_GROUPS * WIDTH_PER_GROUP wide at res2 and doubles per stage; a
    basic block's deformable conv2 has the stage's output width, which the basic-block builders
    require to be the same number.
    """
    width = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    return [(name, width * 2**i) for i, (name, on) in enumerate(zip(DCN_STAGES, r.STAGE_WITH_DCN)) if on]


def check_dcn_keys(cfg: CfgNode) -> list[str]:
    """Every problem with the deformable convolution keys of ``cfg``."""
    r, problems = cfg.MODEL.RESNETS, []
    flags = tuple(r.STAGE_WITH_DCN)
    if len(flags) != len(DCN_STAGES) or not all(isinstance(f, bool) for f in flags):
        problems.append(_problem("MODEL.RESNETS.STAGE_WITH_DCN", flags,
                                 f"4 bools, one per stage {', '.join(DCN_STAGES)}"))
    groups = r.DEFORMABLE_GROUPS
    if not (_is_number(groups) and isinstance(groups, int) and groups >= 1):
        return problems + [_problem("MODEL.RESNETS.DEFORMABLE_GROUPS", groups, "an integer >= 1")]
    if problems or not all(_is_number(v) and v >= 1 for v in (r.NUM_GROUPS, r.WIDTH_PER_GROUP)):
        return problems  # the widths are checked elsewhere
    for stage, width in _deformable_widths(r):
        if width % groups:
            problems.append(_problem("MODEL.RESNETS.DEFORMABLE_GROUPS", groups,
                                     f"a divisor of the {width} input channels of the {stage} 3x3 conv"))
    return problems
