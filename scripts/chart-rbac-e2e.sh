#!/usr/bin/env bash
# The chart's permissions on a live testenv (part of `make chart-e2e`):
#   1. the documented CRD upgrade step (kubectl apply --server-side of the chart's crds/)
#      replaces an older CRD in the cluster: the new validation is in force after it;
#   2. installed with its defaults (namespaced RBAC, leader election) and two watched
#      namespaces, the operator runs as its ServiceAccount with exactly the chart's rights:
#      releases in both namespaces go Healthy; a release in a third namespace is never
#      touched; the ServiceAccount is refused one step beyond its rights (another namespace,
#      listing Secrets, deleting pods, Leases outside its own namespace, cluster scope);
#   3. the aggregated roles: `edit` in a namespace may create releases there, `view` may
#      only read them, and neither reaches another namespace.
# Starts testenv only if it is not up (and stops it at the end then). Its namespaces are
# its own, so it can share a cluster with other tests. CHART_RBAC_E2E_KEEP=1 keeps them.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PATH="$ROOT/testenv/bin:$PATH:$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
export KUBECONFIG=$ROOT/.testenv/kubeconfig

CHART=charts/shortener-operator
CRD_FILE=$CHART/crds/shortenerreleases.shortener.dev.yaml
RELEASE=rbac-e2e
OP_NS=rbac-e2e-system
NS_A=rbac-e2e-a NS_B=rbac-e2e-b NS_OTHER=rbac-e2e-other
STATE=$ROOT/.testenv/chart-rbac-e2e
WAIT_SECONDS=${WAIT_SECONDS:-240}

passed=0 failed=0 started_cluster=0 installed=0 made_ns=() run_t0=$SECONDS step_name=""
step() { step_name=$1; printf '\n== %s\n' "$1"; }
pass() { passed=$((passed + 1)); echo "  ok"; }
info() { printf '  %s\n' "$*"; }
fail() {
  failed=$((failed + 1))
  printf '  FAIL: %s: %s\n' "$step_name" "$*" >&2
  echo "---- operator log (last 30 lines)" >&2
  kubectl -n "$OP_NS" logs "deploy/$RELEASE-shortener-operator" --tail=30 >&2 2>&1 || true
  for ns in "$NS_A" "$NS_B" "$NS_OTHER"; do kubectl -n "$ns" get sr,deploy,pods >&2 2>&1 || true; done
  finish
}
wait_until() {
  local timeout=$1 what=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "timed out after ${timeout}s waiting for $what"
    sleep 0.5
  done
}
cleanup() {
  if [[ ${CHART_RBAC_E2E_KEEP:-0} == 1 ]]; then echo "CHART_RBAC_E2E_KEEP=1: left installed"; return; fi
  local ns
  for ns in "${made_ns[@]}"; do kubectl -n "$ns" delete sr --all --wait=true --timeout=60s >/dev/null 2>&1 || true; done
  ((installed)) && helm -n "$OP_NS" uninstall "$RELEASE" --wait --timeout 60s >/dev/null 2>&1
  installed=0
  for ns in "${made_ns[@]}"; do kubectl delete namespace "$ns" --wait=true --timeout=120s >/dev/null 2>&1 || true; done
  made_ns=()
  # Whatever happened, the cluster keeps the current CRD.
  kubectl apply --server-side --force-conflicts -f "$CRD_FILE" >/dev/null 2>&1 || true
  if ((started_cluster)); then make --no-print-directory cluster-down; started_cluster=0; fi
}
finish() {
  trap - INT TERM
  cleanup
  echo "chart-rbac-e2e: $passed passed, $failed failed ($((SECONDS - run_t0))s)"
  exit $((failed > 0))
}
trap 'failed=$((failed + 1)); finish' INT TERM

