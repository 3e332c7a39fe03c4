#!/usr/bin/env bash
# Exercises ansible-free-ssh.sh (top level) against fake nodes: one network namespace per node
# on a private bridge, each running its own sshd. Nodes share this machine's kernel and
# files, so each gets a file root (inventory root=DIR) and stand-ins for the commands that
# would change the machine or need a real cluster (kubeadm, kubectl, apt-get, systemctl,
# modprobe, sysctl, swapoff, containerd, modinfo): they record their calls, and kubeadm
# creates the files a real one would. Then: --check (pass, and fail on an unreachable node
# and on a missing SR-IOV PF), --dry-run (every remote command printed, nothing run), a real
# run of every step, and a second run that changes nothing. Needs root, iproute2, openssh.
# shellcheck disable=SC2016 # the stand-ins' bodies expand on the fake node
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
script=$here/../../ansible-free-ssh.sh
tag=$(( $$ % 1000 ))
work=$(mktemp -d)
br=zcbr$tag
net=10.$((200 + tag % 50)).$((tag / 50 % 250)).
VIP=${net}100
nodes=(cp1 cp2 cp3 w1)
sshd_pids=()
pass=0

cleanup() {
    for p in "${sshd_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for n in "${nodes[@]}" gone; do ip netns del "zc$tag-$n" 2>/dev/null || true; done
    ip link del "$br" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok   $*"; pass=$((pass + 1)); }

# ---- keys, bridge, namespaces, sshd ---------------------------------------------------
ssh-keygen -q -t ed25519 -N "" -f "$work/id" 
ssh-keygen -q -t ed25519 -N "" -f "$work/hostkey"
cp "$work/id.pub" "$work/authorized_keys"
chmod 600 "$work/authorized_keys"
mkdir -p /run/sshd
ip link add "$br" type bridge
ip addr add "${net}1/24" dev "$br"
ip link set "$br" up

stand_in() { # stand_in DIR NAME BODY
    printf '#!/bin/bash\necho "%s $*" >> "%s/calls.log"\n%s\n' "$2" "$1" "$3" >"$1/bin/$2"
    chmod +x "$1/bin/$2"
}

i=10
for n in "${nodes[@]}"; do
    ns=zc$tag-$n d=$work/$n ip_addr=$net$i
    mkdir -p "$d/bin" "$d/root/etc"
    printf 'UUID=x none swap sw 0 0\n' >"$d/root/etc/fstab"
    ip netns add "$ns"
    ip link add "v$tag$n" type veth peer name eth0 netns "$ns"
    ip link set "v$tag$n" master "$br" up
    ip -n "$ns" addr add "$ip_addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    # Stand-ins.
    for c in apt-get apt-mark systemctl modprobe swapoff sysctl modinfo; do stand_in "$d" "$c" "exit 0"; done
    stand_in "$d" containerd 'echo "[plugins.cri.containerd.runtimes.runc.options]"; echo "  SystemdCgroup = false"'
    stand_in "$d" kubectl 'cat >/dev/null 2>&1 || true'
    stand_in "$d" kubeadm '
case "$1 $2" in
  "version -o") echo v1.33.1 ;;
  "init --config") mkdir -p "$ROOT/etc/kubernetes"; echo "apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: https://'"$VIP"':6443}}]" > "$ROOT/etc/kubernetes/admin.conf"; touch "$ROOT/etc/kubernetes/kubelet.conf" ;;
  "token create") echo "kubeadm join '"$VIP"':6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:$(printf %064d 7)" ;;
  "init phase") echo "[upload-certs] Using certificate key:"; printf "%064d\n" 42 ;;
  "join "*) mkdir -p "$ROOT/etc/kubernetes"; touch "$ROOT/etc/kubernetes/kubelet.conf" ;;
esac'
    cat >"$d/sshd_config" <<CONF
