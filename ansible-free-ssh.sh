#!/usr/bin/env bash
# Builds a highly available Kubernetes cluster for zcproxy over plain SSH, then installs the
# chart: prerequisites (swap, kernel modules, sysctls), containerd, kubeadm/kubelet/kubectl,
# a kube-vip virtual IP for the API server, `kubeadm init --upload-certs` on the first
# control-plane node, control-plane and worker joins, kubelet with the static CPU manager,
# Calico, Multus, the SR-IOV device plugin and CNI, hugepages and SR-IOV VFs on proxy nodes,
# and `helm upgrade --install` of helm/zcproxy.
#
# Every step checks the node's state first and does only what is missing: re-running is
# safe. --dry-run prints every remote command instead of running it; --check verifies
# reachability and prerequisites and changes nothing.
#
# Inventory (one node per line; # comments):
#   ROLE NAME ADDRESS[:PORT] [proxy] [root=DIR]
#   control cp1 10.0.0.11
#   control cp2 10.0.0.12
#   control cp3 10.0.0.13
#   worker  w1  10.0.0.21 proxy
# ROLE is control or worker (three control nodes for HA); `proxy` marks nodes that run the
# proxy (hugepages, SR-IOV VFs, label zcproxy.io/proxy=true). root=DIR makes every file the
# script writes on that node land under DIR (used by the tests' fake nodes).
# shellcheck disable=SC2016 # remote scripts are single-quoted on purpose: they expand on the node
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: ansible-free-ssh.sh -i INVENTORY --vip ADDRESS [options]

  -i, --inventory FILE     nodes (see the header of this script)
      --vip ADDRESS        virtual IP of the API server (kube-vip, ARP)
      --vip-interface IF   interface that carries the VIP on control nodes [eth0]
      --ssh-user USER      [root]; a non-root user needs passwordless sudo
      --ssh-key FILE       private key [ssh's default]
      --k8s-version X.Y    Kubernetes minor version for pkgs.k8s.io [1.33]
      --pod-cidr CIDR      [192.168.0.0/16]      --service-cidr CIDR [10.96.0.0/12]
      --hugepages-2mi N    2 MiB hugepages on proxy nodes [1024]
      --reserved-cpus LIST CPUs kept from the static CPU manager [0]
      --sriov-pf IF        physical function on proxy nodes for SR-IOV VFs (empty: none)
      --sriov-vfs N        VFs to create on it [8]
      --sriov-resource R   device plugin resource name [intel.com/sriov_netdevice]
      --manifests DIR      local copies of calico.yaml, multus.yaml, sriov-device-plugin.yaml,
                           sriov-cni.yaml (air-gapped); default: the upstream URLs
      --chart DIR          chart to install [helm/zcproxy next to this script]
      --cores N            proxy shards (helm --set cores=N) [2]
      --values FILE        extra Helm values
      --steps LIST         comma-separated subset of: prereqs,containerd,kube,hugepages,
                           sriov,vip,init,join,cni,label,chart [all]
      --dry-run            print every remote command, run nothing
      --check              verify reachability and prerequisites, change nothing
  -h, --help
USAGE
}

INVENTORY="" VIP="" VIP_IF=eth0 SSH_USER=root SSH_KEY="" K8S=1.33
POD_CIDR=192.168.0.0/16 SVC_CIDR=10.96.0.0/12 HUGEPAGES=1024 RESERVED=0
SRIOV_PF="" SRIOV_VFS=8 SRIOV_RES=intel.com/sriov_netdevice MANIFESTS=""
CHART="$(cd "$(dirname "$0")" && pwd)/helm/zcproxy" CORES=2 VALUES="" STEPS=all
DRY=0 CHECK=0
KUBEVIP_VERSION=v0.8.9 CALICO_VERSION=v3.29.3 MULTUS_VERSION=v4.2.0
SRIOV_DP_VERSION=v3.9.0 SRIOV_CNI_VERSION=v2.9.0

