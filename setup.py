"""Builds detbench and its compiled operators, ``detbench._C``.

The C++ sources in ``csrc/`` and ``csrc/cpu/`` are always compiled. The CUDA
sources in ``csrc/cuda/`` are compiled when a GPU is visible and a CUDA toolkit
is found, or when ``FORCE_CUDA=1`` (e.g. on a build machine without a GPU).
``TORCH_CUDA_ARCH_LIST`` selects the GPU architectures, as everywhere in PyTorch.

Environment variables:
    FORCE_CUDA=1          compile the CUDA kernels even without a visible GPU.
    CUDA_HOME             the CUDA toolkit to use (default: /usr/local/cuda when it
                          has nvcc, otherwise PyTorch's own search).
    TORCH_CUDA_ARCH_LIST  e.g. "8.0;9.0+PTX".
"""

from __future__ import annotations

import glob
import json
import os
import site
import sys
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"


def _prefer_default_cuda_home() -> None:
    """Point CUDA_HOME at /usr/local/cuda unless the user chose one.

    PyTorch's own search tries `which nvcc` first, which can find an nvcc from a
    pip package with no matching headers; the system toolkit is the safer default.
    Must run before torch.utils.cpp_extension is imported (it reads CUDA_HOME once).
    """
    if "CUDA_HOME" in os.environ or "CUDA_PATH" in os.environ:
        return
    if Path("/usr/local/cuda/bin/nvcc").is_file():
        os.environ["CUDA_HOME"] = "/usr/local/cuda"


_prefer_default_cuda_home()

import torch  # noqa: E402  (after CUDA_HOME is settled)
from torch.utils.cpp_extension import (  # noqa: E402
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
)


def _want_cuda() -> bool:
    if os.environ.get("FORCE_CUDA", "0") == "1":
        if CUDA_HOME is None:
            sys.exit("FORCE_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME.")
        return True
    return torch.cuda.is_available() and CUDA_HOME is not None


def _nvidia_pip_include_dirs() -> list[str]:
    """Header folders of the pip `nvidia-*` packages installed with torch.

    Some toolkits lack headers that torch's CUDA headers include (cusparse.h,
    cublas_v2.h, ...); the pip packages carry them. They are appended after the
    toolkit's own folder, so the toolkit wins where both have a header.
    """
    roots = [*site.getsitepackages(), site.getusersitepackages(), str(Path(torch.__file__).parents[1])]
    found: list[str] = []
    for root in dict.fromkeys(roots):
        patterns = (f"{root}/nvidia/*/include", f"{root}/nvidia/include")
        for folder in sorted(p for pattern in patterns for p in glob.glob(pattern)):
            if folder not in found and Path(folder).is_dir():
                found.append(folder)
    return found


def _extension():
    sources = sorted(str(p.relative_to(ROOT)) for p in [*CSRC.glob("*.cpp"), *CSRC.glob("cpu/*.cpp")])
    # -fopenmp: at::parallel_for expands to an OpenMP region inside our own code.
    cxx_flags = ["-O3", "-fopenmp"]  # the C++ standard comes from cpp_extension
    define_macros: list[tuple[str, str | None]] = []
    if not _want_cuda():
        return CppExtension(
            "detbench._C",
            sources,
            include_dirs=[str(CSRC)],
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
            define_macros=define_macros,
        )
    sources += sorted(str(p.relative_to(ROOT)) for p in CSRC.glob("cuda/*.cu"))
    define_macros.append(("WITH_CUDA", None))
    nvcc_flags = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
    return CUDAExtension(
        "detbench._C",
        sources,
        # The toolkit's own headers first, so the pip folders only fill in what it lacks.
        include_dirs=[str(CSRC), str(Path(CUDA_HOME) / "include"), *_nvidia_pip_include_dirs()],
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        extra_link_args=["-fopenmp"],
        define_macros=define_macros,
    )


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _build_info(with_cuda: bool) -> dict:
    """What this build was made with, for `python -m detbench.utils.collect_env`."""
    info = {"torch": torch.__version__, "with_cuda": with_cuda, "cuda_home": CUDA_HOME}
    if with_cuda:
        from torch.utils.cpp_extension import _get_cuda_arch_flags  # private, but the only source

        info["arch_list"] = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
        info["gencode"] = [flag for flag in _get_cuda_arch_flags() if "arch=" in flag]
    return info


class _Build(BuildExtension):
    """BuildExtension that also records detbench/_build_info.json."""

    def run(self) -> None:
        super().run()
        text = json.dumps(_build_info(_want_cuda()), indent=2)
        # Next to the built library: the source tree for in-place (editable) builds.
        folder = ROOT / "detbench" if self.inplace else Path(self.build_lib) / "detbench"
        if folder.is_dir():
            (folder / "_build_info.json").write_text(text + "\n")


class _BuildPy(build_py):
    """build_py that also puts the recipes of ``configs/`` into the package (``detbench/configs/``),
    where ``detbench.model_zoo`` and ``detbench://configs/...`` find them in an installed wheel."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "detbench" / "configs"
        for source in sorted((ROOT / "configs").rglob("*.yaml")):
            dest = target / source.relative_to(ROOT / "configs")
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.copy_file(str(source), str(dest))


# Console scripts; tools/*.py in a clone call the same functions.
ENTRY_POINTS = {
    "console_scripts": [
        "detbench-train = detbench.cli.train:main",
        "detbench-test = detbench.cli.test:main",
        "detbench-visualize = detbench.cli.visualize:main",
        "detbench-plot = detbench.cli.plot_metrics:main",
        "detbench-download = detbench.cli.download:main",
    ]
}

setup(
    name="detbench",
    version="0.1.0",
    description="Config-driven object detection and instance segmentation for PyTorch",
    python_requires=">=3.10",
    packages=find_packages(include=["detbench", "detbench.*"]),
    install_requires=_requirements(),
    # pip install detbench[export]: ONNX export (tools/export_model.py --format onnx) and its runtime.
    extras_require={"export": ["onnx>=1.16", "onnxruntime>=1.18"]},
    ext_modules=[_extension()],
    package_data={"detbench": ["_build_info.json"]},
    entry_points=ENTRY_POINTS,
    cmdclass={"build_ext": _Build.with_options(use_ninja=True), "build_py": _BuildPy},
    zip_safe=False,
)
