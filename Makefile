# Shortcuts; every target is a thin wrapper around a script or tool documented in
# docs/deployment.md. Variables: CORES, VALUES, RELEASE, NAMESPACE, INVENTORY, VIP.
CORES ?= 2
RELEASE ?= zcproxy
NAMESPACE ?= zcproxy
VALUES ?=
HELM ?= $(shell command -v helm || echo .tools/bin/helm)
values_arg = $(if $(VALUES),--values $(VALUES),)

.PHONY: run test test-fast infra-tools infra-check images images-local chart-lint chart-render \
	dashboards cluster-check cluster-dry-run cluster

run:                 ## build and run the proxy on the embedded default
	cargo run --release -p zcproxy

test:                ## the whole suite (what CI runs)
	./scripts/test.sh

test-fast:           ## the suite without fuzzing and deployment checks
	./scripts/test.sh --no-fuzz --no-infra

infra-tools:         ## install helm, validators, promtool, podman/buildah into .tools/
	./scripts/infra-tools.sh

infra-check:         ## every offline deployment check
	./scripts/infra-check.sh

images:              ## build both images with docker (pulls the Rust and distroless bases)
	docker build -f Dockerfile.dataplane -t zcproxy:dev .
	docker build -f Dockerfile.controlplane -t zcproxy-control:dev .

images-local:        ## build and run both images without pulling anything (buildah/podman)
	./scripts/infra/build-images.sh release

chart-lint: infra-tools
	$(HELM) lint --strict helm/zcproxy

chart-render: infra-tools  ## render the chart: make chart-render CORES=8 VALUES=my.yaml
	$(HELM) template $(RELEASE) helm/zcproxy --namespace $(NAMESPACE) --set cores=$(CORES) $(values_arg)

dashboards:          ## regenerate grafana/dashboards from grafana/generate.py
	python3 grafana/generate.py

cluster-check:       ## make cluster-check INVENTORY=hosts VIP=10.0.0.100
	./ansible-free-ssh.sh -i $(INVENTORY) --vip $(VIP) --check

cluster-dry-run:
	./ansible-free-ssh.sh -i $(INVENTORY) --vip $(VIP) --cores $(CORES) $(values_arg) --dry-run

cluster:             ## build the HA cluster and install the chart
	./ansible-free-ssh.sh -i $(INVENTORY) --vip $(VIP) --cores $(CORES) $(values_arg)
