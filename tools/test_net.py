"""Evaluate a detector on DATASETS.TEST: the same as ``detbench-test``.

    python tools/test_net.py --config-file configs/e2e_mask_rcnn_R_50_FPN.yaml [KEY VALUE ...]
    torchrun --nproc_per_node=8 tools/test_net.py --config-file ... [KEY VALUE ...]
    python tools/test_net.py --from-predictions --config-file ... [KEY VALUE ...]   (no model needed)

``--help`` shows examples.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this clone's detbench, before any installed one

from detbench.cli.test import main  # noqa: E402

if __name__ == "__main__":
    main()