die() { echo "ansible-free-ssh: $*" >&2; exit 2; }
while (($#)); do
    case $1 in
        -i | --inventory) INVENTORY=$2; shift ;;
        --vip) VIP=$2; shift ;;
        --vip-interface) VIP_IF=$2; shift ;;
        --ssh-user) SSH_USER=$2; shift ;;
        --ssh-key) SSH_KEY=$2; shift ;;
        --k8s-version) K8S=$2; shift ;;
        --pod-cidr) POD_CIDR=$2; shift ;;
        --service-cidr) SVC_CIDR=$2; shift ;;
        --hugepages-2mi) HUGEPAGES=$2; shift ;;
        --reserved-cpus) RESERVED=$2; shift ;;
        --sriov-pf) SRIOV_PF=$2; shift ;;
        --sriov-vfs) SRIOV_VFS=$2; shift ;;
        --sriov-resource) SRIOV_RES=$2; shift ;;
        --manifests) MANIFESTS=$2; shift ;;
        --chart) CHART=$2; shift ;;
        --cores) CORES=$2; shift ;;
        --values) VALUES=$2; shift ;;
        --steps) STEPS=$2; shift ;;
        --dry-run) DRY=1 ;;
        --check) CHECK=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done
[[ -n $INVENTORY ]] || { usage >&2; die "--inventory is required"; }
[[ -r $INVENTORY ]] || die "inventory $INVENTORY is not readable"
[[ $K8S =~ ^[0-9]+\.[0-9]+$ ]] || die "--k8s-version must look like 1.33"
[[ $CORES =~ ^[1-9][0-9]*$ ]] || die "--cores must be a positive integer"
[[ $HUGEPAGES =~ ^[0-9]+$ ]] || die "--hugepages-2mi must be a number"

# ---- inventory -------------------------------------------------------------------------
NAMES=() ROLES=() ADDRS=() PORTS=() PROXY=() ROOTS=()
while read -r role name addr rest; do
    [[ -z ${role:-} || $role == \#* ]] && continue
    [[ $role == control || $role == worker ]] || die "inventory: role '$role' of '$name' must be control or worker"
    [[ -n ${name:-} && -n ${addr:-} ]] || die "inventory: line '$role $name' needs NAME and ADDRESS"
    port=22
    if [[ $addr =~ ^(.+):([0-9]+)$ ]]; then addr=${BASH_REMATCH[1]} port=${BASH_REMATCH[2]}; fi
    proxy=0 root=""
    for word in $rest; do
        case $word in
            proxy) proxy=1 ;;
            root=*) root=${word#root=} ;;
            *) die "inventory: unknown option '$word' for $name" ;;
        esac
    done
    for n in "${NAMES[@]}"; do [[ $n == "$name" ]] && die "inventory: duplicate node name $name"; done
    NAMES+=("$name") ROLES+=("$role") ADDRS+=("$addr") PORTS+=("$port") PROXY+=("$proxy") ROOTS+=("$root")
done <"$INVENTORY"
controls=() workers=()
for i in "${!NAMES[@]}"; do
    if [[ ${ROLES[$i]} == control ]]; then controls+=("$i"); else workers+=("$i"); fi
