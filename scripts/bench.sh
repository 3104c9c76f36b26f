#!/usr/bin/env bash
# The main job: sets up the environment (scripts/setup_env.sh), then benchmarks mmkernels against its
# peers on this machine's default device. Default: the quick suite, report in bench-out/.
# Any arguments replace the defaults and go to `python -m mmkernels.bench`, e.g. `--suite all`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
if [ $# -eq 0 ]; then
  mkdir -p bench-out
  set -- --quick --json bench-out/report.json --markdown bench-out/report.md --plot bench-out/report.png
fi
exec "$VENV/bin/python" -m mmkernels.bench "$@"
