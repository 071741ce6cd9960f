#!/usr/bin/env bash
# A throwaway Prometheus on loopback that scrapes the operator and evaluates the chart's
# alert rules, for end-to-end tests and the demo; or (start-pods) scrapes the pods of one
# testenv namespace, found through the API server, for `spec.analysis.prometheus` scenarios.
# Uses Debian's `prometheus` binary.
#
#   scripts/prometheus-local.sh start HOST:PORT   # scrape the operator's /metrics there
#   scripts/prometheus-local.sh start-pods NAMESPACE   # scrape that namespace's release pods
#   scripts/prometheus-local.sh wait-alert NAME [TIMEOUT_SECONDS]   # until NAME is firing
#   scripts/prometheus-local.sh alerts            # firing and pending alerts, as JSON
#   scripts/prometheus-local.sh stop
#
# Env: PROM_DIR (state, default .testenv/prometheus), PROM_PORT (default 19090),
# PROM_INTERVAL (scrape and rule evaluation interval, default 1s).
set -euo pipefail
cd "$(dirname "$0")/.."

PROM_DIR=${PROM_DIR:-.testenv/prometheus}
PROM_PORT=${PROM_PORT:-19090}
PROM_INTERVAL=${PROM_INTERVAL:-1s}
RULES=$PWD/charts/shortener-operator/files/prometheus-rules.yaml
url="http://127.0.0.1:$PROM_PORT"

die() { echo "prometheus-local: $*" >&2; exit 1; }

# Loopback, or the real node's pod network (TESTENV_NODE=real), which exists only in the
# cluster's own network namespace: never an address off this machine.
pod_network() {
  if [[ $(cat .testenv/mode 2>/dev/null) == real ]]; then echo '10\.244\.0\..*'; else echo '127\..*'; fi
}

start() {
  local target=$1
  [[ $target == 127.* || $target == localhost:* ]] ||
    [[ $target == 10.244.0.* && $(cat .testenv/mode 2>/dev/null) == real ]] ||
    die "target must be on loopback or the real node's pod network, got $target"
  # job_name and honor_labels as the chart's ServiceMonitor sets them, so the rules match.
  run <<YAML
global:
  scrape_interval: $PROM_INTERVAL
  evaluation_interval: $PROM_INTERVAL
rule_files:
  - $RULES
scrape_configs:
  - job_name: shortener-operator
    honor_labels: true
    static_configs:
      - targets: ["$target"]
YAML
  echo "prometheus-local: $url scraping $target (pid $(cat "$PROM_DIR/pid"))"
}