done
((${#controls[@]} >= 1)) || die "inventory: no control node"
if ((${#controls[@]} != 3)); then
    echo "ansible-free-ssh: warning: ${#controls[@]} control node(s); HA needs 3" >&2
fi
[[ $CHECK == 1 || -n $VIP ]] || die "--vip is required"
FIRST=${controls[0]}

# ---- remote execution ------------------------------------------------------------------
ssh_opts() {
    local i=$1
    printf '%s\n' -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=accept-new \
        -o LogLevel=ERROR -p "${PORTS[$i]}"
    [[ -n $SSH_KEY ]] && printf '%s\n' -i "$SSH_KEY"
}

# remote NODE_INDEX SCRIPT: runs SCRIPT with bash on the node, as root, with ROOT set to the
# node's file root ("" on real nodes). --dry-run prints it instead.
remote() {
    local i=$1 script=$2
    local prelude="set -euo pipefail; export ROOT='${ROOTS[$i]}' DEBIAN_FRONTEND=noninteractive"
    if [[ $DRY == 1 ]]; then
        local line
        while IFS= read -r line; do
            [[ -n ${line//[[:space:]]/} ]] && printf '[%s] %s\n' "${NAMES[$i]}" "$line"
        done <<<"$script"
        return 0
    fi
    local sudo=""
    [[ $SSH_USER == root ]] || sudo="sudo -n"
    local opts
    mapfile -t opts < <(ssh_opts "$i")
    # shellcheck disable=SC2029 # expanded here on purpose: the script is built locally
    ssh "${opts[@]}" "$SSH_USER@${ADDRS[$i]}" "$sudo bash -c $(printf '%q' "$prelude; $script")"
}

# remote_out: like remote, but in --dry-run prints the command and returns a placeholder.
remote_out() {
    if [[ $DRY == 1 ]]; then
        remote "$@" >&2
        echo "<output of the command above>"
    else
        remote "$@"
    fi
}

step_enabled() { [[ $STEPS == all || ,$STEPS, == *",$1,"* ]]; }
log() { echo "== $*" >&2; }

# ---- --check ---------------------------------------------------------------------------
check_node() {
    local i=$1 out
    if ! out=$(remote "$i" '
        ok() { echo "ok   $*"; }; bad() { echo "FAIL $*"; }; warn() { echo "warn $*"; }
        [ "$(id -u)" = 0 ] && ok "root (or passwordless sudo)" || bad "not root"
        command -v apt-get >/dev/null && ok "apt-get" || bad "no apt-get (Debian or Ubuntu required)"
        command -v systemctl >/dev/null && ok "systemctl" || bad "no systemctl"
        cpus=$(nproc); [ "$cpus" -ge 2 ] && ok "$cpus CPUs" || bad "$cpus CPU (kubeadm needs 2)"
        mem=$(awk "/MemTotal/ {print int(\$2/1024)}" /proc/meminfo)
        [ "$mem" -ge 1700 ] && ok "${mem} MiB memory" || bad "${mem} MiB memory (kubeadm needs 1700)"
        [ -z "$(swapon --noheadings 2>/dev/null)" ] && ok "no swap active" || warn "swap active (prereqs turns it off)"
        for m in overlay br_netfilter; do
            { lsmod | grep -q "^$m " || modinfo "$m" >/dev/null 2>&1; } && ok "kernel module $m" || bad "kernel module $m unavailable"
        done
        for p in 6443 10250; do
            ss -Hltn "sport = :$p" 2>/dev/null | grep -q . && warn "port $p in use" || ok "port $p free"
        done
        [ -f "$ROOT/etc/kubernetes/kubelet.conf" ] && ok "already a cluster member" || true
    ' 2>&1); then
        echo "FAIL ${NAMES[$i]}: unreachable over SSH (${ADDRS[$i]}:${PORTS[$i]}): $out"
        return 1
    fi
    while IFS= read -r line; do echo "${NAMES[$i]}: $line"; done <<<"$out"
    if [[ ${PROXY[$i]} == 1 && -n $SRIOV_PF ]]; then
        remote "$i" "[ -r /sys/class/net/$SRIOV_PF/device/sriov_totalvfs ] && echo \"ok   $SRIOV_PF supports \$(cat /sys/class/net/$SRIOV_PF/device/sriov_totalvfs) VFs\" || echo \"FAIL $SRIOV_PF is not an SR-IOV physical function\"" | sed "s/^/${NAMES[$i]}: /"
    fi
}

if [[ $CHECK == 1 ]]; then
    failed=0
    report=$(for i in "${!NAMES[@]}"; do check_node "$i" || true; done)
    echo "$report"
    grep -q "FAIL" <<<"$report" && failed=1
    [[ -n $VIP ]] || { echo "FAIL --vip is not set"; failed=1; }
    ((failed)) && { echo "check: problems found" >&2; exit 1; }
    echo "check: every node is reachable and ready"
    exit 0
fi

# ---- steps -----------------------------------------------------------------------------
step_prereqs() {
    local i=$1
    remote "$i" '
        swapoff -a
        if [ -f "$ROOT/etc/fstab" ] && grep -qE "^[^#].*\sswap\s" "$ROOT/etc/fstab"; then
            sed -i -E "s|^([^#].*\sswap\s.*)$|# \1  # disabled for kubelet|" "$ROOT/etc/fstab"
        fi
        mkdir -p "$ROOT/etc/modules-load.d" "$ROOT/etc/sysctl.d"
        printf "overlay\nbr_netfilter\n" > "$ROOT/etc/modules-load.d/zcproxy-k8s.conf"
        modprobe overlay; modprobe br_netfilter
        printf "net.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\nnet.ipv4.ip_forward = 1\nnet.ipv6.conf.all.forwarding = 1\n" > "$ROOT/etc/sysctl.d/99-zcproxy-k8s.conf"
        sysctl -q -p "$ROOT/etc/sysctl.d/99-zcproxy-k8s.conf"'
}

step_containerd() {
    local i=$1
    remote "$i" '
        command -v containerd >/dev/null || { apt-get update -qq; apt-get install -y -qq containerd; }
        mkdir -p "$ROOT/etc/containerd"
        if ! grep -q "SystemdCgroup = true" "$ROOT/etc/containerd/config.toml" 2>/dev/null; then
            containerd config default | sed "s/SystemdCgroup = false/SystemdCgroup = true/" > "$ROOT/etc/containerd/config.toml"
            systemctl restart containerd
        fi
        systemctl enable --now containerd'
}

step_kube() {
    local i=$1
    remote "$i" "
        if ! command -v kubeadm >/dev/null || ! kubeadm version -o short | grep -q '^v$K8S\\.'; then
            apt-get update -qq
            apt-get install -y -qq apt-transport-https ca-certificates curl gpg
            mkdir -p \"\$ROOT/etc/apt/keyrings\"
            curl -fsSL https://pkgs.k8s.io/core:/stable:/v$K8S/deb/Release.key | gpg --dearmor --yes -o \"\$ROOT/etc/apt/keyrings/kubernetes-apt-keyring.gpg\"
            echo 'deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/v$K8S/deb/ /' > \"\$ROOT/etc/apt/sources.list.d/kubernetes.list\"
            apt-get update -qq
            apt-mark unhold kubelet kubeadm kubectl >/dev/null 2>&1 || true
            apt-get install -y -qq kubelet kubeadm kubectl
            apt-mark hold kubelet kubeadm kubectl
        fi
        systemctl enable kubelet"
}

step_hugepages() {
    local i=$1
    [[ ${PROXY[$i]} == 1 ]] || return 0
    remote "$i" "
        f=\"\$ROOT/etc/sysctl.d/98-zcproxy-hugepages.conf\"
        if [ \"\$(cat \"\$f\" 2>/dev/null)\" != 'vm.nr_hugepages = $HUGEPAGES' ]; then
            mkdir -p \"\$ROOT/etc/sysctl.d\"
            echo 'vm.nr_hugepages = $HUGEPAGES' > \"\$f\"
            sysctl -q -p \"\$f\"
            # The kubelet reports hugepages at start-up.
            systemctl restart kubelet || true
        fi
        got=\$(awk '/HugePages_Total/ {print \$2}' /proc/meminfo)
        [ \"\$got\" -ge $HUGEPAGES ] || echo \"warning: only \$got of $HUGEPAGES hugepages allocated (fragmented memory: reboot)\" >&2"
}

step_sriov() {
    local i=$1
    [[ ${PROXY[$i]} == 1 && -n $SRIOV_PF ]] || return 0
    remote "$i" "
        dev=/sys/class/net/$SRIOV_PF/device
        [ -r \$dev/sriov_totalvfs ] || { echo '$SRIOV_PF is not an SR-IOV physical function' >&2; exit 1; }
        if [ \"\$(cat \$dev/sriov_numvfs)\" != $SRIOV_VFS ]; then
            echo 0 > \$dev/sriov_numvfs
            echo $SRIOV_VFS > \$dev/sriov_numvfs
        fi
        mkdir -p \"\$ROOT/etc/systemd/system\"
        cat > \"\$ROOT/etc/systemd/system/zcproxy-sriov-vfs.service\" <<UNIT
[Unit]
Description=Create $SRIOV_VFS SR-IOV VFs on $SRIOV_PF for zcproxy
Before=kubelet.service
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo $SRIOV_VFS > /sys/class/net/$SRIOV_PF/device/sriov_numvfs'
[Install]
WantedBy=multi-user.target
UNIT
        systemctl daemon-reload
        systemctl enable zcproxy-sriov-vfs.service"
}

# kube-vip as a static pod on each control node: the VIP follows the leader.
step_vip() {
    local i=$1
    remote "$i" "
        mkdir -p \"\$ROOT/etc/kubernetes/manifests\"
        cat > \"\$ROOT/etc/kubernetes/manifests/kube-vip.yaml\" <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: kube-vip
  namespace: kube-system
spec:
  hostNetwork: true
  containers:
    - name: kube-vip
      image: ghcr.io/kube-vip/kube-vip:$KUBEVIP_VERSION
      args: [manager]
      env:
        - {name: vip_arp, value: \"true\"}
        - {name: port, value: \"6443\"}
        - {name: vip_interface, value: $VIP_IF}
        - {name: cp_enable, value: \"true\"}
        - {name: vip_leaderelection, value: \"true\"}
        - {name: address, value: $VIP}
      securityContext:
        capabilities: {add: [NET_ADMIN, NET_RAW]}
      volumeMounts:
        - {name: kubeconfig, mountPath: /etc/kubernetes/admin.conf}
  volumes:
    - name: kubeconfig
      hostPath: {path: /etc/kubernetes/super-admin.conf}
YAML"
}

init_config() {
    cat <<YAML
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
controlPlaneEndpoint: "$VIP:6443"
networking:
  podSubnet: "$POD_CIDR"
  serviceSubnet: "$SVC_CIDR"
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
# Exclusive cores for Guaranteed pods with whole-CPU requests (the proxy).
cpuManagerPolicy: static
reservedSystemCPUs: "$RESERVED"
topologyManagerPolicy: single-numa-node
YAML
}

step_init() {
    local i=$FIRST
    log "kubeadm init on ${NAMES[$i]}"
    remote "$i" "
        if [ ! -f \"\$ROOT/etc/kubernetes/admin.conf\" ]; then
            mkdir -p \"\$ROOT/etc/kubernetes\"
            cat > \"\$ROOT/etc/kubernetes/zcproxy-kubeadm.yaml\" <<'YAML'
$(init_config)
YAML
            kubeadm init --config \"\$ROOT/etc/kubernetes/zcproxy-kubeadm.yaml\" --upload-certs
        fi"
}

step_join() {
    local join key i
    join=$(remote_out "$FIRST" 'kubeadm token create --print-join-command')
    key=$(remote_out "$FIRST" 'kubeadm init phase upload-certs --upload-certs | tail -n 1')
    for i in "${controls[@]:1}"; do
        log "join ${NAMES[$i]} as a control-plane node"
        step_vip "$i"
        remote "$i" "
            if [ ! -f \"\$ROOT/etc/kubernetes/kubelet.conf\" ]; then
                $join --control-plane --certificate-key $key
            fi"
    done
    for i in "${workers[@]}"; do
        log "join ${NAMES[$i]} as a worker"
        remote "$i" "
            if [ ! -f \"\$ROOT/etc/kubernetes/kubelet.conf\" ]; then
                $join
            fi"
    done
}

# kubectl apply of a manifest: a local copy (--manifests) streamed over, or the URL.
apply_manifest() {
    local file=$1 url=$2
    if [[ -n $MANIFESTS ]]; then
        [[ -r $MANIFESTS/$file ]] || die "--manifests: $MANIFESTS/$file missing"
        remote "$FIRST" "base64 -d <<'B64' | kubectl --kubeconfig \"\$ROOT/etc/kubernetes/admin.conf\" apply -f -
$(base64 <"$MANIFESTS/$file")
B64"
    else
        remote "$FIRST" "kubectl --kubeconfig \"\$ROOT/etc/kubernetes/admin.conf\" apply -f $url"
    fi
}

step_cni() {
    log "Calico, Multus, SR-IOV device plugin and CNI"
    apply_manifest calico.yaml "https://raw.githubusercontent.com/projectcalico/calico/$CALICO_VERSION/manifests/calico.yaml"
    apply_manifest multus.yaml "https://raw.githubusercontent.com/k8snetworkplumbingwg/multus-cni/$MULTUS_VERSION/deployments/multus-daemonset-thick.yml"
    remote "$FIRST" "kubectl --kubeconfig \"\$ROOT/etc/kubernetes/admin.conf\" apply -f - <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata:
  name: sriovdp-config
  namespace: kube-system
data:
  config.json: '{\"resourceList\": [{\"resourceName\": \"${SRIOV_RES#*/}\", \"resourcePrefix\": \"${SRIOV_RES%%/*}\", \"selectors\": {\"pfNames\": [\"${SRIOV_PF:-none}\"]}}]}'
YAML"
    apply_manifest sriov-device-plugin.yaml "https://raw.githubusercontent.com/k8snetworkplumbingwg/sriov-network-device-plugin/$SRIOV_DP_VERSION/deployments/sriovdp-daemonset.yaml"
    apply_manifest sriov-cni.yaml "https://raw.githubusercontent.com/k8snetworkplumbingwg/sriov-cni/$SRIOV_CNI_VERSION/images/sriov-cni-daemonset.yaml"
}

step_label() {
    local i
    for i in "${!NAMES[@]}"; do
        [[ ${PROXY[$i]} == 1 ]] || continue
        remote "$FIRST" "kubectl --kubeconfig \"\$ROOT/etc/kubernetes/admin.conf\" label node ${NAMES[$i]} zcproxy.io/proxy=true --overwrite"
    done
}

step_chart() {
    log "helm upgrade --install zcproxy (cores=$CORES)"
    [[ -d $CHART ]] || die "chart $CHART not found"
    local kubeconfig
    kubeconfig=$(mktemp)
    # shellcheck disable=SC2064 # the path is fixed now
    trap "rm -f '$kubeconfig'" EXIT
    remote_out "$FIRST" 'cat "$ROOT/etc/kubernetes/admin.conf"' >"$kubeconfig"
    local args=(upgrade --install zcproxy "$CHART" --namespace zcproxy --create-namespace
        --kubeconfig "$kubeconfig" --set "cores=$CORES"
        --set-string "dataplane.nodeSelector.zcproxy\.io/proxy=true")
    [[ -n $SRIOV_PF ]] && args+=(--set dataplane.sriov.enabled=true --set "dataplane.sriov.resourceName=$SRIOV_RES")
    [[ -n $VALUES ]] && args+=(--values "$VALUES")
    if [[ $DRY == 1 ]]; then
        echo "[local] helm ${args[*]}"
    else
        helm "${args[@]}"
    fi
}

for_each_node() {
    local fn=$1 i
    for i in "${!NAMES[@]}"; do
        log "$fn on ${NAMES[$i]}"
        "$fn" "$i"
    done
}

step_enabled prereqs && for_each_node step_prereqs
step_enabled containerd && for_each_node step_containerd
step_enabled kube && for_each_node step_kube
step_enabled hugepages && for_each_node step_hugepages
step_enabled sriov && for_each_node step_sriov
step_enabled vip && step_vip "$FIRST"
step_enabled init && step_init
step_enabled join && step_join
step_enabled cni && step_cni
step_enabled label && step_label
step_enabled chart && step_chart
log "done"
