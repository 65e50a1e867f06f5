"""Environment report for bug reports: ``python -m detbench.utils.collect_env``."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from tabulate import tabulate

import detbench
from detbench import extension


def _run(command: list[str]) -> str:
    """First line of a command's output, or 'not found' / the failure."""
    if shutil.which(command[0]) is None:
        return "not found"
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"failed: {exc}"
    lines = (result.stdout or result.stderr).strip().splitlines()
    if not lines:
        return ""
    # nvcc prints a banner first; its version is on the last line.
    return lines[-1] if Path(command[0]).name == "nvcc" else lines[0]


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _extension_rows() -> list[tuple[str, str]]:
    path = extension.find_library()
    rows = [("detbench._C", str(path) if path else "NOT BUILT (pip install -e . --no-build-isolation)")]
    if not extension.has_ops():
        rows.append(("ops usable", "no: " + str(extension._load_error()).splitlines()[0]))
    else:
        cuda = extension.cuda_version()
        rows.append(("built with CUDA", f"yes ({cuda // 1000}.{cuda % 1000 // 10})" if cuda else "no"))
    info_file = Path(detbench.__file__).with_name("_build_info.json")
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        built_torch = info.get("torch", "?")
        note = "" if built_torch == torch.__version__ else "  <-- differs from the torch in use: rebuild"
        rows.append(("built against torch", built_torch + note))
        if info.get("with_cuda"):
            rows.append(("built for archs", " ".join(info.get("gencode", [])) or info.get("arch_list", "")))
    return rows


def _cuda_home() -> str | None:
    """The toolkit setup.py would build with (same preference order)."""
    for candidate in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if candidate and (Path(candidate) / "bin" / "nvcc").is_file():
            return candidate
    nvcc = shutil.which("nvcc")
    return str(Path(nvcc).resolve().parents[1]) if nvcc else None


def _cuda_rows() -> list[tuple[str, str]]:
    cuda_home = _cuda_home()
    rows = [
        ("torch built with CUDA", str(torch.version.cuda)),
        ("CUDA available", str(torch.cuda.is_available())),
        ("CUDA_HOME", str(cuda_home)),
        ("nvcc", _run([str(Path(cuda_home) / "bin" / "nvcc"), "--version"]) if cuda_home else "not found"),
        ("TORCH_CUDA_ARCH_LIST", os.environ.get("TORCH_CUDA_ARCH_LIST", "(unset)")),
        ("torch arch list", " ".join(torch.cuda.get_arch_list()) or "(none)"),
    ]
    for index in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(index)
        rows.append((f"GPU {index}", f"{torch.cuda.get_device_name(index)} (sm_{major}{minor})"))
    return rows


def collect_env() -> str:
    """The report as a plain-text table."""
    rows: list[tuple[str, str]] = [
        ("sys.platform", sys.platform),
        ("platform", platform.platform()),
        ("Python", sys.version.replace("\n", " ")),
        ("detbench", f"{detbench.__version__} @ {Path(detbench.__file__).parent}"),
        *_extension_rows(),
        ("compiler", _run([os.environ.get("CXX", "c++"), "--version"])),
        ("PyTorch", f"{torch.__version__} @ {Path(torch.__file__).parent}"),
        ("CPU threads (torch)", str(torch.get_num_threads())),
        *_cuda_rows(),
    ]
    for package in ("torchvision", "numpy", "Pillow", "pycocotools", "yacs", "tabulate"):
        rows.append((package, _version(package)))
    return tabulate(rows, tablefmt="plain")


if __name__ == "__main__":
    print(collect_env())
