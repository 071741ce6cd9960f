#!/usr/bin/env bash
# make chart-e2e: the Helm chart on a live testenv. Installs the chart, proves the operator
# runs as the chart's ServiceAccount and that the chart's RBAC is enough for a release to go
# Healthy and for a failing one to be rolled back, has a real Prometheus scrape the operator
# pod until ShortenerReleaseRolledBack fires, then uninstalls and checks that nothing the
# chart made is left but the CRD. Steps run in order and stop at the first failure, printing
# what the cluster and the operator had to say; cleanup runs either way.
#
# Starts testenv only if it is not up (and then stops it at the end). Namespaces and the
# Prometheus port are its own, so it can share a cluster with other tests.
# On the real node (`make chart-e2e-real`: TESTENV_NODE=real, run through
# scripts/testenv-exec.sh) the operator runs in its container from the image `make images`
# built (imagePullPolicy Never), with the in-cluster config, and the checks below look at
# the container itself.
# Env: CHART_E2E_NAMESPACE (operator, default shortener-system), CHART_E2E_APP_NAMESPACE
# (the releases, default chart-e2e), CHART_E2E_KEEP=1 (leave everything installed),
# PROM_PORT (default 19091), WAIT_SECONDS (per rollout wait, default 240),
# CHART_E2E_HELM_ARGS (extra `helm install` arguments, e.g. `--set rbac.create=false` to see
# the test fail when the operator lacks its rights).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PATH="$ROOT/testenv/bin:$PATH:$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
export KUBECONFIG=$ROOT/.testenv/kubeconfig

CHART=charts/shortener-operator
RELEASE=shortener-operator
OP_NS=${CHART_E2E_NAMESPACE:-shortener-system}
APP_NS=${CHART_E2E_APP_NAMESPACE:-chart-e2e}
SR=web
STATE=$ROOT/.testenv/chart-e2e
# The releases' store: a PostgreSQL server of this run (scripts/pg.sh), reached by the pods
# over the pod network with a password from a Secret, as in production.
PG_DIR=$ROOT/.pg/chart-e2e
WAIT_SECONDS=${WAIT_SECONDS:-240}
export PROM_DIR=$STATE/prometheus PROM_PORT=${PROM_PORT:-19091}
VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' "$CHART/Chart.yaml")

passed=0 failed=0
started_cluster=0 installed=0 prom_started=0 pg_started=0 made_ns=()
step_name="" step_t0=$SECONDS run_t0=$SECONDS
timings=()

step() {
  step_name=$1 step_t0=$SECONDS
  printf '\n== %s\n' "$1"
}
pass() {
  passed=$((passed + 1))
  timings+=("$(printf '%4ss  %s' $((SECONDS - step_t0)) "$step_name")")
  printf '  ok (%ss)\n' $((SECONDS - step_t0))
}
info() { printf '  %s\n' "$*"; }

# kube-system's uid names this cluster: a testenv restarted by someone else mid-run (a new
# etcd) explains a failure better than anything below it.
cluster_id() { kubectl get namespace kube-system -o 'jsonpath={.metadata.uid}' 2>/dev/null; }
CLUSTER_ID=

# What a human would look at first: the operator's pod and log, then the release's state.
context() {
  if [[ -n $CLUSTER_ID && $(cluster_id) != "$CLUSTER_ID" ]]; then
    echo "---- context: testenv was restarted during this run (kube-system uid changed; new etcd and CA)" >&2
  fi
  echo "---- context: operator pods in $OP_NS" >&2
  kubectl -n "$OP_NS" get deploy,pods -o wide >&2 2>&1 || true
  kubectl -n "$OP_NS" describe pods -l "app.kubernetes.io/instance=$RELEASE" 2>&1 | tail -n 40 >&2 || true
  echo "---- context: operator log (last 40 lines)" >&2
  kubectl -n "$OP_NS" logs "deploy/$RELEASE" --tail=40 >&2 2>&1 || true
  if kubectl get namespace "$APP_NS" >/dev/null 2>&1; then
    echo "---- context: $APP_NS" >&2
    kubectl -n "$APP_NS" get sr,deploy,svc,pods -o wide >&2 2>&1 || true
    kubectl -n "$APP_NS" describe sr 2>&1 | tail -n 60 >&2 || true
  fi
}

