"""detbench vs torchvision on this machine, in one run: time, peak memory and their ratios.

Sections (``--sections``, comma-separated):
  ops        nms, batched_nms, roi_align and roi_pool forward/backward, sigmoid_focal_loss
             (cases in tools/benchmark_ops.py);
  inference  Mask R-CNN R-50-FPN, 1 image of --height x --width (800x1333), no_grad;
  train      one training iteration of the same model on 2 images (forward, backward, SGD step);
  retinanet  the inference and train cases for RetinaNet R-50-FPN against torchvision's
             retinanet_resnet50_fpn, same weights (tools/benchmark_retinanet.py);
  mobilenet  Faster R-CNN MobileNetV3-Large-FPN inference against torchvision's
             fasterrcnn_mobilenet_v3_large_fpn, same weights (tools/benchmark_mobilenet.py);
  eval       end-to-end evaluation on the val split of --data (COCO-mini): data loading, the
             model, COCO bbox + segm evaluation; images per second.
  deploy     (CPU) one real photo at 800x1333 through detbench eager, detbench with a compiled
             backbone, the TorchScript and ONNX (onnxruntime) exports, torchvision eager and
             torchvision's own ONNX export; see tools/benchmark_deploy.py. Not in the default.
The two models have the same architecture and the same (random) weights; see
tools/benchmark_model.py for how, and docs/BENCHMARKS.md for the results and their reading.

Timing. Every ratio is detbench / torchvision: below 1 detbench is faster or smaller. Ops run
in this process, the two libraries' calls alternating, median over --repeats after --warmup
calls. Each model case runs each library in its own fresh process (so neither inherits the
other's oneDNN / cuDNN caches); the parent lets the two processes run one call at a time, in
turn, so that other load on the machine affects both alike. "first" is the first call of a
fresh process (oneDNN creates its kernels per input shape then); the median over --repeats
calls excludes it. On CUDA every timed call ends with torch.cuda.synchronize().

Peak memory of one call, on top of what was allocated before it (model, inputs, caches):
  CPU   the growth of the process's resident set size: glibc's mmap threshold is fixed at
        64 KiB and free memory trimmed first, so that tensors go back to the system when
        freed, then the kernel's high-water mark (VmHWM, reset through /proc/self/clear_refs)
        minus the resident size before the call. Linux only. Eval: the main process only,
        over the whole pass (data loader workers excluded).
  CUDA  torch.cuda.max_memory_allocated() minus torch.cuda.memory_allocated() before the call.

    python tools/benchmark.py                                  # every section, CPU (+ CUDA when present)
    python tools/benchmark.py --sections inference,train --repeats 3 --threads 2
    python tools/benchmark.py --sections eval --eval-images 20 --eval-workers 2
    python tools/benchmark.py --device cuda --amp both
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torchvision
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark_deploy  # noqa: E402
import benchmark_mobilenet  # noqa: E402
import benchmark_model  # noqa: E402
import benchmark_ops  # noqa: E402
import benchmark_retinanet  # noqa: E402

SECTIONS = ("ops", "inference", "train", "retinanet", "mobilenet", "eval", "deploy")
DEFAULT_SECTIONS = ("ops", "inference", "train", "retinanet", "mobilenet", "eval")
# Child cases of the model sections: name -> factory(library, device, amp, height, width).
MODEL_CASES = {
    "inference": benchmark_model.inference_case,
    "train": benchmark_model.train_case,
    "retinanet_inference": benchmark_retinanet.inference_case,
    "retinanet_train": benchmark_retinanet.train_case,
    "mobilenet_inference": benchmark_mobilenet.inference_case,
}
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_mini"
_PREFIX = "@@benchmark "  # marks a child's result lines on its stdout
_MMAP_THRESHOLD = -3  # glibc's M_MMAP_THRESHOLD mallopt parameter


def _status_kib(key: str) -> int:
    return int(re.search(rf"^{key}:\s+(\d+)", Path("/proc/self/status").read_text(), re.M).group(1))


def peak_mib(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory of one call of ``fn`` over what was allocated before, in MiB (module docstring)."""
    gc.collect()
    if device.type == "cuda":
        benchmark_ops.sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        benchmark_ops.sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if not sys.platform.startswith("linux"):
        return float("nan")
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(_MMAP_THRESHOLD, 64 * 1024)
    libc.malloc_trim(0)
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # "5" resets VmHWM to the current RSS
    fn()
    return (_status_kib("VmHWM") - before) / 1024


