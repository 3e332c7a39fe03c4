#!/usr/bin/env bash
# Control plane API benchmark on loopback: read throughput (policy snapshot, user list),
# write throughput (user creation: Argon2id + one transaction + outbox row each), and
# commit-to-NATS publish latency from the service's own histogram. Uses wrk (Debian), a
# scratch database and a private NATS; cleans up after itself.
# Usage: bench/api.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
cargo build -q --release -p zcproxy-control

work=$(mktemp -d)
# shellcheck source=scripts/control-sandbox.sh
source scripts/control-sandbox.sh
control_sandbox ./target/release/zcproxy-control 27100
trap '_sandbox_cleanup; rm -rf "$work"' EXIT
base="$CONTROL_URL"
key="$CONTROL_KEY"
auth="Authorization: Bearer $key"
for i in $(seq 1 100); do
    curl -fsS -o /dev/null -H "$auth" -H 'Content-Type: application/json' -X POST "$base/v1/users" \
        -d "{\"name\":\"seed$i\",\"password\":\"pw\"}"
done
cat > "$work/create.lua" <<LUA
-- Each wrk thread has its own Lua state and the same random seed: number them.
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"name":"u%d-%d","password":"pw"}', tid, counter)
  return wrk.format("POST", "/v1/users", {["Authorization"] = "Bearer $key", ["Content-Type"] = "application/json"}, body)
end
LUA
echo "== GET /v1/policy/snapshot (100 users), 4 connections, ${secs}s"
wrk -t2 -c4 -d"${secs}s" --latency -H "$auth" "$base/v1/policy/snapshot" | grep -E "Requests/sec|50%|99%"
echo "== GET /v1/users?limit=50, 4 connections, ${secs}s"
wrk -t2 -c4 -d"${secs}s" --latency -H "$auth" "$base/v1/users?limit=50" | grep -E "Requests/sec|50%|99%"
echo "== POST /v1/users (Argon2id + transaction + outbox), 4 connections, ${secs}s"
wrk -t2 -c4 -d"${secs}s" --latency -s "$work/create.lua" "$base" | grep -E "Requests/sec|50%|99%|Non-2xx"
sleep 2
echo "== publish latency, commit to JetStream ack (service histogram)"
curl -fsS "$base/metrics" | grep -E "^zcproxy_control_(publish_latency_seconds_(count|sum)|events_published_total|outbox_backlog|publish_failures_total)"
curl -fsS "$base/metrics" | awk '/^zcproxy_control_publish_latency_seconds_bucket/ {print}' | tr '\n' ' ' | \
    python3 -c '
import re,sys
b=[(float(m.group(1)) if m.group(1)!="+Inf" else float("inf"), float(m.group(2))) for m in re.finditer(r"le=\"([^\"]+)\"\} (\S+)", sys.stdin.read())]
total=b[-1][1]
for q in (0.5,0.99):
    print("p%d <= %.4f s" % (q*100, next(le for le,c in b if c>=q*total)))'
