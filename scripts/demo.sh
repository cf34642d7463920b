#!/usr/bin/env bash
# berth's demo in one command, on a fresh Debian machine with Docker: installs what is missing
# (scripts/deps.sh: apt packages, the local image), builds the release binary, then runs
# `berth up` on the embedded store with manifests/ watched, in the foreground, and prints the
# dashboard's URL (with how to log in) and the demo service's URL once it answers.
# Ctrl-C stops berth cleanly. Idempotent; quiet when everything is already there.
#
#   scripts/demo.sh [--setup-only] [extra `berth up` flags…]
#
# Environment: BERTH_DEMO_API (default 127.0.0.1:7400), BERTH_DEMO_DATA (the data dir, default
# ~/.local/share/berth-demo), BERTH_BIN (a built berth to use instead of building the release
# binary), BERTH_DEMO_SERVICE (default web), BERTH_DEMO_INSTANCE (the agent's instance id,
# default demo), BERTH_DEMO_KEEP=1 (leave the task containers running on Ctrl-C: a restarted
# berth adopts them; by default they are removed with berth).
# GitOps applies what is committed in manifests/ (edits show once committed).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:$HOME/.cargo/bin"

setup_only=0
if [ "${1:-}" = "--setup-only" ]; then
  setup_only=1
  shift
fi

scripts/deps.sh --demo

bin="${BERTH_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release --locked --quiet --bin berth
  bin="$PWD/target/release/berth"
fi
[ "$setup_only" -eq 1 ] && exit 0

api="${BERTH_DEMO_API:-127.0.0.1:7400}"
data="${BERTH_DEMO_DATA:-$HOME/.local/share/berth-demo}"
service="${BERTH_DEMO_SERVICE:-web}"
instance="${BERTH_DEMO_INSTANCE:-demo}"
endpoint="http://$api"
export BERTH_ENDPOINT="$endpoint"
log="$data/berth.log"
mkdir -p "$data"

"$bin" up --data-dir "$data" --api "$api" --instance-id "$instance" --manifests manifests/ "$@" >>"$log" 2>&1 &
pid=$!
stop() {
  trap - INT TERM
  echo
  echo "stopping berth (pid $pid)…"
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ "${BERTH_DEMO_KEEP:-0}" != 1 ]; then
    ids="$(docker ps -aq --filter "label=berth.instance=$instance")"
    [ -z "$ids" ] || docker rm -f $ids >/dev/null
    echo "stopped; its containers removed, the store kept in $data (scripts/demo.sh starts it again)"
  else
    echo "stopped; its containers keep running, the store is in $data (scripts/demo.sh adopts them)"
  fi
  exit 0
}
trap stop INT TERM

# The API, then the admin token `berth up` writes to the CLI config.
for _ in $(seq 1 300); do
  kill -0 "$pid" 2>/dev/null || { echo "berth up exited; its log ($log):" >&2; tail -n 30 "$log" >&2; exit 1; }
  curl -fs "$endpoint/healthz" >/dev/null 2>&1 && token="$("$bin" auth token 2>/dev/null)" && break
  sleep 0.2
done
if [ -z "${token:-}" ]; then
  echo "berth did not become healthy at $endpoint; its log ($log):" >&2
  tail -n 30 "$log" >&2
  kill -TERM "$pid" 2>/dev/null || true
  exit 1
fi
version="$("$bin" version --client)"
echo "${version%%$'\n'*} is up (log: $log)"
echo "dashboard: $endpoint/ui?token=$token"
echo "           (the token logs you in once, then a session cookie keeps you; \`berth auth token\` prints it again)"

# The demo service: through the load balancer's listener when there is one, else a task's
# published host port. Printed once it answers.
demo_url() {
  local port
  port="$("$bin" get loadbalancers -o json 2>/dev/null \
    | python3 -c 'import json,sys; v=json.load(sys.stdin); print(next((l["port"] for lb in v for l in lb.get("spec",{}).get("listeners",[])), ""))' 2>/dev/null || true)"
  if [ -n "$port" ]; then echo "http://127.0.0.1:$port/"; return; fi
  port="$("$bin" get tasks --service "$service" -o json 2>/dev/null \
    | python3 -c 'import json,sys
for t in json.load(sys.stdin):
    s=t.get("status",{})
    if s.get("lastStatus")!="RUNNING": continue
    for c in s.get("containers",[]):
        for b in c.get("networkBindings",[]) or []:
            if b.get("hostPort"): print(b["hostPort"]); sys.exit()' 2>/dev/null || true)"
  [ -n "$port" ] && echo "http://127.0.0.1:$port/"
}
url=""
for _ in $(seq 1 300); do
  kill -0 "$pid" 2>/dev/null || break
  url="$(demo_url || true)"
  [ -n "$url" ] && curl -fs -o /dev/null --max-time 2 "$url" && break
  url=""
  sleep 1
done
if [ -n "$url" ]; then
  echo "demo service ($service): $url"
else
  echo "the demo service did not answer yet; see \`berth get services\`, \`berth get tasks -o wide\` and $log"
fi
echo "try: BERTH_ENDPOINT=$endpoint $bin get services    (Ctrl-C stops berth)"
wait "$pid" || { rc=$?; echo "berth up exited ($rc); its log: $log" >&2; exit "$rc"; }