# ----------------------------------------------------------------------------- child processes


def _send(**values) -> None:
    print(_PREFIX + json.dumps(values), flush=True)


def child_main(args: argparse.Namespace) -> None:
    """One library, one case: build, then answer the parent's commands (first / time / memory / quit)."""
    device = torch.device(args.device)
    amp = args.child_amp
    if args.child == "deploy":
        files = json.loads(args.deploy_files)
        step = benchmark_deploy.deploy_case(args.library, benchmark_deploy.photo(args.deploy_image), files)
    elif args.child == "eval":
        eval_cases = {"detbench": benchmark_model.detbench_eval_case,
                      "torchvision": benchmark_model.torchvision_eval_case}
        step = eval_cases[args.library](device, amp, Path(args.data) / "val2017", Path(args.ann_file),
                                        args.eval_workers)
    else:
        step = MODEL_CASES[args.child](args.library, device, amp, args.height, args.width)
    _send(ready=True)
    for line in sys.stdin:
        command = line.strip()
        if command in ("first", "time"):
            _send(seconds=benchmark_ops.timed(step, device))
        elif command == "memory":
            _send(mib=peak_mib(getattr(step, "memory_step", step), device))
        elif command == "eval":
            _send(**_eval_pass(step, device))
        else:
            return


def _eval_pass(step: Callable[[], tuple[int, int]], device: torch.device) -> dict:
    """One whole evaluation: seconds, images, detections and the main process's peak memory."""
    result = {}

    def whole_pass() -> None:
        start = time.perf_counter()
        result["images"], result["detections"] = step()
        benchmark_ops.sync(device)
        result["seconds"] = time.perf_counter() - start

    result["mib"] = peak_mib(whole_pass, device)
    return result