ListenAddress $ip_addr:22
HostKey $work/hostkey
AuthorizedKeysFile $work/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $d/sshd.pid
SetEnv PATH=$d/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CONF
    ip netns exec "$ns" /usr/sbin/sshd -D -f "$d/sshd_config" -E "$d/sshd.log" &
    sshd_pids+=($!)
    role=worker extra=""
    [[ $n == cp* ]] && role=control
    [[ $n == w1 ]] && extra=proxy
    echo "$role $n $ip_addr $extra root=$d/root" >>"$work/inventory"
    i=$((i + 1))
done
for n in "${nodes[@]}"; do
    for _ in $(seq 1 50); do
        ip netns exec "zc$tag-$n" ss -Hltn | grep -q ":22 " && break
        sleep 0.1
    done
done

export HOME=$work # known_hosts of this test stays in the test
run() { "$script" -i "$work/inventory" --ssh-key "$work/id" "$@"; }

# ---- --check -----------------------------------------------------------------------------
out=$(run --check --vip "$VIP" 2>&1) || fail "--check failed: $out"
for n in "${nodes[@]}"; do
    grep -q "^$n: ok   root" <<<"$out" || fail "--check: $n not reported: $out"
done
grep -q "every node is reachable and ready" <<<"$out" || fail "--check verdict: $out"
ok "--check: 4 nodes reachable over SSH, prerequisites reported"

cp "$work/inventory" "$work/inventory.bad"
echo "worker gone ${net}99" >>"$work/inventory.bad"
if out=$("$script" -i "$work/inventory.bad" --ssh-key "$work/id" --check --vip "$VIP" 2>&1); then
    fail "--check passed with an unreachable node"
fi
grep -q "FAIL gone: unreachable over SSH" <<<"$out" || fail "--check unreachable message: $out"
ok "--check: an unreachable node fails with a clear message"

if out=$(run --check --vip "$VIP" --sriov-pf eth0 2>&1); then fail "--check passed without an SR-IOV PF"; fi
grep -q "w1: FAIL eth0 is not an SR-IOV physical function" <<<"$out" || fail "--check SR-IOV: $out"
ok "--check: a proxy node without an SR-IOV physical function fails"

out=$("$script" -i "$work/inventory" 2>&1) && fail "missing --vip accepted"
grep -q -- "--vip is required" <<<"$out" || fail "missing --vip message: $out"
printf 'boss x 1.2.3.4\n' >"$work/inventory.role"
out=$("$script" -i "$work/inventory.role" --vip "$VIP" 2>&1) && fail "bad role accepted"
grep -q "role 'boss'" <<<"$out" || fail "bad role message: $out"
ok "bad arguments and inventories are refused with clear errors"

# ---- --dry-run ---------------------------------------------------------------------------
mkdir -p "$work/manifests"
for m in calico multus sriov-device-plugin sriov-cni; do
    printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s}\n' "$m" >"$work/manifests/$m.yaml"
done
common=(--vip "$VIP" --vip-interface eth0 --manifests "$work/manifests" --cores 8 --hugepages-2mi 512)
rm -f "$work"/*/calls.log # --check ran read-only probes such as modinfo
out=$(run --dry-run "${common[@]}" 2>&1) || fail "--dry-run failed: $out"
[[ $(grep -c "kubeadm init --config" <<<"$out") == 1 ]] || fail "--dry-run: kubeadm init not exactly once"
grep -q "^\[cp1\] .*kubeadm init --config" <<<"$out" || fail "--dry-run: init not on cp1"
for n in cp2 cp3; do grep -q "^\[$n\] .*--control-plane --certificate-key" <<<"$out" || fail "--dry-run: $n join"; done
grep -q "^\[local\] helm upgrade --install zcproxy .* --set cores=8" <<<"$out" || fail "--dry-run: helm"
for s in swapoff "SystemdCgroup" "pkgs.k8s.io/core:/stable:/v1.33" "vm.nr_hugepages = 512" kube-vip "cpuManagerPolicy: static" "zcproxy.io/proxy=true"; do
    grep -qF -- "$s" <<<"$out" || fail "--dry-run does not show '$s'"
done
ls "$work"/*/calls.log >/dev/null 2>&1 && fail "--dry-run ran something on a node"
ok "--dry-run: every remote command printed in order, nothing run"

