"""Train two recipes in one run and print their AP and training compute side by side.

    python tools/compare_recipes.py \\
        --before configs/quickstart/mask_rcnn_R_18_FPN_shapes_sgd.yaml \\
        --after configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml --output-dir output/compare_recipes

Each recipe is trained by ``tools/train_net.py`` in its own process, one after the other on the
same machine with the same threads (``--threads``, default 2), without periodic evaluation
(SOLVER.TEST_PERIOD 0), then evaluated on its DATASETS.TEST as the recipe says (the final
evaluation is not counted as training). Training compute is iterations x time per iteration,
the trainer's own "Total training time" (data loading included); the table gives each recipe's
AP and the after / before ratios. Extra ``KEY VALUE`` arguments go to both trainings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOTAL_TIME = re.compile(r"Total training time: (\S+) \(([\d.]+) s / it\)")
METRICS = ("AP", "AP50", "AP75")


def train(config: str, output_dir: Path, threads: int, overrides: list[str]) -> dict:
    """Train and evaluate ``config`` into ``output_dir``; returns its iterations, s / it and APs."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, str(ROOT / "tools" / "train_net.py"), "--config-file", config,
               "--no-resume", "OUTPUT_DIR", str(output_dir), "SOLVER.TEST_PERIOD", "0", *overrides]
    print(f"== training {config} -> {output_dir}", flush=True)
    subprocess.run(command, check=True, env=env, cwd=ROOT)
    log = (output_dir / "log.txt").read_text()
    match = TOTAL_TIME.search(log)
    if match is None:
        raise RuntimeError(f"{output_dir / 'log.txt'}: no 'Total training time' line")
    final = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    if not final:
        raise RuntimeError(f"{output_dir / 'metrics.jsonl'}: no evaluation was recorded")
    (results,) = final[-1]["eval"].values()  # one test set
    return {"iterations": final[-1]["iteration"], "s_per_it": float(match.group(2)), "results": results}


def table(rows: dict[str, dict]) -> str:
    """A markdown table of both recipes and their ratio."""
    types = [t for t in ("bbox", "segm") if all(t in r["results"] for r in rows.values())]
    head = ["recipe", "iterations", "s / it", "training compute (s)"]
    head += [f"{'box' if t == 'bbox' else 'mask'} {m}" for t in types for m in METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        cells = [name, str(r["iterations"]), f"{r['s_per_it']:.4f}", f"{r['iterations'] * r['s_per_it']:.0f}"]
        cells += [f"{r['results'][t][m]:.3f}" for t in types for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    before, after = rows["before"], rows["after"]
    compute = after["iterations"] * after["s_per_it"] / (before["iterations"] * before["s_per_it"])
    cells = ["after / before", f"{after['iterations'] / before['iterations']:.2f}",
             f"{after['s_per_it'] / before['s_per_it']:.3f}", f"**{compute:.3f}**"]
    cells += [f"{after['results'][t][m] - before['results'][t][m]:+.3f}" for t in types for m in METRICS]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the reference recipe (YAML)")
    parser.add_argument("--after", required=True, help="the new recipe (YAML)")
    parser.add_argument("--output-dir", default="output/compare_recipes", type=Path)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each training")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for both")
    args = parser.parse_args(argv)
    output_dir = args.output_dir.resolve()  # train_net runs in the repository root
    rows = {name: train(str(Path(config).resolve()), output_dir / name, args.threads, args.opts)
            for name, config in (("before", args.before), ("after", args.after))}
    text = table(rows)
    print(text)
    (output_dir / "comparison.md").write_text(text + "\n")
    print(f"(also in {output_dir / 'comparison.md'})")


if __name__ == "__main__":
    main()