# A release named NAME in NS (the example, with its own store), applied by whoever ARGS say.
release_yaml() {
  python3 - examples/shortenerrelease.yaml "$1" "$STATE/$2-$1.db" <<'PY'
import sys, yaml
path, name, store = sys.argv[1:4]
sr = yaml.safe_load(open(path))
sr["metadata"]["name"] = name
sr["spec"].pop("store", None)  # the store is this test's own file, given as env
sr["spec"]["env"] = [e for e in sr["spec"].get("env", []) if e["name"] != "SHORTENER_STORE"]
sr["spec"]["env"].append({"name": "SHORTENER_STORE", "value": store})
yaml.safe_dump(sr, sys.stdout, sort_keys=False)
PY
}

step "testenv is up, operator built"
if ! kubectl get --raw /readyz >/dev/null 2>&1; then
  make --no-print-directory cluster-up || fail "make cluster-up failed"
  started_cluster=1
fi
cargo build -p operator -p shortener || fail "build failed"
for ns in "$OP_NS" "$NS_A" "$NS_B" "$NS_OTHER"; do
  kubectl get namespace "$ns" >/dev/null 2>&1 && fail "namespace $ns exists (left by an earlier run?)"
done
rm -rf "$STATE" && mkdir -p "$STATE"
for ns in "$OP_NS" "$NS_A" "$NS_B" "$NS_OTHER"; do
  kubectl create namespace "$ns" >/dev/null || fail "create namespace $ns"
  made_ns+=("$ns")
done
pass

step "CRD upgrade: the documented server-side apply replaces an older CRD"
# The previous release's CRD: the same without the metadata.name rules this one added.
python3 - "$CRD_FILE" >"$STATE/old-crd.yaml" <<'PY' || fail "making the old CRD"
import sys, yaml
crd = yaml.safe_load(open(sys.argv[1]))
schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
schema["x-kubernetes-validations"] = [
    r for r in schema.get("x-kubernetes-validations", []) if "metadata.name" not in r["rule"]]
if not schema["x-kubernetes-validations"]:
    del schema["x-kubernetes-validations"]
yaml.safe_dump(crd, sys.stdout)
PY
kubectl apply --server-side --force-conflicts -f "$STATE/old-crd.yaml" >/dev/null || fail "applying the old CRD"
long=$(printf 'a%.0s' {1..56})
# dry_run: is a 56-character name accepted? (the Service NAME-preview would be invalid)
dry_run() { release_yaml "$long" "$NS_A" | kubectl -n "$NS_A" apply --dry-run=server -f - 2>&1; }
wait_until 30 "the old CRD to accept a 56-character name" dry_run
kubectl apply --server-side --force-conflicts -f "$CHART/crds/" || fail "the documented upgrade step failed"
# (Not `dry_run | grep -q`: under pipefail the refused apply's own status would fail it.)
refused() { [[ $(dry_run) == *"metadata.name must be at most 55 characters"* ]]; }
wait_until 30 "the upgraded CRD to refuse a 56-character name" refused
info "after the step: $(dry_run | tail -1 | cut -c1-160)"
pass

step "helm install with the defaults, watching $NS_A and $NS_B"
helm install "$RELEASE" "$CHART" -n "$OP_NS" -f "$CHART/ci/testenv-values.yaml" \
  --set "watchNamespaces={$NS_A,$NS_B}" || fail "helm install failed"
installed=1
kubectl -n "$OP_NS" wait --for=condition=Available "deployment/$RELEASE-shortener-operator" --timeout=120s ||
  fail "operator not Available"
args=$(kubectl -n "$OP_NS" get deploy "$RELEASE-shortener-operator" -o 'jsonpath={.spec.template.spec.containers[0].args}')
[[ $args == *"--namespace=$NS_A,$NS_B"* && $args == *--leader-elect* ]] || fail "operator args: $args"
[[ $(kubectl get clusterrolebinding -l "app.kubernetes.io/instance=$RELEASE" -o name) == "" ]] ||
  fail "a namespaced install made a ClusterRoleBinding"
info "args: $args"
pass

