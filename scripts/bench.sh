#!/usr/bin/env bash
# make bench: first `ferry bench planner` (the evacuation planner against a one-at-a-time greedy
# loop on synthetic clusters of BENCH_PLANNER_HOSTS hosts; pure Python, no root), then a 2-host
# lab with real QEMU guests and `ferry bench migration` (idle and dirtying guests, migration time
# and blackout against memory / link throughput measured in the same run).
# The lab part needs root; leaves nothing running. BENCH_RUNS (default 3) migrations per scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

ferry bench planner --hosts "${BENCH_PLANNER_HOSTS:-1000,10000}"

if [ "$(id -u)" != 0 ]; then
  echo "the migration part of make bench needs root: the lab runs QEMU guests in network namespaces" >&2
  exit 1
fi
lab_dir=${BENCH_LAB_DIR:-/var/lib/ferry-lab/bench}
prefix=fbn
cleanup() { ferry lab down --dir "$lab_dir" --prefix "$prefix" >/dev/null 2>&1 || true; }
cleanup
trap cleanup EXIT

ferry lab up --hosts 3 --instances 0 --link-mbit 1000 --prefix "$prefix" --dir "$lab_dir"
ferry bench migration --dir "$lab_dir" --runs "${BENCH_RUNS:-3}"
ferry bench drain --dir "$lab_dir" --instances "${BENCH_DRAIN_INSTANCES:-6}"
