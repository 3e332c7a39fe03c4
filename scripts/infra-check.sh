#!/usr/bin/env bash
# Offline checks of everything the deployment is made of, with real tools, each with
# passing and failing inputs: shellcheck, hadolint, the Helm chart (lint, render, what
# `--set cores=8` changes, schema rejections, kubernetes-validate, typed models for enums
# and ServiceMonitor, the Multus CRD and SR-IOV CNI config), Grafana dashboards (schema,
# generator in sync, promtool, live Prometheus against the real binaries), the images
# (built and run), and the kubeadm script against fake SSH nodes.
#
#   scripts/infra-check.sh            everything
#   scripts/infra-check.sh --no-images --no-nodes   skip the slow or root-only parts
set -euo pipefail
cd "$(dirname "$0")/.."
images=1 nodes=1
for a in "$@"; do
    case $a in
        --no-images) images=0 ;;
        --no-nodes) nodes=0 ;;
        *) echo "usage: $0 [--no-images] [--no-nodes]" >&2; exit 2 ;;
    esac
done
./scripts/infra-tools.sh >/dev/null
export PATH=$PWD/.tools/bin:$PATH
NODE_MODULES=$PWD/.tools/node/node_modules
chart=helm/zcproxy
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
section() { echo "== $*"; }
expect_fail() { # expect_fail WHAT CMD...: CMD must fail
    local what=$1; shift
    if "$@" >"$work/neg.out" 2>&1; then
        echo "FAIL: $what was accepted" >&2
        cat "$work/neg.out" >&2
        exit 1
    fi
    echo "ok   rejected: $what"
}

section "shellcheck"
mapfile -t shells < <(git ls-files '*.sh' | sort)
shellcheck "${shells[@]}"
cat >"$work/bad.sh" <<'BAD'
x=$(ls *)
echo $x
BAD
expect_fail "a shell script with unquoted expansions" shellcheck "$work/bad.sh"
echo "ok   ${#shells[@]} scripts"

section "hadolint"
hadolint Dockerfile.dataplane Dockerfile.controlplane
printf 'FROM debian\nRUN apt-get install curl\n' >"$work/Dockerfile.bad"
expect_fail "a Dockerfile with an untagged base and unpinned apt-get" hadolint "$work/Dockerfile.bad"

section "helm lint and render"
helm lint --strict "$chart" 2>&1 | grep -v "symbolic link" | tail -n 2
helm template t "$chart" >"$work/default.yaml" 2>/dev/null
helm template t "$chart" --set cores=8 >"$work/cores8.yaml" 2>/dev/null
python3 scripts/infra/assert_render.py "$work/default.yaml" 2 256 256 64
python3 scripts/infra/assert_render.py "$work/cores8.yaml" 8 256 256 64
helm template t "$chart" --set cores=3 --set dataplane.hugepages.perCoreMi=128 \
    --set dataplane.memory.perCoreMi=512 >"$work/cores3.yaml" 2>/dev/null
python3 scripts/infra/assert_render.py "$work/cores3.yaml" 3 256 512 128
# Everything rendered at once: SR-IOV attachment and ServiceMonitors forced on.
helm template t "$chart" --set dataplane.sriov.enabled=true --set metrics.serviceMonitor.enabled=true \
    --set metrics.prometheusRule.enabled=true >"$work/full.yaml" 2>/dev/null
grep -q "kind: PrometheusRule" "$work/full.yaml"
grep -q "kind: NetworkAttachmentDefinition" "$work/full.yaml"
grep -q "k8s.v1.cni.cncf.io/networks" "$work/full.yaml"
grep -q "intel.com/sriov_netdevice: \"1\"" "$work/full.yaml"
[[ $(grep -c "kind: ConfigMap" "$work/full.yaml") -ge 3 ]] || { echo "FAIL: dashboard ConfigMaps missing" >&2; exit 1; }
# External services instead of the bundled subcharts.
helm template t "$chart" --set controlplane.enabled=false --set nats.enabled=false \
    --set postgresql.enabled=false --set external.controlplaneUrl=http://cp.ops:8080 \
    --set external.natsUrl=nats://nats.ops:4222 >"$work/external.yaml" 2>/dev/null
grep -q 'url = "http://cp.ops:8080"' "$work/external.yaml"
if grep -q "kind: StatefulSet" "$work/external.yaml"; then echo "FAIL: disabled subcharts rendered" >&2; exit 1; fi
echo "ok   defaults, cores=8, cores=3, SR-IOV + ServiceMonitor, external services"

section "values.schema.json rejects bad values"
for bad in cores=0 cores=two cores=1.5 dataplane.relay=fast dataplane.hugepages.size=4Mi \
    dataplane.service.type=Ingress dataplane.port=70000 networkPolicy.clientCIDRs[0]=anywhere \
    metrics.serviceMonitor.interval=soon unknownKey=1; do
    expect_fail "--set $bad" helm template t "$chart" --set "$bad"
