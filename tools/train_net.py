"""Train a detector, then evaluate it on DATASETS.TEST: the same as ``detbench-train``.

    python tools/train_net.py --config-file configs/e2e_mask_rcnn_R_50_FPN.yaml [--resume|--no-resume] [KEY VALUE ...]
    torchrun --nproc_per_node=8 tools/train_net.py --config-file ... [KEY VALUE ...]

``--help`` shows examples.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this clone's detbench, before any installed one

from detbench.cli.train import main  # noqa: E402

if __name__ == "__main__":
    main()
