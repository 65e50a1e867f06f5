"""The command-line tools, installed as console scripts and also run by ``tools/*.py``.

``detbench-train`` (:mod:`.train`), ``detbench-test`` (:mod:`.test`), ``detbench-visualize``
(:mod:`.visualize`), ``detbench-plot`` (:mod:`.plot_metrics`) and ``detbench-download``
(:mod:`.download`). This package sits on the top floor: it may import every other one.
"""