# ---- a real run of every step, then a second run -----------------------------------------
mkdir -p "$work/localbin"
printf '#!/bin/bash\necho "helm $*" >> "%s/helm.log"\n' "$work" >"$work/localbin/helm"
chmod +x "$work/localbin/helm"
PATH=$work/localbin:$PATH run "${common[@]}" >"$work/run1.log" 2>&1 || { cat "$work/run1.log"; fail "real run failed"; }
r=$work/cp1/root/etc
grep -q "controlPlaneEndpoint: \"$VIP:6443\"" "$r/kubernetes/zcproxy-kubeadm.yaml" || fail "kubeadm config endpoint"
grep -q "cpuManagerPolicy: static" "$r/kubernetes/zcproxy-kubeadm.yaml" || fail "kubeadm config CPU manager"
[[ $(grep -c "^kubeadm init --config" "$work/cp1/calls.log") == 1 ]] || fail "cp1 init count"
for n in cp2 cp3; do
    grep -q "^kubeadm join $VIP:6443 .*--control-plane --certificate-key $(printf %064d 42)" "$work/$n/calls.log" || fail "$n join"
    grep -q "address, value: $VIP" "$work/$n/root/etc/kubernetes/manifests/kube-vip.yaml" || fail "$n kube-vip"
done
grep -q "^kubeadm join $VIP:6443 --token" "$work/w1/calls.log" || fail "w1 join"
grep -q -- "--control-plane" "$work/w1/calls.log" && fail "w1 joined as control plane"
grep -q "SystemdCgroup = true" "$work/cp2/root/etc/containerd/config.toml" || fail "containerd cgroup driver"
grep -q "^# UUID=x none swap" "$work/w1/root/etc/fstab" || fail "swap not disabled in fstab"
grep -q "net.ipv4.ip_forward = 1" "$work/cp3/root/etc/sysctl.d/99-zcproxy-k8s.conf" || fail "sysctls"
grep -q "vm.nr_hugepages = 512" "$work/w1/root/etc/sysctl.d/98-zcproxy-hugepages.conf" || fail "hugepages on the proxy node"
[[ -e $work/cp1/root/etc/sysctl.d/98-zcproxy-hugepages.conf ]] && fail "hugepages on a non-proxy node"
[[ $(grep -c "^kubectl .* apply -f -" "$work/cp1/calls.log") == 5 ]] || fail "CNI manifests applied: $(grep -c apply "$work/cp1/calls.log")"
grep -q "^kubectl .* label node w1 zcproxy.io/proxy=true" "$work/cp1/calls.log" || fail "proxy node label"
grep -q "upgrade --install zcproxy .* --set cores=8" "$work/helm.log" || fail "helm install"
ok "real run: prerequisites, containerd, packages, hugepages, kube-vip, init, joins, CNI, label, chart"

for n in "${nodes[@]}"; do cp "$work/$n/calls.log" "$work/$n/calls.1"; done
PATH=$work/localbin:$PATH run "${common[@]}" >"$work/run2.log" 2>&1 || { cat "$work/run2.log"; fail "second run failed"; }
for n in "${nodes[@]}"; do
    new=$(diff "$work/$n/calls.1" "$work/$n/calls.log" | grep '^>' || true)
    grep -qE "kubeadm (init --config|join)|systemctl restart|apt-get install" <<<"$new" \
        && fail "second run on $n repeated a one-time step: $new"
done
ok "second run: no init, join, package install or service restart repeated (idempotent)"
echo "fake-node tests: $pass passed"
