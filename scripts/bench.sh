#!/usr/bin/env bash
# make bench: every benchmark, each against a baseline measured in the same run, into one report
# (BENCH_OUT, default artifacts/bench: report.md with PNG plots, and each bench's JSON):
#   1. the evacuation planner against a one-at-a-time greedy loop (synthetic clusters; no root);
#   2. the control plane at scale: a real controller with BENCH_SCALE_HOSTS simulated hosts and
#      BENCH_SCALE_INSTANCES instances, BENCH_SCALE_DRAINS hosts drained at once (no root);
#   3. a 3-host lab of real QEMU instances of the lab image (root; disks on shared storage,
#      DHCP addresses, 10 ms probers): single migrations of an idle (BENCH_IDLE_RUNS times, for
#      a p99) and a dirtying guest (BENCH_RUNS) against memory / link throughput, then a host's
#      drain (idle and dirtying guests) against the physical bound and one migration at a time;
#   4. the same lab on local storage: a host's drain of guests whose disks hold
#      BENCH_DISK_MIB MiB each (idle, and writing to their disks), the disks copied live, against
#      the bound (RAM + disk bytes) / link and one migration at a time.
# Each lab is removed at the end, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
out=${BENCH_OUT:-$PWD/artifacts/bench}
mkdir -p "$out"

ferry bench planner --hosts "${BENCH_PLANNER_HOSTS:-1000,10000}" --out "$out"
ferry bench scale --hosts "${BENCH_SCALE_HOSTS:-1000}" --instances "${BENCH_SCALE_INSTANCES:-20000}" \
  --drains "${BENCH_SCALE_DRAINS:-20}" --out "$out"

if [ "$(id -u)" != 0 ]; then
  ferry bench report "$out"
  echo "the lab part of make bench needs root: the lab runs QEMU guests in network namespaces" >&2
  exit 1
fi
lab_dir=${BENCH_LAB_DIR:-/var/lib/ferry-lab/bench}
prefix=fbn
cleanup() { ferry lab down --dir "$lab_dir" --prefix "$prefix" >/dev/null 2>&1 || true; }
cleanup
trap cleanup EXIT

ferry lab up --hosts 3 --instances 0 --link-mbit 1000 --prefix "$prefix" --dir "$lab_dir"
ferry bench migration --dir "$lab_dir" --idle-runs "${BENCH_IDLE_RUNS:-24}" --runs "${BENCH_RUNS:-3}" \
  --out "$out"
ferry bench drain --dir "$lab_dir" --instances "${BENCH_DRAIN_INSTANCES:-6}" \
  --workloads idle,dirtying --out "$out"
cleanup

ferry lab up --hosts 3 --instances 0 --link-mbit 1000 --storage local --prefix "$prefix" \
  --dir "$lab_dir"
ferry bench drain --dir "$lab_dir" --instances "${BENCH_DISK_INSTANCES:-4}" \
  --disk-mib "${BENCH_DISK_MIB:-1024}" --workloads disk-idle,disk-writing --out "$out"
ferry bench report "$out"
