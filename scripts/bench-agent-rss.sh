#!/usr/bin/env bash
# An agent's memory, measured (issue 11's target: an agent's RSS <= 30 MiB): a `berth server`
# (control plane only) and a `berth agent` joined to it, each its own process, with TASKS tasks
# of one service running on the agent. Prints the agent's RSS (now and peak) beside the control
# plane's and dockerd's in the same run. Nothing is asserted.
#   scripts/bench-agent-rss.sh            (TASKS=10, BERTH=target/release/berth by default)
set -euo pipefail
cd "$(dirname "$0")/.."
BERTH=${BERTH:-target/release/berth}
TASKS=${TASKS:-10}
[ -x "$BERTH" ] || { echo "build it first: cargo build --release --bin berth" >&2; exit 2; }
scripts/build-image.sh >/dev/null

dir=$(mktemp -d /tmp/berth-agent-rss.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
server_pid='' agent_pid=''
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  docker ps -aq --filter "label=berth.instance=bench-agent-rss" | xargs -r docker rm -f >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

"$BERTH" server --api "127.0.0.1:$port" --data-dir "$dir/server" \
  --agent-join-token-file "$dir/join-token" >"$dir/server.out" 2>"$dir/server.log" &
server_pid=$!
for _ in $(seq 300); do
  grep -q '^admin token' "$dir/server.out" 2>/dev/null && [ -s "$dir/join-token" ] && break
  sleep 0.1
done
export BERTH_ENDPOINT="http://127.0.0.1:$port"
BERTH_TOKEN=$(grep '^admin token' "$dir/server.out" | awk '{print $NF}')
export BERTH_TOKEN XDG_CONFIG_HOME="$dir/config"

"$BERTH" agent --server "$BERTH_ENDPOINT" --join-token-file "$dir/join-token" \
  --instance-id bench-agent-rss --data-dir "$dir/agent" >"$dir/agent.log" 2>&1 &
agent_pid=$!

mkdir -p "$dir/m"
cat >"$dir/m/rss.yaml" <<EOF
apiVersion: berth.dev/v1
kind: TaskDefinition
metadata: {name: rss}
spec:
  networkMode: bridge
  containerDefinitions:
    - name: httpd
      image: local/busybox:1
      command: ["httpd", "-f", "-p", "8080", "-h", "/"]
      cpu: 16
      memory: 16
      portMappings: [{containerPort: 8080, hostPort: 0}]
---
apiVersion: berth.dev/v1
kind: Service
metadata: {name: rss}
spec:
  taskDefinition: rss
  desiredCount: $TASKS
EOF
for _ in $(seq 100); do "$BERTH" apply -f "$dir/m" >/dev/null 2>&1 && break; sleep 0.2; done

running=0
for _ in $(seq 600); do
  running=$("$BERTH" get services rss -o json 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin); d=d[0] if isinstance(d,list) else d; print(d.get("status",{}).get("runningCount",0))' 2>/dev/null || echo 0)
  [ "$running" -ge "$TASKS" ] && break
  sleep 0.2
done
[ "$running" -ge "$TASKS" ] || { echo "only $running of $TASKS tasks running; agent log:" >&2; tail -20 "$dir/agent.log" >&2; exit 1; }
sleep 10   # a stats sample, a lease renewal and log following are part of steady state

kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
dockerd_pid=$(pgrep -xo dockerd || true)
echo "agent memory, $TASKS tasks of one service running on one joined agent (release build):"
printf '  %-34s RSS %6s MiB, peak %6s MiB (target <= 30 MiB)\n' "berth agent (joined, own process)" \
  "$(mib "$(kib "$agent_pid" VmRSS)")" "$(mib "$(kib "$agent_pid" VmHWM)")"
printf '  %-34s RSS %6s MiB, peak %6s MiB\n' "berth server (control plane)" \
  "$(mib "$(kib "$server_pid" VmRSS)")" "$(mib "$(kib "$server_pid" VmHWM)")"
[ -n "$dockerd_pid" ] && printf '  %-34s RSS %6s MiB\n' "dockerd (for scale)" "$(mib "$(kib "$dockerd_pid" VmRSS)")"
"$BERTH" delete service rss >/dev/null 2>&1 || true
for _ in $(seq 150); do
  [ -z "$(docker ps -q --filter label=berth.instance=bench-agent-rss)" ] && break
  sleep 0.2
done
