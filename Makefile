# The two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test lint unit demo chart-test crds crd-check e2e deps
test: deps lint unit store-pg-test crd-check chart-test argocd-health-test testenv-test e2e plugin-test chart-e2e

# What a fresh machine lacks (apt packages, helm, PyYAML); idempotent, quick when all is there.
deps:
	bash scripts/install-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	$(CARGO) test --workspace --locked

# The shortener's store and API tests again, on a real PostgreSQL server started on loopback
# for the run and stopped afterwards, also on failure (scripts/test-store-pg.sh).
.PHONY: store-pg-test
store-pg-test:
	bash scripts/test-store-pg.sh

# The bad-release story end to end on testenv: healthy v1, failing v2 rolled back, fixed v3.
demo: deps
	bash scripts/demo.sh

# Benchmarks: figures go to bench-results/ (speed and memory targets live here, not in tests).
.PHONY: bench bench-cluster
bench:
	bash scripts/bench-shortener.sh
	bash scripts/bench-store.sh
	$(CARGO) bench -p operator --bench incident_filter
	$(MAKE) --no-print-directory bench-cluster

# On testenv: bad releases with the operator vs plain Deployments, and the operator's own
# cost at 1/100/1000 releases -> bench-results/{recovery,operator-cost}.json, summary.md and
# timeline-*.png (scripts/bench-cluster.sh; tunables there, e.g. BENCH_REPS=5).
bench-cluster:
	bash scripts/bench-cluster.sh

# The CRD YAML is generated from operator/src/crd.rs and checked in.
CRD_YAML := crds/shortenerreleases.shortener.dev.yaml
crds:
	$(CARGO) run -q -p operator --bin crdgen -- $(CRD_YAML)
	cp $(CRD_YAML) charts/shortener-operator/crds/

crd-check:
	@$(CARGO) run -q -p operator --bin crdgen | diff -u $(CRD_YAML) - \
		|| { echo "$(CRD_YAML) is stale: run 'make crds'"; exit 1; }

# Operator end-to-end scenarios on testenv; stops the cluster afterwards only if it started it.
# A throwaway PostgreSQL server on loopback (scripts/pg.sh) serves the scenarios on the
# PostgreSQL store (SHORTENER_E2E_PG_URL); it is stopped and deleted afterwards, also on
# failure. E2E_FILTER picks scenarios by name, e.g. make e2e E2E_FILTER=s17.
E2E_PG := .pg/e2e
E2E_FILTER ?=
e2e:
	$(CARGO) build -p shortener -p operator
	@if testenv/bin/kubectl --kubeconfig .testenv/kubeconfig get --raw /readyz >/dev/null 2>&1; then up=1; else up=0; fi; \
	bash scripts/pg.sh down $(E2E_PG) >/dev/null 2>&1; \
	trap 'bash scripts/pg.sh down $(E2E_PG)' EXIT; \
	pg_url=$$(PG_FSYNC=off bash scripts/pg.sh up $(E2E_PG)) || exit 1; \
	$(MAKE) --no-print-directory cluster-up || exit 1; \
	SHORTENER_E2E_PG_URL=$$pg_url $(CARGO) test -p operator --test e2e -- --ignored --test-threads=1 $(E2E_FILTER); rc=$$?; \
	[[ $$up == 1 ]] || $(MAKE) --no-print-directory cluster-down; exit $$rc

# kubectl-shortener against a live release on testenv; stops the cluster afterwards only if
# it started it.
.PHONY: plugin-test
plugin-test:
	$(CARGO) build -p shortener -p operator
	@if testenv/bin/kubectl --kubeconfig .testenv/kubeconfig get --raw /readyz >/dev/null 2>&1; then up=1; else up=0; fi; \
	$(MAKE) --no-print-directory cluster-up || exit 1; \
	$(CARGO) test -p operator --test plugin -- --ignored --test-threads=1; rc=$$?; \
	[[ $$up == 1 ]] || $(MAKE) --no-print-directory cluster-down; exit $$rc

# The Argo CD health check (docs/argocd-health/health.lua) against sample statuses (Lua 5.4).
.PHONY: argocd-health-test
argocd-health-test:
	bash scripts/check-argocd-health.sh

# Helm chart, alert rules (promtool) and dashboard checks; no cluster needed.
chart-test:
	bash scripts/check-chart.sh

# The chart on a live testenv (started only if not up): install, a release goes Healthy with
# the chart's RBAC, failing ones roll back, Prometheus fires the rollback alert, clean uninstall;
# then the RBAC boundaries, the aggregated user roles and the CRD upgrade step.
.PHONY: chart-e2e
chart-e2e:
	bash scripts/chart-e2e.sh
	bash scripts/chart-rbac-e2e.sh

# Container images from Dockerfile.shortener/Dockerfile.operator (their offline target:
# static binaries FROM scratch) and testenv's pause image, as OCI archives in .images/.
.PHONY: images
images:
	bash scripts/install-deps.sh real
	bash scripts/images.sh

# The real node (TESTENV_NODE=real: containerd, kubelet, kube-proxy; testenv/README.md):
# the operator's core e2e scenarios, then the chart e2e, on a real-node cluster of their
# own (in its own network namespace, so it never collides with a simulated cluster).
# Stops the cluster at the end.
.PHONY: test-real e2e-real chart-e2e-real
REAL_SCENARIOS := s1_healthy_release_becomes_ready s2_release_failing_its_smoke_test_is_never_promoted s4_analysis_rolls_back_a_promoted_release_within_seconds s17_postgres_store_keeps_every_url_across_promotion_and_rollback
test-real:
	bash scripts/install-deps.sh real
	@mkdir -p .testenv && bash scripts/testenv-real-leaks.sh snapshot .testenv/real-leaks-before.txt
	@$(MAKE) --no-print-directory e2e-real REAL_KEEP=1 || { $(MAKE) --no-print-directory cluster-down; exit 1; }
	@$(MAKE) --no-print-directory chart-e2e-real
	@bash scripts/testenv-real-leaks.sh compare .testenv/real-leaks-before.txt

e2e-real:
	$(CARGO) build -p shortener -p operator
	$(CARGO) test -p operator --test e2e --no-run
	TESTENV_NODE=real $(MAKE) --no-print-directory cluster-up
	@CARGO=$(CARGO) bash scripts/e2e-real.sh $(REAL_SCENARIOS); rc=$$?; \
	[[ -n "$(REAL_KEEP)" ]] || $(MAKE) --no-print-directory cluster-down; exit $$rc

chart-e2e-real:
	TESTENV_NODE=real $(MAKE) --no-print-directory cluster-up
	@TESTENV_NODE=real scripts/testenv-exec.sh bash scripts/chart-e2e.sh; rc=$$?; \
	$(MAKE) --no-print-directory cluster-down; exit $$rc

# Local Kubernetes (testenv/README.md): real control plane, simulated node on loopback.
.PHONY: cluster-up cluster-down testenv-test
cluster-up:
	@[[ "$${TESTENV_NODE:-}" != real ]] || bash scripts/install-deps.sh real
	bash scripts/testenv-up.sh

cluster-down:
	bash scripts/testenv-down.sh

# Node agent unit tests, then the end-to-end checks; stops the cluster at the end only if
# it started it (TESTENV_KEEP=1 keeps it running regardless).
testenv-test:
	bash scripts/testenv-test.sh
