"""Convert Cityscapes' gtFine polygon files to the COCO json files of the
``cityscapes_fine_instanceonly_seg_*_cocostyle`` dataset names.

    python tools/convert_cityscapes_to_coco.py           # $DETBENCH_DATASETS/cityscapes/gtFine -> annotations/
    python tools/convert_cityscapes_to_coco.py --gtfine DIR --outdir DIR --splits train val
    python tools/convert_cityscapes_to_coco.py --link-images $DETBENCH_DATASETS/cityscapes/leftImg8bit

The conversion is :mod:`detbench.data.datasets.cityscapes_convert`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this clone's detbench, before any installed one

from detbench.data.datasets.cityscapes_convert import main  # noqa: E402

if __name__ == "__main__":
    main()
