#!/usr/bin/env bash
# Runs the real binaries (control plane with a scratch database and a private nats-server,
# and a proxy following it), drives some traffic through them, scrapes them with a real
# Prometheus, then checks every dashboard query against it: every metric name must exist and
# every expression must return data. Cleans up everything it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/debug}
# Same target set as `cargo test --workspace`, so nothing is rebuilt right after the tests.
[[ $BIN != target/debug ]] || cargo build -q --workspace --all-targets

base=$((27000 + $$ % 40 * 20))
proxy=$base admin=$((base + 1)) control=$((base + 2)) nats=$((base + 3)) prom=$((base + 4)) origin=$((base + 5))
db="zc_dash_$$"
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql -q "postgres://postgres@127.0.0.1:5432/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

wait_http() {
    for _ in $(seq 1 150); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "no answer from $1" >&2
    return 1
}

psql -q "postgres://postgres@127.0.0.1:5432/postgres" -c "CREATE DATABASE $db" >/dev/null
nats-server -a 127.0.0.1 -p "$nats" -js -sd "$work/nats" >/dev/null 2>&1 &
pids+=($!)
admin_key=dash-admin-key-0123456789 reader_key=dash-reader-key-0123456789
ZCPROXY_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" ZCPROXY_NATS_URL="nats://127.0.0.1:$nats" \
ZCPROXY_LISTEN="127.0.0.1:$control" ZCPROXY_BOOTSTRAP_API_KEY=$admin_key ZCPROXY_BOOTSTRAP_READER_KEY=$reader_key \
    "$BIN/zcproxy-control" serve >"$work/control.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$control/readyz"
api() { curl -fsS -H "Authorization: Bearer $admin_key" -H 'Content-Type: application/json' "$@"; }
api -d '{"action":"allow","destinations":["127.0.0.0/8"]}' "http://127.0.0.1:$control/v1/rules" >/dev/null
api -d '{"name":"dash","password":"pw"}' "http://127.0.0.1:$control/v1/users" >/dev/null

cat >"$work/zcproxy.toml" <<TOML
listen = "127.0.0.1:$proxy"
admin = "127.0.0.1:$admin"
cores = 2
[control]
url = "http://127.0.0.1:$control"
api_key = "$reader_key"
nats_url = "nats://127.0.0.1:$nats"
TOML
"$BIN/zcproxy" --config "$work/zcproxy.toml" >"$work/proxy.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$admin/readyz"

cat >"$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: zcproxy
    static_configs: [{targets: ["127.0.0.1:$admin"]}]
  - job_name: zcproxy-control
    static_configs: [{targets: ["127.0.0.1:$control"]}]
YAML
promtool check config "$work/prometheus.yml" >/dev/null
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom" >"$work/prometheus.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$prom/-/ready"
# Service discovery hands targets to the scraper after ~5 s; wait until both are up.
for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$prom/api/v1/query?query=count(up%3D%3D1)" | grep -q '"value":\[[0-9.]*,"2"\]' && break
    sleep 0.1
done

# Traffic: forward proxy, CONNECT, SOCKS5, a refused login, a 401 and a change through the API.
mkdir -p "$work/www" && echo hello >"$work/www/index.html"
python3 -m http.server -b 127.0.0.1 -d "$work/www" "$origin" >/dev/null 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$origin/"
for _ in $(seq 1 20); do
    curl -fsS -o /dev/null -x "http://dash:pw@127.0.0.1:$proxy" "http://127.0.0.1:$origin/"
    curl -fsS -o /dev/null -p -x "http://dash:pw@127.0.0.1:$proxy" "http://127.0.0.1:$origin/"
    curl -fsS -o /dev/null -x "socks5h://dash:pw@127.0.0.1:$proxy" "http://127.0.0.1:$origin/"
done
curl -sS -o /dev/null -x "http://dash:wrong@127.0.0.1:$proxy" "http://127.0.0.1:$origin/" || true
curl -sS -o /dev/null "http://127.0.0.1:$control/v1/users" || true
api -X PATCH -d '{"max_tunnels":100}' "http://127.0.0.1:$control/v1/users/dash" >/dev/null
sleep 4
python3 scripts/infra/check_dashboards.py live "http://127.0.0.1:$prom" grafana/dashboards/*.json grafana/alerts/zcproxy.rules.yml
# The check must be able to fail: a misspelt metric name is caught.
sed 's/zcproxy_policy_age_seconds/zcproxy_policy_agee_seconds/' grafana/dashboards/zcproxy-dataplane.json >"$work/broken.json"
if python3 scripts/infra/check_dashboards.py live "http://127.0.0.1:$prom" "$work/broken.json" >"$work/broken.out"; then
    echo "FAIL: a dashboard with a wrong metric name passed the live check" >&2
    exit 1
fi
grep -q "zcproxy_policy_agee_seconds: not exported" "$work/broken.out"
echo "ok   a wrong metric name is caught"
