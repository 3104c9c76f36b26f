#!/usr/bin/env bash
# The test command: sets up the environment (scripts/setup_env.sh), then runs the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k cross_attention -x`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
# Run the installed package (not the source tree, which has no compiled _C): pytest's own entry
# point does not put the working directory on sys.path.
"$VENV/bin/pytest" tests -q -p no:cacheprovider "$@"