# The release pods of one namespace, discovered through testenv's API server, with the labels
# the README's relabelling gives them (namespace, pod, release, revision); only pod IPs on
# testenv's pod network are kept. Debian's Prometheus is built without kubernetes_sd_configs,
# so a loop here lists the pods every second (kubectl) into a file_sd_configs file.
start_pods() {
  local ns=$1
  [[ $ns =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "not a namespace name: $ns"
  [[ -f .testenv/kubeconfig ]] || die "no .testenv/kubeconfig: is testenv up?"
  mkdir -p "$PROM_DIR"
  sync_targets "$ns" || die "cannot list the pods of $ns"
  local targets
  targets="$(cd "$PROM_DIR" && pwd)/targets.json"
  run <<YAML
global:
  scrape_interval: $PROM_INTERVAL
  evaluation_interval: $PROM_INTERVAL
scrape_configs:
  - job_name: shortener
    file_sd_configs:
      - files: ["$targets"]
        refresh_interval: 1s
YAML
  # Kept in step with the pods from now on (a discovery cadence, like kubernetes_sd's watch).
  (while sleep 1; do sync_targets "$ns" || true; done) >>"$PROM_DIR/sync.log" 2>&1 &
  echo $! >"$PROM_DIR/sync.pid"
  echo "prometheus-local: $url scraping the release pods of namespace $ns (pid $(cat "$PROM_DIR/pid"))"
}

# Writes the namespace's running release pods as file_sd targets (atomically: Prometheus
# watches the file).
sync_targets() {
  local ns=$1
  testenv/bin/kubectl --kubeconfig .testenv/kubeconfig -n "$ns" get pods \
    -l app.kubernetes.io/instance -o json | python3 -c '
import json, re, sys
network = re.compile(sys.argv[1])
targets = []
for pod in json.load(sys.stdin)["items"]:
    meta, status = pod["metadata"], pod.get("status", {})
    ip = status.get("podIP", "")
    if status.get("phase") != "Running" or meta.get("deletionTimestamp") or not network.fullmatch(ip):
        continue
    labels = meta.get("labels", {})
    for c in pod["spec"]["containers"]:
        for p in c.get("ports", []):
            if p.get("name") == "http":
                targets.append({"targets": ["%s:%d" % (ip, p["containerPort"])], "labels": {
                    "namespace": meta["namespace"], "pod": meta["name"],
                    "release": labels.get("app.kubernetes.io/instance", ""),
                    "revision": labels.get("shortener.dev/revision", "")}})
json.dump(targets, sys.stdout)
' "$(pod_network)" >"$PROM_DIR/targets.json.tmp" && mv "$PROM_DIR/targets.json.tmp" "$PROM_DIR/targets.json"
}

# Starts Prometheus on loopback with the configuration on stdin; returns once it is ready.
run() {
  command -v prometheus >/dev/null || die "prometheus not found (apt-get install prometheus)"
  if [[ -f $PROM_DIR/pid ]] && kill -0 "$(cat "$PROM_DIR/pid")" 2>/dev/null; then
    die "already running (pid $(cat "$PROM_DIR/pid")); stop it first"
  fi
  mkdir -p "$PROM_DIR/data"
  cat >"$PROM_DIR/prometheus.yml"
  prometheus --config.file="$PROM_DIR/prometheus.yml" --storage.tsdb.path="$PROM_DIR/data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$PROM_DIR/prometheus.log" 2>&1 &
  echo $! >"$PROM_DIR/pid"
  local deadline=$((SECONDS + 30))
  until curl -fsS "$url/-/ready" >/dev/null 2>&1; do
    kill -0 "$(cat "$PROM_DIR/pid")" 2>/dev/null || { tail -20 "$PROM_DIR/prometheus.log" >&2; die "exited"; }
    ((SECONDS < deadline)) || die "not ready after 30s; see $PROM_DIR/prometheus.log"
    sleep 0.2
  done
}

stop() {
  if [[ -f $PROM_DIR/sync.pid ]]; then
    kill "$(cat "$PROM_DIR/sync.pid")" 2>/dev/null || true
    rm -f "$PROM_DIR/sync.pid"
  fi
  [[ -f $PROM_DIR/pid ]] || return 0
  local pid
  pid=$(cat "$PROM_DIR/pid")
  if kill "$pid" 2>/dev/null; then
    local deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  fi
  rm -f "$PROM_DIR/pid"
}

alerts() { curl -fsS "$url/api/v1/alerts"; }

wait_alert() {
  local name=$1 timeout=${2:-60}
  local deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if alerts | python3 -c '
import json, sys
alerts = json.load(sys.stdin)["data"]["alerts"]
firing = [a for a in alerts if a["labels"]["alertname"] == sys.argv[1] and a["state"] == "firing"]
for a in firing:
    print(json.dumps(a["labels"], sort_keys=True))
sys.exit(0 if firing else 1)
' "$name"; then
      return 0
    fi
    sleep 0.5
  done
  die "$name not firing after ${timeout}s"
}

case ${1:-} in
  start) start "${2:?usage: start HOST:PORT}" ;;
  start-pods) start_pods "${2:?usage: start-pods NAMESPACE}" ;;
  stop) stop ;;
  alerts) alerts ;;
  wait-alert) wait_alert "${2:?usage: wait-alert NAME [TIMEOUT]}" "${3:-60}" ;;
  *) die "usage: start HOST:PORT | start-pods NAMESPACE | wait-alert NAME [TIMEOUT] | alerts | stop" ;;
esac
