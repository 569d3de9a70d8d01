#!/usr/bin/env bash
# make faults: the long fault-injection run. FAULT_RUNS (default 100) seeded runs from FAULT_SEED
# (default 1000) on fake-driver clusters (no root), then, as root, FAULT_LAB_RUNS (default 12)
# runs from FAULT_LAB_SEED (default 1) on labs of real QEMU hosts; every fault kind at every
# phase of a drain, invariants checked after each run. Results and the logs of failed runs go to
# FAULTS_OUT (default artifacts/faults), with report.md. Exits non-zero if any run failed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
out=${FAULTS_OUT:-$PWD/artifacts/faults}
mkdir -p "$out"
status=0

ferry faults run --runs "${FAULT_RUNS:-100}" --seed "${FAULT_SEED:-1000}" --out "$out" || status=1
if [ "$(id -u)" = 0 ]; then
  ferry faults run --lab "${FAULTS_LAB_DIR:-/var/lib/ferry-lab/faults}" \
    --runs "${FAULT_LAB_RUNS:-12}" --seed "${FAULT_LAB_SEED:-1}" --out "$out" || status=1
else
  echo "the real-host runs of make faults need root: skipped" >&2
  status=1
fi
ferry bench report "$out"
exit $status
