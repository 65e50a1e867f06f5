"""Download the Penn-Fudan dataset or torchvision's weights: the same as ``detbench-download``.

    python tools/download.py penn_fudan [--root DIR]
    python tools/download.py weights torchvision://maskrcnn_resnet50_fpn_coco
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this clone's detbench, before any installed one

from detbench.cli.download import main  # noqa: E402

if __name__ == "__main__":
    main()
