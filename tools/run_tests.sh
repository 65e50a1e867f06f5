#!/usr/bin/env bash
# Set up (tools/setup_env.sh) and run the test suite; extra arguments go to pytest.
#     bash tools/run_tests.sh            # everything
#     bash tools/run_tests.sh tests/layers -x   # arguments replace the default "tests"
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup_env.sh
echo "== tests"
if [ "$#" -gt 0 ]; then python -m pytest "$@"; else python -m pytest tests; fi