# Fails the current step: context, cleanup, summary, non-zero exit.
fail() {
  failed=$((failed + 1))
  printf '  FAIL: %s: %s\n' "$step_name" "$*" >&2
  context
  finish
}

# wait_until TIMEOUT WHAT CMD...: polls CMD until it succeeds or the deadline passes.
wait_until() {
  local timeout=$1 what=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { fail "timed out after ${timeout}s waiting for $what"; }
    sleep 0.5
  done
}

sr_field() { kubectl -n "$APP_NS" get sr "$SR" -o "jsonpath=$1" 2>/dev/null; }
sr_field_is() { [[ $(sr_field "$1") == "$2" ]]; }

# The release manifest: the example in examples/, on this run's PostgreSQL (the URL in the
# Secret shortener-store), another image, optionally a fault, and optionally no smoke test.
apply_release() {
  local image=$1 fault=${2:-} smoke=${3:-true}
  python3 - examples/shortenerrelease.yaml "$image" "$fault" "$smoke" <<'PY' >"$STATE/release.yaml"
import sys, yaml
path, image, fault, smoke = sys.argv[1:5]
with open(path) as f:
    sr = yaml.safe_load(f)
sr["spec"]["image"] = image
sr["spec"]["store"] = {"postgres": {"urlSecretRef": {"name": "shortener-store", "key": "url"}}}
env = [e for e in sr["spec"].get("env", []) if e["name"] not in ("SHORTENER_STORE", "SHORTENER_FAULT")]
if fault:
    env.append({"name": "SHORTENER_FAULT", "value": fault})
if env:
    sr["spec"]["env"] = env
else:
    sr["spec"].pop("env", None)
sr["spec"].setdefault("healthCheck", {})["smokeTest"] = smoke == "true"
yaml.safe_dump(sr, sys.stdout, sort_keys=False)
PY
  kubectl -n "$APP_NS" apply -f "$STATE/release.yaml"
}

# Creates need the API token the operator keeps in the release's Secret. curl reads the
# header from a file (mode 600), so the token never shows on a command line.
AUTH_HEADER=$STATE/authorization-header
write_auth_header() {
  local token
  token=$(kubectl -n "$APP_NS" get secret "$SR-api-token" -o 'jsonpath={.data.token}' | base64 -d) ||
    fail "no API token Secret $SR-api-token in $APP_NS"
  [[ -n $token ]] || fail "Secret $SR-api-token has no token"
  (umask 077 && printf 'Authorization: Bearer %s\n' "$token" >"$AUTH_HEADER")
}

# Users creating short links through the active Service, so analysis has traffic to judge.
# A pacing delay, not synchronisation: it runs until killed.
traffic_pid=
start_traffic() {
  write_auth_header
  (
    i=0
    while :; do
      i=$((i + 1))
      curl -s -o /dev/null -m 2 -H 'Content-Type: application/json' -H @"$AUTH_HEADER" \
        -d "{\"url\":\"https://example.com/traffic/$i\"}" "http://$1/api/v1/urls" || true
      sleep 0.1
    done
  ) &
  traffic_pid=$!
}
stop_traffic() {
  [[ -n $traffic_pid ]] || return 0
  kill "$traffic_pid" 2>/dev/null
  wait "$traffic_pid" 2>/dev/null
  traffic_pid=
}

