#!/usr/bin/env bash
# Runs the whole zcproxy test suite on a fresh machine: installs what the tests need when it
# is missing (curl, openssl, PostgreSQL, NATS, schemathesis, cargo-fuzz), then formatting,
# lints, unit and integration tests, API fuzzing from the OpenAPI document, and a short run
# of every fuzz target, then the offline deployment checks (scripts/infra-check.sh: chart,
# manifests, dashboards against a live Prometheus, images built and run, the kubeadm script
# against fake SSH nodes). Usage: scripts/test.sh [--no-fuzz] [--no-infra]
set -euo pipefail
cd "$(dirname "$0")/.."

fuzz=1 infra=1
for a in "$@"; do
    case $a in
        --no-fuzz) fuzz=0 ;;
        --no-infra) infra=0 ;;
        *) echo "usage: $0 [--no-fuzz] [--no-infra]" >&2; exit 2 ;;
    esac
done
FUZZ_SECONDS="${FUZZ_SECONDS:-10}"

apt_updated=0
ensure_cmd() { # ensure_cmd COMMAND DEBIAN-PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "== installing $2 (for $1)"
    if [[ $apt_updated == 0 ]]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

ensure_cmd curl curl
ensure_cmd openssl openssl
ensure_cmd prlimit util-linux
# Network namespaces and veth pairs for the AF_XDP tests.
ensure_cmd ip iproute2
# Python client libraries the proxy is tested with.
python3 -c "import requests, socks" 2>/dev/null || pip install -q "requests[socks]"
# aioquic: the Python HTTP/3 client the QUIC tests drive.
python3 -c "import aioquic" 2>/dev/null || pip install -q aioquic
# PostgreSQL and NATS for the control plane tests.
./scripts/services.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== cargo test"
cargo test --workspace

echo "== API fuzzing from the OpenAPI document (schemathesis)"
./scripts/api-fuzz.sh "${API_FUZZ_EXAMPLES:-50}" | tail -n 15

if [[ $fuzz == 1 ]]; then
    if ! command -v cargo-fuzz >/dev/null 2>&1; then
        echo "== installing cargo-fuzz"
        cargo install cargo-fuzz --locked --quiet
    fi
    # cargo-fuzz needs unstable compiler flags; the stable toolchain allows them this way.
    # Only for the fuzz crate: exported, it would change every crate's fingerprint and the
    # deployment checks would rebuild the whole workspace.
    echo "== fuzz: build"
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build --dev)
    for target in $(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz list); do
        echo "== fuzz: $target for ${FUZZ_SECONDS}s"
        mkdir -p "fuzz/corpus/$target"
        (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --dev "$target" "corpus/$target" -- \
            -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -print_final_stats=0 2>&1 | tail -n 3)
    done
fi
if [[ $infra == 1 ]]; then
    echo "== deployment checks"
    ./scripts/infra-check.sh
fi
echo "== all tests passed"