class _Child:
    """A child process running one library's case, spoken to line by line."""

    def __init__(self, library: str, case: str, args: argparse.Namespace, device: str, amp: bool, log: Path):
        cmd = [sys.executable, __file__, "--child", case, "--library", library, "--device", device,
               "--threads", str(args.threads), "--height", str(args.height), "--width", str(args.width),
               "--data", str(args.data), "--ann-file", str(args.ann_file), "--eval-workers", str(args.eval_workers)]
        cmd += ["--child-amp"] if amp else []
        cmd += ["--deploy-files", args.deploy_files] if case == "deploy" else []
        cmd += ["--deploy-image", args.deploy_image] if case == "deploy" and args.deploy_image else []
        self.library, self.log = library, log
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=log.open("w"), text=True)

    def ask(self, command: str) -> dict:
        if command != "wait":
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(_PREFIX):
                return json.loads(line[len(_PREFIX):])
        tail = self.log.read_text()[-3000:]
        raise RuntimeError(f"{self.library} benchmark process ended without an answer; its stderr:\n{tail}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=120)


def run_pair(case: str, args: argparse.Namespace, device: str, amp: bool,
             libraries: tuple[str, ...] = benchmark_model.LIBRARIES) -> dict[str, dict]:
    """The children of ``libraries``: built together, then timed one call at a time, in turn."""
    with tempfile.TemporaryDirectory(prefix="detbench_benchmark_") as logs:
        children = [_Child(lib, case, args, device, amp, Path(logs) / f"{i}.log")
                    for i, lib in enumerate(libraries)]
        try:
            return _drive(case, children, args.repeats)
        finally:
            for child in children:
                child.close()


def _drive(case: str, children: list[_Child], repeats: int) -> dict[str, dict]:
    out = {child.library: {"times": []} for child in children}
    for child in children:
        child.ask("wait")  # built
    if case == "eval":
        for child in children:
            out[child.library].update(child.ask("eval"))
        return out
    for child in children:
        out[child.library]["first"] = child.ask("first")["seconds"]
    for _ in range(repeats):
        for child in children:
            out[child.library]["times"].append(child.ask("time")["seconds"])
    for child in children:
        out[child.library]["mib"] = child.ask("memory")["mib"]
    return out


# ----------------------------------------------------------------------------- sections and tables


def _ratio(ours: float, theirs: float, floor: float = 0.0) -> str:
    return "-" if theirs <= floor or ours != ours or theirs != theirs else f"{ours / theirs:.3f}"


def ops_table(device: torch.device, args: argparse.Namespace) -> list[list]:
    with torch.no_grad():
        rows = benchmark_ops.ops_rows(device, args.ops, args.repeats, args.warmup, lambda fn: peak_mib(fn, device))
    # Memory ratios of a few KiB are noise (page granularity): shown from 1 MiB on.
    return [[name, f"{a:.2f}", f"{b:.2f}", _ratio(a, b), f"{ma:.1f}", f"{mb:.1f}", _ratio(ma, mb, 1.0)]
            for name, a, b, ma, mb in rows]


def model_row(case: str, label: str, result: dict[str, dict]) -> list:
    ours, theirs = result["detbench"], result["torchvision"]
    if case == "eval":
        rate = [r["images"] / r["seconds"] for r in (ours, theirs)]
        return [label, f"{rate[0]:.3f}", f"{rate[1]:.3f}", _ratio(rate[1], rate[0]), f"{ours['mib']:.0f}",
                f"{theirs['mib']:.0f}", _ratio(ours["mib"], theirs["mib"], 1.0), ours["detections"],
                theirs["detections"]]
    med = [statistics.median(r["times"]) for r in (ours, theirs)]
    return [label, f"{med[0]:.3f}", f"{med[1]:.3f}", _ratio(*med), f"{ours['mib']:.0f}", f"{theirs['mib']:.0f}",
            _ratio(ours["mib"], theirs["mib"], 1.0), f"{ours['first']:.2f}", f"{theirs['first']:.2f}"]


MODEL_HEADERS = ["case", "detbench", "torchvision", "ratio", "detbench MiB", "torchvision MiB", "MiB ratio",
                 "detbench first s", "torchvision first s"]


def machine_line() -> str:
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        cpu = found.group(1) if found else cpu
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {torch.get_num_threads()} torch threads{gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, torchvision {torchvision.__version__}")


def _configurations(args: argparse.Namespace) -> list[tuple[str, bool]]:
    """(device, amp) pairs to run: CPU in float32; CUDA in float32 and/or with float16 autocast."""
    devices = {"auto": ["cpu"] + (["cuda"] if torch.cuda.is_available() else []), "cpu": ["cpu"], "cuda": ["cuda"]}
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    amps = {"off": [False], "on": [True], "both": [False, True]}[args.amp]
    return [(d, a) for d in devices[args.device] for a in (amps if d == "cuda" else [False])]


def main(args: argparse.Namespace) -> None:
    from detbench.extension import assert_has_ops

    assert_has_ops()
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown --sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    print(machine_line())
    print(f"command: python tools/benchmark.py {' '.join(sys.argv[1:])}")
    for device, amp in _configurations(args):
        where = f"{device}{' amp (float16 autocast)' if amp else ''}"
        if "ops" in sections and not amp:
            print(f"\n## ops, {where}: median ms of {args.repeats} after {args.warmup} warm-up calls; "
                  "peak MiB of one call")
            print(tabulate(ops_table(torch.device(device), args), tablefmt="github", disable_numparse=True,
                           headers=["case", "detbench ms", "torchvision ms", "ratio", "detbench MiB",
                                    "torchvision MiB", "MiB ratio"]))
        rows = []
        for case in ("inference", "train"):
            if case in sections:
                label = f"{case}, {1 if case == 'inference' else 2} image(s) {args.height}x{args.width}"
                rows.append(model_row(case, label, run_pair(case, args, device, amp)))
        if rows:
            print(f"\n## Mask R-CNN R-50-FPN, {where}: median seconds of {args.repeats} calls after the first; "
                  "peak MiB of one call")
            print(tabulate(rows, headers=MODEL_HEADERS, tablefmt="github", disable_numparse=True))
        if "retinanet" in sections:
            rows = [model_row(case, f"{case}, {n} image(s) {args.height}x{args.width}",
                              run_pair(f"retinanet_{case}", args, device, amp))
                    for case, n in (("inference", 1), ("train", 2))]
            print(f"\n## RetinaNet R-50-FPN, {where}: median seconds of {args.repeats} calls after the first; "
                  "peak MiB of one call")
            print(tabulate(rows, headers=MODEL_HEADERS, tablefmt="github", disable_numparse=True))
        if "mobilenet" in sections:
            rows = [model_row("mobilenet_inference", f"inference, 1 image {args.height}x{args.width}",
                              run_pair("mobilenet_inference", args, device, amp))]
            print(f"\n## Faster R-CNN MobileNetV3-Large-FPN, {where}: median seconds of {args.repeats} calls "
                  "after the first; peak MiB of one call")
            print(tabulate(rows, headers=MODEL_HEADERS, tablefmt="github", disable_numparse=True))
        if "eval" in sections:
            eval_section(args, device, amp, where)
        if "deploy" in sections and device == "cpu":
            deploy_section(args)


def eval_section(args: argparse.Namespace, device: str, amp: bool, where: str) -> None:
    ann = Path(args.data) / "annotations" / "instances_val2017.json"
    if not ann.exists():
        print(f"\n## eval, {where}: skipped, no COCO-mini val split at {args.data} (see --data)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        args.ann_file = benchmark_model.subset_annotations(ann, args.eval_images, Path(tmp))
        result = run_pair("eval", args, device, amp)
    images = result["detbench"]["images"]
    print(f"\n## end-to-end evaluation, {where}: images/s over {images} val images, one pass each (ratio: "
          f"detbench time / torchvision time), {args.eval_workers} loader workers; peak MiB of the main process")
    headers = MODEL_HEADERS[:7] + ["detbench detections", "torchvision detections"]
    print(tabulate([model_row("eval", "eval, bbox + segm", result)], headers=headers, tablefmt="github",
                   disable_numparse=True))


def deploy_section(args: argparse.Namespace) -> None:
    """One table: every deployment path of tools/benchmark_deploy.py, each in its own process."""
    image = benchmark_deploy.photo(args.deploy_image)
    with tempfile.TemporaryDirectory(prefix="detbench_deploy_") as folder:
        start = time.perf_counter()
        files = benchmark_deploy.prepare(Path(folder), image)
        print(f"\n(exports written in {time.perf_counter() - start:.0f} s)")
        failed = {p: f for p, f in files.items() if f.startswith("failed")}
        paths = tuple(p for p in benchmark_deploy.PATHS if p not in failed)
        args.deploy_files = json.dumps(files)
        result = run_pair("deploy", args, "cpu", False, libraries=paths)
    base = statistics.median(result["torchvision eager"]["times"])
    rows = []
    for path in benchmark_deploy.PATHS:
        if path in failed:
            rows.append([path, "-", "-", "-", "-", failed[path]])
            continue
        r = result[path]
        median = statistics.median(r["times"])
        rows.append([path, f"{median:.3f}", _ratio(median, base), f"{r['first']:.2f}", f"{r['mib']:.0f}", ""])
    print(f"\n## deployment, cpu: Mask R-CNN R-50-FPN, one real photo at {image.shape[0]}x{image.shape[1]}, "
          f"100 detections with pasted masks; median seconds of {args.repeats} calls after the first")
    print(tabulate(rows, headers=["path", "median s", "vs torchvision eager", "first call s", "peak MiB", "note"],
                   tablefmt="github", disable_numparse=True))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(DEFAULT_SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CPU, plus CUDA when a GPU is present")
    parser.add_argument("--amp", choices=["off", "on", "both"], default="both",
                        help="CUDA only: float32 (off), float16 autocast (on) or both")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="ops: untimed calls before timing")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--ops", nargs="+", choices=benchmark_ops.OPS, default=benchmark_ops.OPS)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="COCO-mini root (annotations/, val2017/)")
    parser.add_argument("--eval-images", type=int, default=0, help="first N val images (0: all)")
    parser.add_argument("--eval-workers", type=int, default=2, help="data loader workers, both libraries")
    parser.add_argument("--deploy-image", default="", help="deploy: a photo or folder (default: Penn-Fudan's first)")
    # Internal: a child process of run_pair.
    parser.add_argument("--child", choices=[*MODEL_CASES, "eval", "deploy"], help=argparse.SUPPRESS)
    parser.add_argument("--library", choices=benchmark_model.LIBRARIES + benchmark_deploy.PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--deploy-files", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--child-amp", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ann-file", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    torch.set_num_threads(arguments.threads)
    if arguments.child:
        child_main(arguments)
    else:
        main(arguments)