# wait_rolled_back IMAGE REASON: the revision for IMAGE failed with REASON at the applied
# generation, and the v1 revision is the stable one again.
wait_rolled_back() {
  local image=$1 want_reason=$2 gen
  gen=$(kubectl -n "$APP_NS" get sr "$SR" -o 'jsonpath={.metadata.generation}')
  rolled_back() { sr_field_is '{.status.phase}' RolledBack && sr_field_is '{.status.observedGeneration}' "$gen"; }
  wait_until "$WAIT_SECONDS" "phase RolledBack at generation $gen" rolled_back
  local current stable outcome reason cur_image stable_image
  current=$(sr_field '{.status.currentRevision}')
  stable=$(sr_field '{.status.stableRevision}')
  outcome=$(sr_field "{.status.history[?(@.revision==$current)].outcome}")
  reason=$(sr_field "{.status.history[?(@.revision==$current)].reason}")
  cur_image=$(sr_field "{.status.history[?(@.revision==$current)].image}")
  stable_image=$(sr_field "{.status.history[?(@.revision==$stable)].image}")
  [[ $cur_image == "$image" ]] || fail "current revision $current is $cur_image, want $image"
  [[ $outcome == Failed ]] || fail "revision $current outcome '$outcome', want Failed"
  [[ $reason == "$want_reason" ]] || fail "revision $current failed with reason '$reason', want $want_reason"
  [[ $stable_image == shortener:v1 && $stable != "$current" ]] ||
    fail "stable revision $stable ($stable_image), want the v1 revision, not $current"
  kubectl -n "$APP_NS" get sr "$SR"
  info "revision $current ($image): $outcome, reason $reason; stable revision $stable (shortener:v1)"
  info "message: $(sr_field '{.status.message}')"
}

