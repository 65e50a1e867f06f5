"""Draw a run's training curves: the same as ``detbench-plot``.

    python tools/plot_metrics.py OUTPUT_DIR [--output FILE]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this clone's detbench, before any installed one

from detbench.cli.plot_metrics import main  # noqa: E402

if __name__ == "__main__":
    main()
