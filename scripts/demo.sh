#!/usr/bin/env bash
# A tour of Ferry for a new user: a controller, three hosts, and one host taken into maintenance
# and back, all through the `ferry` CLI. Leaves nothing running (set DEMO_KEEP=1 to keep it up).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

state=$(mktemp -d /tmp/ferry-demo.XXXXXX)
port=${DEMO_PORT:-8470}
export FERRY_URL="http://127.0.0.1:$port" FERRY_TOKEN_FILE="$state/admin.token"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$state"
}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

step "Start a controller (state in $state, API on $FERRY_URL)"
FERRY_HEARTBEAT_INTERVAL=2 ferry controller serve --state-dir "$state" --listen "127.0.0.1:$port" \
  >"$state/controller.log" 2>&1 &
pids+=($!)
trap cleanup EXIT
for _ in $(seq 100); do curl -fs "$FERRY_URL/v1/health" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$FERRY_URL/v1/health" >/dev/null || { cat "$state/controller.log"; exit 1; }
echo "the first start wrote an admin token to $FERRY_TOKEN_FILE (mode 0600)"

step "Three hosts register and heartbeat (simulated agents with an agent-role token)"
agent_token=$(ferry token create demo-agents --role agent 2>/dev/null)
FERRY_TOKEN="$agent_token" ferry agent simulate --hosts 3 >"$state/agents.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ "$(ferry host list -f json | grep -c '"name"')" = 3 ] && break; sleep 0.1; done
run ferry host list

step "Preview maintenance on host1 (dry run: nothing changes)"
run ferry host maintenance enter host1 --reason "BIOS update" --dry-run

step "Enter maintenance: host1 leaves scheduling at once, and is drained"
run ferry host maintenance enter host1 --reason "BIOS update" --wait
run ferry host list

step "A second enter is refused with the reason"
run ferry host maintenance enter host1 --reason "again" || true

step "Exit maintenance: host1 is back in service"
run ferry host maintenance exit host1 --reason "BIOS updated"
run ferry host list

step "Every change is an event, with who did it"
run ferry event list --limit 20

if [ "${DEMO_KEEP:-0}" = 1 ]; then
  step "Still running; in another shell: export FERRY_URL=$FERRY_URL FERRY_TOKEN_FILE=$FERRY_TOKEN_FILE"
  echo "Ctrl-C stops the controller and the hosts."
  wait "${pids[0]}"
fi
