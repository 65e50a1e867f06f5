# Shared setup for tools/quickstart.sh, tools/run_tests.sh and .ci/run; source it from bash.
#
# Creates (once) a virtual environment with requirements.txt + requirements-dev.txt,
# keyed by the content of those files and kept under $DETBENCH_VENV_ROOT (default
# ~/.cache/detbench), so the ~5 GB torch download happens once per machine; activates
# it; then builds detbench._C in place (a no-op when nothing changed).
# PYTHON picks the interpreter used to create the environment (default python3, 3.10+).

_detbench_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_python=${PYTHON:-python3}

if ! command -v "$_python" >/dev/null 2>&1; then
  echo "detbench setup: '$_python' not found; install Python 3.10+ or set PYTHON=/path/to/python3" >&2
  return 1 2>/dev/null || exit 1
fi
if ! "$_python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "detbench setup: $("$_python" --version 2>&1) is too old; detbench needs Python 3.10+ (set PYTHON=...)" >&2
  return 1 2>/dev/null || exit 1
fi

_key=$(cat "$_detbench_root/requirements.txt" "$_detbench_root/requirements-dev.txt" | sha256sum | cut -c1-16)
DETBENCH_VENV="${DETBENCH_VENV_ROOT:-$HOME/.cache/detbench}/venv-$_key"
if [ -f "$DETBENCH_VENV/.complete" ] && "$DETBENCH_VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  echo "== reusing the environment $DETBENCH_VENV"
else
  echo "== creating the environment $DETBENCH_VENV (downloads torch, about 5 GB, once)"
  rm -rf "$DETBENCH_VENV"
  mkdir -p "$(dirname "$DETBENCH_VENV")"
  if ! "$_python" -m venv "$DETBENCH_VENV"; then
    echo "detbench setup: '$_python -m venv' failed; on Debian/Ubuntu install python3-venv" >&2
    return 1 2>/dev/null || exit 1
  fi
  "$DETBENCH_VENV/bin/python" -m pip install -q --upgrade pip
  "$DETBENCH_VENV/bin/python" -m pip install -q -r "$_detbench_root/requirements.txt" \
    -r "$_detbench_root/requirements-dev.txt"
  touch "$DETBENCH_VENV/.complete"  # written last: a half-made environment is rebuilt next time
fi
# shellcheck disable=SC1091
source "$DETBENCH_VENV/bin/activate"

if ! command -v "${CXX:-c++}" >/dev/null 2>&1; then
  echo "detbench setup: no C++ compiler ('${CXX:-c++}') to build detbench._C; install g++ (or set CXX)" >&2
  return 1 2>/dev/null || exit 1
fi
_so=$(ls "$_detbench_root"/detbench/_C*.so 2>/dev/null | head -1 || true)  # none in a fresh clone
_installed=$(cd / && python -c "import detbench, os; print(os.path.dirname(os.path.dirname(os.path.abspath(detbench.__file__))))" 2>/dev/null || true)
if [ -n "$_so" ] && [ "$_installed" = "$_detbench_root" ] \
    && [ -z "$(find "$_detbench_root/csrc" "$_detbench_root/setup.py" -newer "$_so" -print -quit)" ]; then
  echo "== detbench._C is up to date ($_so)"
else
  echo "== building detbench._C (CPU kernels; CUDA kernels too when a GPU and nvcc are found)"
  (cd "$_detbench_root" && pip install -q -e . --no-build-isolation)
fi
