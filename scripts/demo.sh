#!/usr/bin/env bash
# A tour of Ferry for a new user: a real 3-host lab (network namespaces, QEMU guests, mutual TLS),
# instances booted from their own disks of a catalog image (shared storage) with addresses from
# the hosts' DHCP servers, a live migration, and one host drained live into maintenance (every
# instance pinged every 20 ms) and put back in service, all through `ferry`.
# Leaves nothing running (DEMO_KEEP=1 keeps the lab up; `ferry lab down` removes it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

lab_dir=${DEMO_LAB_DIR:-/var/lib/ferry-lab/demo}
driver=qemu
if [ "$(id -u)" != 0 ]; then
  echo "not root: the lab runs with simulated guests (--driver fake); run as root for QEMU"
  driver=fake
fi
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }
cleanup() { [ "${DEMO_KEEP:-0}" = 1 ] || ferry lab down --dir "$lab_dir" >/dev/null 2>&1 || true; }

ferry lab down --dir "$lab_dir" >/dev/null 2>&1 || true
trap cleanup EXIT

step "Bring up a lab: 3 hosts on shared storage, 6 instances, links shaped to 1 Gbit/s"
run ferry lab up --hosts 3 --instances 6 --link-mbit 1000 --driver "$driver" --dir "$lab_dir"
eval "$(ferry lab env --dir "$lab_dir")"

step "Hosts and instances, as the controller sees them"
run ferry host list
run ferry instance list

if [ "$driver" = qemu ]; then
  step "The image catalog: the lab's bootable disk image, checked by sha256"
  run ferry image list
  step "Every instance answers ping from this machine, on its own IP"
  for ip in $(ferry instance list -f json | python3 -c 'import json,sys; print(" ".join(i["ports"][0]["ip"] for i in json.load(sys.stdin)))'); do
    for _ in $(seq 60); do ping -c 1 -W 1 "$ip" >/dev/null 2>&1 && break; sleep 0.5; done
    printf '%s: ' "$ip"; ping -c 3 -i 0.3 -W 2 "$ip" | tail -1
  done
  step "Each instance booted from its own disk (firmware, then the image's bootloader) and took its address by DHCP"
  for id in $(ferry instance list -f json | python3 -c 'import json,sys; print(" ".join(i["id"] for i in json.load(sys.stdin)))'); do
    for log in "$lab_dir"/hosts/*/run/"$id"/serial.log; do
      [ -f "$log" ] && printf '%s: %s\n' "$(basename "$(dirname "$(dirname "$(dirname "$log")")")")" "$(grep -m1 FERRY-GUEST-DHCP "$log" || echo 'no lease yet')"
    done
  done
fi

mover=$(ferry instance list -f json | python3 -c 'import json,sys; print(next(i["name"] for i in json.load(sys.stdin) if i["host"] != "host1"))')
step "Live-migrate $mover over mutual TLS (the scheduler picks the destination), pinged every 20 ms"
vm1_ip=$(ferry instance show "$mover" -f json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ports"][0]["ip"])')
if [ "$driver" = qemu ]; then
  ping -n -i 0.02 -W 1 "$vm1_ip" >/tmp/ferry-demo-ping.$$ 2>&1 &
  pinger=$!
  sleep 1
fi
run ferry instance migrate "$mover" --wait
if [ "$driver" = qemu ]; then
  sleep 1
  kill -INT "$pinger"; wait "$pinger" || true
  python3 - "/tmp/ferry-demo-ping.$$" <<'PY'
import sys
from ferry.bench.probe import blackout_of
print(f"ping every 20 ms during the migration: {blackout_of(open(sys.argv[1]).read())}")
PY
  rm -f "/tmp/ferry-demo-ping.$$"
  printf '%s still at %s: ' "$mover" "$vm1_ip"; ping -c 3 -i 0.3 -W 2 "$vm1_ip" | tail -1
fi
run ferry migration list

if [ "$driver" = qemu ]; then
  step "Two more instances on host1, so that its drain moves several at once"
  run ferry instance create web1 --flavor tiny --network lab --image lab --host host1 --wait
  run ferry instance create web2 --flavor tiny --network lab --image lab --host host1 --wait
  for ip in $(ferry instance list -f json | python3 -c 'import json,sys; print(" ".join(i["ports"][0]["ip"] for i in json.load(sys.stdin) if i["name"].startswith("web")))'); do
    for _ in $(seq 60); do ping -c 1 -W 1 "$ip" >/dev/null 2>&1 && break; sleep 0.5; done
  done
fi

step "Preview maintenance on host1 (dry run: where each instance would go; nothing changes)"
run ferry host maintenance enter host1 --reason "BIOS update" --dry-run

step "Enter maintenance: host1 leaves scheduling at once and is drained live"
ips=$(ferry instance list -f json | python3 -c 'import json,sys; print(" ".join(i["ports"][0]["ip"] for i in json.load(sys.stdin) if i["host"] == "host1"))')
pingers=()
if [ "$driver" = qemu ]; then
  echo "(each instance on host1 is pinged every 20 ms meanwhile: $ips)"
  for ip in $ips; do
    ping -n -i 0.02 -W 1 "$ip" >"/tmp/ferry-demo-ping.$$.$ip" 2>&1 &
    pingers+=($!)
  done
  sleep 1
fi
run ferry host maintenance enter host1 --reason "BIOS update" --wait
if [ "$driver" = qemu ]; then
  sleep 1
  for pid in "${pingers[@]}"; do kill -INT "$pid"; wait "$pid" || true; done
  python3 - "/tmp/ferry-demo-ping.$$" $ips <<'PY'
import sys
from ferry.bench.probe import blackout_of
for ip in sys.argv[2:]:
    print(f"{ip}: {blackout_of(open(f'{sys.argv[1]}.{ip}').read())}")
PY
  rm -f /tmp/ferry-demo-ping.$$.*
fi
if [ "$driver" = qemu ]; then
  run ferry instance create vm-new --flavor tiny --network lab --image lab --wait
else
  run ferry instance create vm-new --flavor tiny --network lab --wait
fi
echo "(vm-new went elsewhere: a host in maintenance receives nothing)"

step "Exit maintenance: host1 is back in service"
run ferry host maintenance exit host1 --reason "BIOS updated"
run ferry host list

step "Every change is an event, with who did it"
run ferry event list --limit 15

step "Where to go from here"
echo "API and its documentation: $FERRY_URL/docs (token: \$FERRY_TOKEN from 'ferry lab env')"
if [ "${DEMO_KEEP:-0}" = 1 ]; then
  echo "The lab stays up. In another shell:  eval \"\$(ferry lab env --dir $lab_dir)\""
  echo "Stop it with: ferry lab down --dir $lab_dir"
else
  echo "The lab is removed now (DEMO_KEEP=1 make demo keeps it; 'ferry lab down' removes it)."
fi
