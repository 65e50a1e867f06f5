"""detbench as an installed package: a wheel built from this tree, installed into a fresh venv in a
temporary folder, used from outside the clone (console scripts, shipped recipes, detbench._C).

The fresh venv borrows torch and the other dependencies from the running interpreter's
site-packages through a .pth file (a path line adds the folder, but .pth files inside it, such as
an editable install of a clone, are not run), so nothing is downloaded and no clone is importable.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "detbench://configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml"


def _build_prerequisites() -> str:
    """Why a wheel cannot be built here ("" when it can): the build needs a C++ compiler and ninja."""
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        return "no C++ compiler on PATH (detbench._C must be compiled to build a wheel)"
    if importlib.util.find_spec("ninja") is None and shutil.which("ninja") is None:
        return "ninja is not installed (setup.py builds detbench._C with it)"
    if importlib.util.find_spec("pip") is None:
        return "pip is not installed in the test interpreter"
    return ""


def _run(cmd: list[str], cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    """(bin folder of a fresh venv with the wheel installed, environment to run it in)."""
    reason = _build_prerequisites()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    # --no-build-isolation: the build uses the torch already installed (as the README says).
    _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-build-isolation", "--no-deps",
          "-q", "-w", str(tmp / "dist")], cwd=ROOT, env=env)
    (wheel,) = (tmp / "dist").glob("detbench-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp, env=env)
    purelib = Path(_run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=tmp, env=env).stdout.strip())
    borrowed = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (purelib / "borrowed_dependencies.pth").write_text("\n".join(borrowed) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", "-q",
          str(wheel)], cwd=tmp, env=env)
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1",
               DETBENCH_DATASETS=str(tmp / "datasets"))
    return venv / "bin", env


def test_package_comes_from_the_wheel_with_its_extension_and_recipes(installed, tmp_path):
    bin_dir, env = installed
    code = ("import torch, detbench; from detbench import model_zoo; from detbench.layers import nms; "
            "print(detbench.__file__); print(model_zoo.get_config_file('" + CONFIG + "')); "
            "print(len(model_zoo.list_configs())); "
            "print(nms(torch.tensor([[0., 0, 4, 4], [0, 0, 4, 5]]), torch.tensor([0.9, 0.8]), 0.5).tolist())")
    out = _run([str(bin_dir / "python"), "-c", code], cwd=tmp_path, env=env).stdout.splitlines()
    venv = bin_dir.parent.resolve()
    assert Path(out[0]).resolve().is_relative_to(venv), f"detbench imported from {out[0]}, not the wheel"
    assert Path(out[1]).resolve().is_relative_to(venv) and out[1].endswith("mask_rcnn_R_18_FPN_shapes.yaml")
    assert int(out[2]) == len(list((ROOT / "configs").rglob("*.yaml")))
    assert out[3] == "[0]"  # the compiled NMS of the wheel: the second box (IoU 0.8) is suppressed


def test_console_scripts_show_examples(installed, tmp_path):
    bin_dir, env = installed
    for tool in ("detbench-train", "detbench-test", "detbench-visualize", "detbench-plot", "detbench-download"):
        out = _run([str(bin_dir / tool), "--help"], cwd=tmp_path, env=env).stdout
        assert "examples:" in out and tool in out, out


def test_train_and_test_from_outside_the_clone(installed, tmp_path):
    bin_dir, env = installed
    from detbench.data.datasets.shapes import generate_shapes

    images, ann = generate_shapes(tmp_path / "tiny", "val", num_images=4, image_size=(64, 64))
    custom = repr((("tiny", str(images), str(ann)),))
    opts = ["DATASETS.CUSTOM", custom, "DATASETS.TRAIN", "('tiny',)", "DATASETS.TEST", "('tiny',)",
            "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "TEST.IMS_PER_BATCH", "2",
            "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "(10,)", "SOLVER.LOG_PERIOD", "1",
            "SOLVER.TEST_PERIOD", "0", "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", "output/{config}"]
    work = tmp_path / "elsewhere"
    work.mkdir()
    _run([str(bin_dir / "detbench-train"), "--config-file", CONFIG, "--skip-test", *opts], cwd=work, env=env)
    out_dir = work / "output" / "mask_rcnn_R_18_FPN_shapes"  # OUTPUT_DIR's {config}: the recipe's name
    assert (out_dir / "last_checkpoint").read_text().strip() == "model_final.pth"
    _run([str(bin_dir / "detbench-test"), "--config-file", CONFIG, *opts], cwd=work, env=env)
    results = json.loads((out_dir / "inference" / "tiny" / "coco_results.json").read_text())
    assert set(results) == {"bbox", "segm"} and "AP" in results["segm"]
    bad = subprocess.run([str(bin_dir / "detbench-train"), "--config-file", "detbench://configs/nope.yaml"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("detbench-train: error: no shipped config 'detbench://configs/nope.yaml'")
