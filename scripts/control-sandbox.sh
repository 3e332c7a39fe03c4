# Sourced, not run: starts zcproxy-control against a scratch database and a private
# nats-server, and removes both on exit. After `control_sandbox BINARY PORT`, the service
# answers on $CONTROL_URL with admin key $CONTROL_KEY.
# shellcheck shell=bash

_sandbox_pids=()
_sandbox_db=""
_sandbox_store=""

_sandbox_cleanup() {
    for p in "${_sandbox_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ -n "$_sandbox_db" ]]; then
        psql -q postgres://postgres@127.0.0.1:5432/postgres \
            -c "DROP DATABASE IF EXISTS $_sandbox_db WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    [[ -n "$_sandbox_store" ]] && rm -rf "$_sandbox_store"
}

control_sandbox() { # control_sandbox BINARY PORT (PORT+1 is used for NATS)
    local binary="$1" port="$2"
    _sandbox_db="zc_sandbox_$$"
    _sandbox_store=$(mktemp -d)
    CONTROL_KEY="sandbox-$$-$RANDOM$RANDOM"
    CONTROL_URL="http://127.0.0.1:$port"
    trap _sandbox_cleanup EXIT
    psql -q postgres://postgres@127.0.0.1:5432/postgres -c "CREATE DATABASE $_sandbox_db"
    nats-server -a 127.0.0.1 -p "$((port + 1))" -js -sd "$_sandbox_store" >/dev/null 2>&1 &
    _sandbox_pids+=($!)
    ZCPROXY_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$_sandbox_db" \
    ZCPROXY_NATS_URL="nats://127.0.0.1:$((port + 1))" ZCPROXY_LISTEN="127.0.0.1:$port" \
    ZCPROXY_BOOTSTRAP_API_KEY="$CONTROL_KEY" RUST_LOG=warn "$binary" serve >/dev/null 2>&1 &
    _sandbox_pids+=($!)
    for _ in $(seq 1 100); do
        curl -fsS "$CONTROL_URL/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "zcproxy-control did not start" >&2
    return 1
}