done

section "kubernetes-validate --strict (core kinds, Kubernetes 1.33)"
python3 - "$work/full.yaml" "$work/core.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
core = [d for d in docs if "." not in d["apiVersion"].split("/")[0] or d["apiVersion"].startswith(("apps/", "policy/", "networking.k8s.io/"))]
yaml.safe_dump_all(core, open(sys.argv[2], "w"))
print(f"{len(core)} of {len(docs)} objects are core kinds")
PY
kubernetes-validate -k 1.33.0 --strict --quiet "$work/core.yaml"
python3 - "$work/core.yaml" "$work/core-bad.yaml" <<'PY'
import sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1])))
dep = next(d for d in docs if d["kind"] == "Deployment")
dep["spec"]["template"]["spec"]["containers"][0]["colour"] = "blue"
yaml.safe_dump_all(docs, open(sys.argv[2], "w"))
PY
expect_fail "an unknown field in a container" kubernetes-validate -k 1.33.0 --strict --quiet "$work/core-bad.yaml"

section "typed models: NetworkPolicy enums, ServiceMonitor, every core kind"
node scripts/infra/validate-models.mjs "$NODE_MODULES" "$work/full.yaml" | grep -v "^ok" || true
sed 's/policyTypes: \[Ingress, Egress\]/policyTypes: [Ingress, Egres]/' "$work/full.yaml" >"$work/np-bad.yaml"
expect_fail "a NetworkPolicy with policyTypes Egres" node scripts/infra/validate-models.mjs "$NODE_MODULES" "$work/np-bad.yaml"
sed 's/      interval: 15s/      interval: 15 seconds/' "$work/full.yaml" >"$work/sm-bad.yaml"
expect_fail "a ServiceMonitor with interval '15 seconds'" node scripts/infra/validate-models.mjs "$NODE_MODULES" "$work/sm-bad.yaml"

section "CRDs kept in the repository: NetworkAttachmentDefinition and its SR-IOV CNI config"
crd_args=(kubeadm/manifests/network-attachment-definition-crd.yaml --cni-schema scripts/infra/sriov-cni-config.schema.json)
python3 scripts/infra/validate_crds.py "$work/full.yaml" "${crd_args[@]}"
printf 'dataplane:\n  sriov:\n    enabled: true\n    ipam: %s\n' "'{\"type\": \"magic\"}'" >"$work/nad-bad-values.yaml"
helm template t "$chart" -f "$work/nad-bad-values.yaml" >"$work/nad-bad.yaml" 2>/dev/null
expect_fail "an SR-IOV attachment with IPAM type 'magic'" python3 scripts/infra/validate_crds.py "$work/nad-bad.yaml" "${crd_args[@]}"

section "Grafana dashboards"
python3 grafana/generate.py --out "$work/dashboards"
diff -r "$work/dashboards" grafana/dashboards || { echo "FAIL: grafana/dashboards is not what grafana/generate.py makes" >&2; exit 1; }
check-jsonschema --schemafile .tools/grafana-dashboard.schema.json grafana/dashboards/*.json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d["panels"][1]["gridPos"]="top"; json.dump(d,open(sys.argv[2],"w"))' \
    grafana/dashboards/zcproxy-dataplane.json "$work/dash-bad.json"
expect_fail "a dashboard whose gridPos is a string" check-jsonschema --schemafile .tools/grafana-dashboard.schema.json "$work/dash-bad.json"
python3 scripts/infra/check_dashboards.py rules grafana/dashboards/*.json >"$work/rules.yml"
promtool check rules "$work/rules.yml" | grep SUCCESS
printf 'groups:\n  - name: x\n    rules:\n      - record: x\n        expr: "sum(rate(zcproxy_errors_total[1m])"\n' >"$work/rules-bad.yml"
expect_fail "a query with unbalanced parentheses" promtool check rules "$work/rules-bad.yml"
section "alerting rules"
promtool check rules grafana/alerts/zcproxy.rules.yml | grep SUCCESS
(cd grafana/alerts && promtool test rules zcproxy.rules.test.yml | grep SUCCESS)
sed 's/zcproxy_ready == 0/zcproxy_ready == 1/' grafana/alerts/zcproxy.rules.yml >"$work/zcproxy.rules.yml"
cp grafana/alerts/zcproxy.rules.test.yml "$work/"
expect_fail "an alert rule that no longer fires as its unit test expects" bash -c "cd '$work' && promtool test rules zcproxy.rules.test.yml"
scripts/infra/live-dashboards.sh

if ((images)); then
    section "images: build through the pull-free path and run"
    scripts/infra/build-images.sh debug
fi
if ((nodes)); then
    section "ansible-free-ssh.sh against fake SSH nodes"
    kubeadm/test/fake-nodes.sh
fi
echo "infra checks passed"
