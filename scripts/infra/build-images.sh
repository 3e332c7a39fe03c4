#!/usr/bin/env bash
# Builds both images through their pull-free path and runs them: a Debian bookworm runtime
# base made locally with debootstrap (no registry is reachable), the `prebuilt` stage fed
# with binaries built on the host, then `--version`, and the proxy answering a request
# inside its container. Needs root, buildah, podman, runc and debootstrap.
#
#   scripts/infra/build-images.sh [debug|release]
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=${1:-debug}
BIN=target/$profile
if [[ $profile == release ]]; then
    cargo build -q --release -p zcproxy -p zcproxy-control
else
    # The same target set as `cargo test --workspace`: no rebuild right after the tests
    # (building two packages alone would unify dependency features differently).
    cargo build -q --workspace --all-targets
fi

work=$(mktemp -d)
ctr=""
cleanup() {
    [[ -n $ctr ]] && podman rm -f "$ctr" >/dev/null 2>&1
    [[ -n ${origin_pid:-} ]] && kill "$origin_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
# podman here: runc, cgroupfs, and file limits the sandbox allows.
cat >"$work/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF=$work/containers.conf

base=localhost/zcproxy-runtime:bookworm
if ! podman image exists "$base"; then
    echo "== runtime base: debootstrap --variant=minbase bookworm"
    debootstrap --variant=minbase bookworm "$work/rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
    tar -C "$work/rootfs" -c . | podman import --change 'CMD ["/bin/sh"]' - "$base" >/dev/null
    rm -rf "$work/rootfs"
fi

for pair in dataplane:zcproxy controlplane:zcproxy-control; do
    kind=${pair%%:*} bin=${pair#*:}
    echo "== buildah bud -f Dockerfile.$kind (prebuilt, $profile)"
    # Docker format: OCI image configs have no HEALTHCHECK.
    buildah bud --quiet --isolation chroot --format docker -f "Dockerfile.$kind" \
        --build-arg BUILDER=prebuilt --build-arg PREBUILT_DIR="$BIN" \
        --build-arg RUNTIME_IMAGE="$base" -t "localhost/$bin:ci" . >/dev/null
    out=$(podman run --rm --no-healthcheck --network host "localhost/$bin:ci" --version)
    echo "ok   localhost/$bin:ci --version: $out"
    [[ $out == "$bin "* ]]
    user=$(podman image inspect --format '{{.Config.User}}' "localhost/$bin:ci")
    [[ $user == 65532:65532 ]] || { echo "FAIL: image user is '$user'" >&2; exit 1; }
    health=$(podman image inspect --format '{{.HealthCheck.Test}}' "localhost/$bin:ci")
    [[ $health == *"$bin probe"* ]] || { echo "FAIL: health check is '$health'" >&2; exit 1; }
done

# The proxy inside its container, on the host network, relays one request and its health
# probe reports ready.
port=$((28000 + $$ % 50 * 10))
mkdir -p "$work/www" && echo hello-from-origin >"$work/www/index.html"
python3 -m http.server -b 127.0.0.1 -d "$work/www" $((port + 2)) >/dev/null 2>&1 &
origin_pid=$!
ctr=$(podman run -d --no-healthcheck --network host localhost/zcproxy:ci --listen 127.0.0.1:$port \
    --admin 127.0.0.1:$((port + 1)) --cores 1 --allow-destination 127.0.0.0/8)
for _ in $(seq 1 100); do
    podman exec "$ctr" /usr/local/bin/zcproxy probe "http://127.0.0.1:$((port + 1))/readyz" 2>/dev/null && break
    sleep 0.1
done
podman exec "$ctr" /usr/local/bin/zcproxy probe "http://127.0.0.1:$((port + 1))/readyz"
body=$(curl -fsS -x "socks5h://127.0.0.1:$port" "http://127.0.0.1:$((port + 2))/")
[[ $body == hello-from-origin ]] || { echo "FAIL: got '$body' through the containerised proxy" >&2; exit 1; }
echo "ok   the containerised proxy relayed a request and reports ready"