# link_resolves SLUG URL: GET /SLUG through the active Service redirects to URL.
link_resolves() {
  local got
  got=$(curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' -m 5 "http://$addr/$1") || got="no answer"
  [[ $got == "308 $2" ]] || fail "GET /$1 through Service $SR answered '$got', want '308 $2'"
}

# A short link created through the active Service, i.e. a healthy revision serves users.
service_serves() {
  local code
  write_auth_header
  code=$(curl -sS -o /dev/null -w '%{http_code}' -m 5 -H 'Content-Type: application/json' -H @"$AUTH_HEADER" \
    -d '{"url":"https://example.com/chart-e2e"}' "http://$addr/api/v1/urls") || code="no answer"
  [[ $code == 201 ]] || fail "POST /api/v1/urls through Service $SR ($addr) answered $code, want 201"
  info "Service $SR ($addr) created a short link: 201"
}

prom_query() {
  curl -fsS "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(len(r)); sys.exit(0 if r else 1)'
}

# Undoes what this run did, whether it passed or not (unless CHART_E2E_KEEP=1).
cleanup() {
  stop_traffic
  if ((prom_started)); then scripts/prometheus-local.sh stop; prom_started=0; fi
  if ((pg_started)) && [[ ${CHART_E2E_KEEP:-0} != 1 ]]; then bash scripts/pg.sh down "$PG_DIR"; pg_started=0; fi
  if [[ ${CHART_E2E_KEEP:-0} == 1 ]]; then
    echo "chart-e2e: CHART_E2E_KEEP=1: left installed (helm -n $OP_NS uninstall $RELEASE; kubectl delete ns ${made_ns[*]})"
    return
  fi
  # Releases first, while the operator still runs: their Deployments and Services are
  # garbage-collected through owner references.
  # Only in a namespace this run made: an earlier one may hold someone else's releases.
  if [[ " ${made_ns[*]} " == *" $APP_NS "* ]]; then
    kubectl -n "$APP_NS" delete sr --all --wait=true --timeout=60s >/dev/null 2>&1 || true
  fi
  if ((installed)); then helm -n "$OP_NS" uninstall "$RELEASE" --wait --timeout 60s >/dev/null 2>&1 || true; installed=0; fi
  local ns
  for ns in "${made_ns[@]}"; do
    kubectl delete namespace "$ns" --wait=true --timeout=120s >/dev/null 2>&1 || true
  done
  made_ns=()
  if ((started_cluster)); then make --no-print-directory cluster-down; started_cluster=0; fi
}

finish() {
  trap - INT TERM
  cleanup
  echo
  ((${#timings[@]})) && printf '%s\n' "${timings[@]}"
  echo "chart-e2e: $passed passed, $failed failed ($((SECONDS - run_t0))s)"
  exit $((failed > 0))
}
trap 'failed=$((failed + 1)); echo "chart-e2e: interrupted" >&2; finish' INT TERM

step "testenv is up"
if ! kubectl get --raw /readyz >/dev/null 2>&1; then
  info "not running: make cluster-up (will stop it at the end)"
  make --no-print-directory cluster-up || fail "make cluster-up failed"
  started_cluster=1
fi
kubectl get nodes -o wide || fail "cluster not reachable with $KUBECONFIG"
CLUSTER_ID=$(cluster_id)
MODE=$(cat "$ROOT/.testenv/mode" 2>/dev/null || echo sim)
mode_args=()
[[ $MODE == real ]] && mode_args=(--set image.pullPolicy=Never)
for tool in helm curl python3; do command -v "$tool" >/dev/null || fail "$tool not found (scripts/install-deps.sh)"; done
command -v prometheus >/dev/null || fail "prometheus not found (apt-get install prometheus)"
pass

if [[ $MODE == real ]]; then
  # The images were built and imported by cluster-up (make images).
  step "images shortener-operator:$VERSION and shortener:v1..v3 are in the node's containerd"
  for img in "shortener-operator:$VERSION" shortener:v1 shortener:v2 shortener:v3; do
    ctr --address "$ROOT/.testenv/real/containerd.sock" -n k8s.io images ls -q | grep -qx "docker.io/library/$img" ||
      fail "image $img not imported (make images; TESTENV_NODE=real make cluster-up)"
  done
  pass
else
  step "cargo build -p operator -p shortener"
  cargo build -p operator -p shortener || fail "build failed"
  pass
fi

step "helm install $RELEASE into $OP_NS (image shortener-operator:$VERSION)"
helm -n "$OP_NS" status "$RELEASE" >/dev/null 2>&1 &&
  { info "a release $RELEASE already exists in $OP_NS: helm -n $OP_NS uninstall $RELEASE"; fail "not a clean start"; }
for ns in "$OP_NS" "$APP_NS"; do
  kubectl get namespace "$ns" >/dev/null 2>&1 && fail "namespace $ns already exists (left by an earlier run?): kubectl delete namespace $ns"
done
rm -rf "$STATE" && mkdir -p "$STATE"
made_ns+=("$OP_NS")
kubectl create namespace "$APP_NS" >/dev/null || fail "cannot create namespace $APP_NS"
made_ns+=("$APP_NS")
# PostgreSQL listens on the node's address on the pod network (real node: the bridge's
# 10.244.0.1; simulated node: a loopback address of its own) and lets the pod network in.
if [[ $MODE == real ]]; then
  # NODE_IP, POD_CIDR: written by cluster-up.
  source "$ROOT/.testenv/real-network.env" || fail "no .testenv/real-network.env (cluster-up writes it)"
  pg_listen=$NODE_IP pg_clients=$POD_CIDR
else
  pg_listen=127.0.0.3 pg_clients=127.0.0.0/8
fi
[[ -n $pg_listen && -n $pg_clients ]] || fail "no node address or pod CIDR for PostgreSQL"
bash scripts/pg.sh down "$PG_DIR" >/dev/null 2>&1
pg_started=1
PG_FSYNC=off PG_LISTEN=$pg_listen PG_CLIENTS=$pg_clients bash scripts/pg.sh up "$PG_DIR" >/dev/null || fail "PostgreSQL did not start"
kubectl -n "$APP_NS" create secret generic shortener-store --from-file=url="$PG_DIR/client-url" >/dev/null ||
  fail "cannot create the store Secret"
info "PostgreSQL at $pg_listen for $pg_clients (role shortener, password in Secret shortener-store)"
# The chart installs a cluster-wide operator; --namespace keeps this one to the test's own
# namespace, so it leaves alone releases other tests run on the same cluster.
helm install "$RELEASE" "$CHART" --namespace "$OP_NS" --create-namespace \
  -f "$CHART/ci/testenv-values.yaml" --set "watchNamespaces={$APP_NS}" "${mode_args[@]}" ${CHART_E2E_HELM_ARGS:-} ||
  fail "helm install failed"
installed=1
kubectl -n "$OP_NS" wait --for=condition=Available "deployment/$RELEASE" --timeout=120s ||
  fail "operator Deployment not Available"
image=$(kubectl -n "$OP_NS" get deploy "$RELEASE" -o 'jsonpath={.spec.template.spec.containers[0].image}')
[[ $image == "shortener-operator:$VERSION" ]] || fail "operator image is '$image', want shortener-operator:$VERSION"
POD=$(kubectl -n "$OP_NS" get pods -l "app.kubernetes.io/instance=$RELEASE" -o 'jsonpath={.items[0].metadata.name}')
POD_IP=$(kubectl -n "$OP_NS" get pod "$POD" -o 'jsonpath={.status.podIP}')
PORT=$(kubectl -n "$OP_NS" get pod "$POD" -o 'jsonpath={.spec.containers[0].ports[?(@.name=="http-metrics")].containerPort}')
if [[ $MODE == real ]]; then
  [[ $POD_IP == 10.244.0.* && -n $PORT ]] || fail "pod $POD has no pod-network IP/port ('$POD_IP:$PORT')"
else
  [[ $POD_IP == 127.* && -n $PORT ]] || fail "pod $POD has no loopback IP/port ('$POD_IP:$PORT')"
fi
curl -fsS "http://$POD_IP:$PORT/readyz" >/dev/null || fail "operator /readyz not answering at $POD_IP:$PORT"
info "pod $POD at $POD_IP:$PORT"
pass

step "the operator runs as the chart's ServiceAccount, with exactly the chart's rights"
SA=$(kubectl -n "$OP_NS" get pod "$POD" -o 'jsonpath={.spec.serviceAccountName}')
[[ $SA == "$(kubectl -n "$OP_NS" get sa -l "app.kubernetes.io/instance=$RELEASE" -o 'jsonpath={.items[0].metadata.name}')" ]] ||
  fail "pod runs as ServiceAccount '$SA', not the chart's"
# The credentials the node hands the pod (its only ones: no --kubeconfig, the host
# environment is not inherited) are a token for that ServiceAccount.
UID_=$(kubectl -n "$OP_NS" get pod "$POD" -o 'jsonpath={.metadata.uid}')
if [[ $MODE == real ]]; then
  # The kubelet's projected token volume, mounted (tmpfs) in the node's mount namespace.
  token=$(nsenter --target "$(cat "$ROOT/.testenv/pids/netns.pid")" --mount -- \
    sh -c "cat /var/lib/kubelet/pods/$UID_/volumes/kubernetes.io~projected/*/token") ||
    fail "no projected ServiceAccount token in the kubelet's volume for pod $POD"
  whoami=$(kubectl --kubeconfig /dev/null --server https://127.0.0.1:16443 \
    --certificate-authority "$ROOT/.testenv/pki/ca.crt" --token "$token" \
    auth whoami -o 'jsonpath={.status.userInfo.username}') || fail "the pod's credentials do not authenticate"
  # The container process itself: the image's non-root user, no capabilities, no new
  # privileges, a read-only root filesystem (the chart's securityContext, enforced by runc).
  procs=$(cat /sys/fs/cgroup/pids/kubepods/*/pod"$UID_"/*/cgroup.procs /sys/fs/cgroup/pids/kubepods/pod"$UID_"/*/cgroup.procs 2>/dev/null)
  op_pid=
  for p in $procs; do [[ $(cat "/proc/$p/comm" 2>/dev/null) == operator ]] && op_pid=$p; done
  [[ -n $op_pid ]] || fail "no operator process in pod $POD's cgroups"
  st=/proc/$op_pid/status
  [[ $(awk '/^Uid:/{print $2}' "$st") == 65532 ]] || fail "operator runs as uid $(awk '/^Uid:/{print $2}' "$st"), want 65532"
  [[ $(awk '/^CapEff:/{print $2}' "$st") == 0000000000000000 ]] || fail "operator has capabilities $(awk '/^CapEff:/{print $2}' "$st")"
  [[ $(awk '/^NoNewPrivs:/{print $2}' "$st") == 1 ]] || fail "operator may gain privileges (NoNewPrivs 0)"
  # The image has no shell to try a write with: the root mount's options say it.
  root_opts=$(awk '$5 == "/" {print $6}' "/proc/$op_pid/mountinfo")
  [[ ,$root_opts, == *,ro,* ]] || fail "operator's root filesystem is mounted '$root_opts', want ro"
  info "container process $op_pid: uid 65532, CapEff 0, NoNewPrivs 1, read-only root filesystem"
else
  POD_KUBECONFIG=$ROOT/.testenv/node/pods/${OP_NS}_${POD}_${UID_}/serviceaccount/kubeconfig
  [[ -f $POD_KUBECONFIG ]] || fail "no pod kubeconfig at $POD_KUBECONFIG (SA token not automounted?)"
  whoami=$(kubectl --kubeconfig "$POD_KUBECONFIG" auth whoami -o 'jsonpath={.status.userInfo.username}') ||
    fail "the pod's credentials do not authenticate"
fi
[[ $whoami == "system:serviceaccount:$OP_NS:$SA" ]] || fail "the pod authenticates as '$whoami'"
info "pod credentials authenticate as $whoami"
if kubectl get deploy "$RELEASE" -n "$OP_NS" -o jsonpath='{.spec.template.spec.containers[0].args}' | grep -q -- --kubeconfig; then
  fail "operator is given a --kubeconfig: it would not use its ServiceAccount"
fi
# A few of the granted verbs, and ones the chart deliberately does not grant.
as=(--as "system:serviceaccount:$OP_NS:$SA" -n "$APP_NS")
for allowed in "watch shortenerreleases.shortener.dev" "patch shortenerreleases.shortener.dev --subresource=status" \
  "create deployments.apps" "list replicasets.apps" "delete services" "get pods --subresource=log" "get secrets" "create secrets" "create events"; do
  kubectl auth can-i $allowed "${as[@]}" >/dev/null || fail "the chart's RBAC does not allow '$allowed'"
done
for denied in "list secrets" "create shortenerreleases.shortener.dev" "delete pods" "create pods" "update deployments.apps"; do
  kubectl auth can-i $denied "${as[@]}" >/dev/null 2>&1 && fail "the chart's RBAC allows '$denied' (not least privilege)"
done
info "granted: watch/patch releases and status, deployments, services, pods/log, secrets get/create/patch, events"
info "denied:  list secrets, create releases, create/delete pods, update deployments"
pass

step "a real Prometheus scrapes the operator pod at $POD_IP:$PORT"
scripts/prometheus-local.sh start "$POD_IP:$PORT" || fail "prometheus did not start"
prom_started=1
wait_until 30 "Prometheus to scrape the operator (up == 1)" prom_query 'up{job="shortener-operator"} == 1'
pass

step "ShortenerRelease $APP_NS/$SR (examples/shortenerrelease.yaml, shortener:v1) goes Ready"
apply_release shortener:v1 || fail "kubectl apply failed"
kubectl -n "$APP_NS" wait --for=condition=Ready "sr/$SR" --timeout="${WAIT_SECONDS}s" || fail "release not Ready"
phase=$(sr_field '{.status.phase}')
[[ $phase == Healthy ]] || fail "Ready, but phase is '$phase', want Healthy"
kubectl -n "$APP_NS" get sr "$SR"
addr=$(kubectl -n "$APP_NS" get svc "$SR" -o 'jsonpath={.spec.clusterIP}:{.spec.ports[0].port}')
service_serves
wait_until 30 "Prometheus to see the release Healthy" \
  prom_query "shortener_operator_release_phase{namespace=\"$APP_NS\",name=\"$SR\",phase=\"Healthy\"} == 1"
info "Prometheus: shortener_operator_release_phase{phase=\"Healthy\"} == 1"
pass

step "a link created on shortener:v1 is in the shared store"
kept_url=https://example.com/chart-e2e/kept
kept_slug=chart-e2e-kept
code=$(curl -sS -o /dev/null -w '%{http_code}' -m 5 -H 'Content-Type: application/json' -H @"$AUTH_HEADER" \
  -d "{\"url\":\"$kept_url\",\"slug\":\"$kept_slug\"}" "http://$addr/api/v1/urls") || code="no answer"
[[ $code == 201 ]] || fail "creating /$kept_slug answered $code, want 201"
link_resolves "$kept_slug" "$kept_url"
info "/$kept_slug -> $kept_url (PostgreSQL, every replica)"
pass

step "a failing release (shortener:v2, SHORTENER_FAULT=shorten-500) is refused by its smoke test"
apply_release shortener:v2 shorten-500 || fail "kubectl apply failed"
wait_rolled_back shortener:v2 SmokeTestFailed
service_serves
pass

# ALERTS is Prometheus' own series of pending and firing alerts, one per label set.
alert_firing() {
  prom_query "ALERTS{alertname=\"ShortenerReleaseRolledBack\",alertstate=\"firing\",reason=\"$1\"} == 1"
}

# The report's own incident: stopped before any user saw it, and still paged, because a
# revision refused before promotion counts as rolled back (the stable one kept the traffic).
step "ShortenerReleaseRolledBack fires in Prometheus for the refused release (reason SmokeTestFailed)"
wait_until 180 "ShortenerReleaseRolledBack{reason=SmokeTestFailed} to fire" alert_firing SmokeTestFailed
info "firing: ShortenerReleaseRolledBack{reason=\"SmokeTestFailed\"}"
pass

# The same fault past promotion: no smoke test, and users on the Service.
step "a failing release that got traffic (shortener:v3, shorten-500, no smoke test) is rolled back"
start_traffic "$addr"
apply_release shortener:v3 shorten-500 false || fail "kubectl apply failed"
wait_rolled_back shortener:v3 AnalysisFailed
stop_traffic
service_serves
link_resolves "$kept_slug" "$kept_url"
info "/$kept_slug still resolves after two failed releases"
pass

step "ShortenerReleaseRolledBack fires in Prometheus for the traffic switch back (reason AnalysisFailed)"
wait_until 180 "ShortenerReleaseRolledBack{reason=AnalysisFailed} to fire" alert_firing AnalysisFailed
info "firing: ShortenerReleaseRolledBack{reason=\"AnalysisFailed\"}"
scripts/prometheus-local.sh stop || fail "prometheus-local.sh stop failed"
prom_started=0
pass

step "helm uninstall leaves nothing but the CRD"
helm -n "$OP_NS" get manifest "$RELEASE" >"$STATE/manifest.yaml" || fail "helm get manifest failed"
# Every object the chart rendered, as kind/namespace/name (cluster-scoped ones without a namespace).
mapfile -t objects < <(python3 - "$OP_NS" "$STATE/manifest.yaml" <<'PY'
import sys, yaml
cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
for doc in yaml.safe_load_all(open(sys.argv[2])):
    if doc:
        ns = "" if doc["kind"] in cluster_scoped else doc["metadata"].get("namespace", sys.argv[1])
        print(f'{doc["kind"]}/{ns}/{doc["metadata"]["name"]}')
PY
)
((${#objects[@]} >= 6)) || fail "helm manifest lists only ${#objects[@]} objects: ${objects[*]}"
info "the chart made: ${objects[*]}"
kubectl -n "$APP_NS" delete sr --all --wait=true --timeout=60s || fail "deleting the releases"
helm -n "$OP_NS" uninstall "$RELEASE" || fail "helm uninstall failed"
installed=0
exists() {
  local kind=${1%%/*} rest=${1#*/}
  local ns=${rest%%/*} name=${rest#*/}
  kubectl get "$kind" "$name" ${ns:+-n "$ns"} >/dev/null 2>&1
}
any_left() {
  local o
  for o in "${objects[@]}"; do exists "$o" && return 0; done
  [[ -n $(kubectl get pods,deploy,rs,svc,sa,cm,role,rolebinding -n "$OP_NS" -l "app.kubernetes.io/instance=$RELEASE" -o name) ]] ||
    [[ -n $(kubectl get clusterrole,clusterrolebinding -l "app.kubernetes.io/instance=$RELEASE" -o name) ]]
}
nothing_left() { ! any_left; }
wait_until 60 "every object of the chart to be gone" nothing_left
kubectl get crd shortenerreleases.shortener.dev >/dev/null || fail "the CRD is gone (Helm keeps CRDs)"
info "all ${#objects[@]} gone; CRD shortenerreleases.shortener.dev kept"
for ns in "${made_ns[@]}"; do kubectl delete namespace "$ns" --wait=false >/dev/null || fail "deleting namespace $ns"; done
ns_gone() { local ns; for ns in "${made_ns[@]}"; do kubectl get namespace "$ns" >/dev/null 2>&1 && return 1; done; return 0; }
wait_until 120 "namespaces ${made_ns[*]} to be deleted" ns_gone
info "namespaces ${made_ns[*]} deleted"
made_ns=()
pass

finish
