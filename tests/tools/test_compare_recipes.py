"""tools/compare_recipes.py: the table's compute ratio and AP differences from hand-made runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("compare_recipes", ROOT / "tools" / "compare_recipes.py")
compare_recipes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_recipes)


def run(iterations: int, s_per_it: float, box: float, mask: float) -> dict:
    results = {"bbox": {"AP": box, "AP50": 0.9, "AP75": 0.8}, "segm": {"AP": mask, "AP50": 0.8, "AP75": 0.7}}
    return {"iterations": iterations, "s_per_it": s_per_it, "results": results}


def test_table_gives_the_compute_ratio_and_ap_differences():
    text = compare_recipes.table({"before": run(1500, 0.4, 0.685, 0.558), "after": run(1800, 0.2, 0.75, 0.65)})
    lines = text.splitlines()
    assert lines[0].startswith("| recipe | iterations | s / it | training compute (s) | box AP |")
    assert lines[2].split(" | ")[1:4] == ["1500", "0.4000", "600"]
    ratio = lines[-1].split(" | ")
    # 1800 x 0.2 = 360 s against 1500 x 0.4 = 600 s: 0.6.
    assert ratio[1:4] == ["1.20", "0.500", "**0.600**"]
    assert ratio[4] == "+0.065" and ratio[7] == "+0.092"


def test_train_reads_the_trainers_log_and_metrics(tmp_path, monkeypatch):
    out = tmp_path / "before"
    out.mkdir()
    (out / "log.txt").write_text("... detbench.trainer INFO: Total training time: 0:10:00 (0.4000 s / it)\n")
    (out / "metrics.jsonl").write_text(
        '{"iteration": 20, "loss": 1.0}\n'
        '{"iteration": 1500, "eval": {"shapes_val": {"bbox": {"AP": 0.5}, "segm": {"AP": 0.4}}}}\n')
    commands = []
    monkeypatch.setattr(compare_recipes.subprocess, "run", lambda command, **kw: commands.append((command, kw)))
    got = compare_recipes.train("a.yaml", out, 2, ["SOLVER.MAX_ITER", "1500"])
    assert got["iterations"] == 1500 and got["s_per_it"] == 0.4 and got["results"]["segm"]["AP"] == 0.4
    command, kw = commands[0]
    assert command[-4:] == ["SOLVER.TEST_PERIOD", "0", "SOLVER.MAX_ITER", "1500"] and kw["env"]["OMP_NUM_THREADS"] == "2"
