"""Draw predictions on images, or a dataset's ground truth: the same as ``detbench-visualize``.

    python tools/visualize.py --config-file CFG --input IMAGE_OR_FOLDER --output DIR [KEY VALUE ...]
    python tools/visualize.py --config-file CFG --dataset NAME --output DIR [KEY VALUE ...]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this clone's detbench, before any installed one

from detbench.cli.visualize import main  # noqa: E402

if __name__ == "__main__":
    main()