step "the ServiceAccount has the chart's rights and is refused one step beyond them"
SA=system:serviceaccount:$OP_NS:$RELEASE-shortener-operator
can() { kubectl auth can-i "$@" --as "$SA" >/dev/null 2>&1; }
for ns in "$NS_A" "$NS_B"; do
  for allowed in "watch shortenerreleases.shortener.dev" "patch shortenerreleases.shortener.dev --subresource=status" \
    "create deployments.apps" "list replicasets.apps" "delete services" "create configmaps" "get pods --subresource=log" "get secrets" "create secrets" "patch secrets" "create events"; do
    can $allowed -n "$ns" || fail "not allowed in $ns: $allowed"
  done
done
can update leases.coordination.k8s.io -n "$OP_NS" || fail "no Lease rights in $OP_NS"
denied=(
  "list shortenerreleases.shortener.dev -n $NS_OTHER" "get secrets -n $NS_OTHER" "create deployments.apps -n $NS_OTHER"
  "get secrets -n kube-system" "list shortenerreleases.shortener.dev --all-namespaces"
  "list secrets -n $NS_A" "delete secrets -n $NS_A" "delete pods -n $NS_A" "update deployments.apps -n $NS_A" "create shortenerreleases.shortener.dev -n $NS_A"
  "update leases.coordination.k8s.io -n $NS_A" "patch customresourcedefinitions.apiextensions.k8s.io" "list namespaces"
)
for d in "${denied[@]}"; do
  # shellcheck disable=SC2086
  can $d && fail "allowed one step beyond the chart's rights: $d"
done
info "refused: ${#denied[@]} requests one step beyond (other namespaces, cluster scope, list secrets, delete pods...)"
pass

step "releases in both watched namespaces go Healthy; one elsewhere is never touched"
for ns in "$NS_A" "$NS_B" "$NS_OTHER"; do
  release_yaml web "$ns" | kubectl -n "$ns" apply -f - >/dev/null || fail "apply release in $ns"
done
for ns in "$NS_A" "$NS_B"; do
  kubectl -n "$ns" wait --for=condition=Ready sr/web --timeout="${WAIT_SECONDS}s" || fail "release in $ns not Ready"
  info "$ns/web: $(kubectl -n "$ns" get sr web -o 'jsonpath={.status.phase}')"
done
# Both watched releases finished a whole rollout; the unwatched one has no status and no
# Deployment: the operator never wrote there (and could not have).
[[ -z $(kubectl -n "$NS_OTHER" get sr web -o 'jsonpath={.status}') ]] || fail "the release in $NS_OTHER has a status"
[[ -z $(kubectl -n "$NS_OTHER" get deploy -o name) ]] || fail "Deployments in $NS_OTHER"
if kubectl -n "$OP_NS" logs "deploy/$RELEASE-shortener-operator" | grep -i 'forbidden'; then
  fail "the operator hit a permission it lacks"
fi
info "$NS_OTHER/web untouched; no Forbidden in the operator's log"
pass

step "aggregated roles: edit creates releases, view reads them, in their namespace only"
kubectl -n "$NS_A" create rolebinding alice-edit --clusterrole=edit --user=alice >/dev/null || fail "binding edit"
kubectl -n "$NS_A" create rolebinding bob-view --clusterrole=view --user=bob >/dev/null || fail "binding view"
alice_can_create() { kubectl auth can-i create shortenerreleases.shortener.dev -n "$NS_A" --as alice; }
wait_until 30 "the edit role to aggregate ShortenerRelease rights" alice_can_create
kubectl auth can-i delete shortenerreleases.shortener.dev -n "$NS_A" --as alice >/dev/null || fail "edit cannot delete releases"
kubectl auth can-i create shortenerreleases.shortener.dev -n "$NS_B" --as alice >/dev/null && fail "edit in $NS_A reaches $NS_B"
kubectl auth can-i list shortenerreleases.shortener.dev -n "$NS_A" --as bob >/dev/null || fail "view cannot list releases"
kubectl auth can-i create shortenerreleases.shortener.dev -n "$NS_A" --as bob >/dev/null && fail "view can create releases"
release_yaml by-alice "$NS_A" | kubectl -n "$NS_A" apply --as alice --dry-run=server -f - >/dev/null ||
  fail "alice (edit) cannot apply a release"
info "alice (edit): create/delete in $NS_A, nothing in $NS_B; bob (view): list only"
pass

finish
