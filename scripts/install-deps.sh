#!/usr/bin/env bash
# Installs what `make test` needs on a fresh machine. Idempotent: skips what is present.
set -euo pipefail
need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
# promtool, for the chart's alert rule checks, and the prometheus server that check-chart.sh,
# chart-e2e.sh and e2e scenario s44 start on loopback themselves (scripts/prometheus-local.sh;
# Debian's package does not start a server here).
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || need_apt+=(prometheus)
# PostgreSQL server binaries, for the store tests on PostgreSQL (scripts/pg.sh). Some machines
# ship them on PATH; Debian's package keeps them in /usr/lib/postgresql/*/bin.
command -v pg_ctl >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || need_apt+=(postgresql)
# A Lua interpreter, for the Argo CD health check's tests (scripts/check-argocd-health.sh).
command -v lua5.4 >/dev/null || command -v lua5.3 >/dev/null || command -v lua5.1 >/dev/null || command -v lua >/dev/null || need_apt+=(lua5.4)
# Only for the real node (`install-deps.sh real`: make test-real, make images): containerd, runc (crun cannot run
# on this machine kind's hybrid cgroups), the CNI plugins, iptables for kube-proxy, buildah.
if [[ ${1:-} == real ]]; then
  command -v containerd >/dev/null || need_apt+=(containerd)
  command -v runc >/dev/null || need_apt+=(runc)
  command -v buildah >/dev/null || need_apt+=(buildah)
  # The operator image's CA bundle (scripts/images.sh).
  [[ -s /etc/ssl/certs/ca-certificates.crt ]] || need_apt+=(ca-certificates)
  command -v iptables >/dev/null || need_apt+=(iptables)
  [[ -x /usr/lib/cni/bridge ]] || need_apt+=(containernetworking-plugins)
fi
if ((${#need_apt[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
# pg.sh runs PostgreSQL as this user when started as root (initdb refuses root).
if ((EUID == 0)) && ! id postgres >/dev/null 2>&1; then
  useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin postgres
fi
# Go 1.26 or newer builds testenv, the local Kubernetes (its control plane comes from the Go module proxy).
go version 2>/dev/null | grep -qE 'go1\.(2[6-9]|[3-9][0-9])' || { echo "install-deps: testenv needs Go >= 1.26 on PATH" >&2; exit 1; }
# helm, built from its Go module into GOPATH/bin (scripts/check-chart.sh looks there too).
gobin="$(go env GOPATH)/bin"
command -v helm >/dev/null || [[ -x $gobin/helm ]] || GOBIN="$gobin" go install helm.sh/helm/v3/cmd/helm@v3.22.0
# PyYAML, for scripts/chart_checks.py.
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml
