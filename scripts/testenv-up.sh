#!/usr/bin/env bash
# Starts the testenv cluster in the background (see testenv/README.md). Reuses a running,
# healthy cluster unless TESTENV_FRESH=1; otherwise wipes .testenv state and starts anew.
# TESTENV_NODE=real: a real node (containerd, kubelet, kube-proxy) instead of the simulated
# one, everything in a network namespace of its own (scripts/testenv-real.sh); without
# TESTENV_NODE a running cluster is reused whatever its kind.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUN=$ROOT/.testenv
BIN=$ROOT/testenv/bin
API=https://127.0.0.1:16443
# TESTENV_NODE unset: whatever kind of cluster is running (cluster-down forgets it), else sim.
MODE=${TESTENV_NODE:-$(cat "$RUN/mode" 2>/dev/null || echo sim)}
case $MODE in
sim) components=(etcd kube-apiserver kube-controller-manager kube-scheduler node) ;;
real) components=(netns etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy) ;;
*) echo "testenv: TESTENV_NODE must be sim (the default) or real, not '$MODE'" >&2; exit 2 ;;
esac
PKI=$RUN/pki
source scripts/testenv-real.sh
# Everything that talks to the cluster runs where the cluster is: for the real node, in its
# network namespace.
IN=()
[[ $MODE == real ]] && IN=(nsenter --target @NS@ --net --mount --)
in_cluster() {
  local args=("${IN[@]}")
  [[ $MODE == real ]] && args[2]=$(ns_pid)
  "${args[@]}" "$@"
}
KUBECTL="in_cluster $BIN/kubectl --kubeconfig $RUN/kubeconfig"
start_ms=$(($(date +%s%N) / 1000000))

mkdir -p "$RUN"
# One cluster-up/down at a time: engineers and test harnesses share this checkout.
if [[ -z ${TESTENV_LOCKED:-} ]]; then
  exec 9>"$RUN/.lock"
  flock -w 600 9 || { echo "testenv: another cluster-up/down holds .testenv/.lock" >&2; exit 1; }
  export TESTENV_LOCKED=1
fi

[[ $MODE == real ]] && { real_check_tools || exit 1; }
TESTENV_NODE=$MODE bash scripts/testenv-build.sh

alive() { [[ -f $RUN/pids/$1.pid ]] && kill -0 "$(cat "$RUN/pids/$1.pid")" 2>/dev/null; }

healthy=1 started=0
for c in "${components[@]}"; do
  if alive "$c"; then
    started=1
  else
    healthy=0
  fi
done
running_mode=$(cat "$RUN/mode" 2>/dev/null || echo sim)
if [[ $healthy == 1 && $running_mode != "$MODE" ]]; then
  echo "testenv: a $running_mode-node cluster is running; restarting it with TESTENV_NODE=$MODE" >&2
  healthy=0 started=0
fi
if [[ $healthy == 1 && ${TESTENV_FRESH:-0} != 1 ]] && $KUBECTL get --raw /readyz >/dev/null 2>&1; then
  echo "testenv: cluster already running (TESTENV_FRESH=1 make cluster-up restarts it)"
  if ! cmp -s <(cat "$BIN"/.stamp-*) "$RUN/pids/stamps"; then
    echo "testenv: note: testenv binaries were rebuilt since it started; TESTENV_FRESH=1 to run them" >&2
  fi
  exit 0
fi
if [[ $started == 1 && $healthy == 0 ]]; then
  # A component of a running cluster died: say which, with its log, before restarting.
  for c in "${components[@]}"; do
    if ! alive "$c" && [[ -f $RUN/logs/$c.log ]]; then
      echo "testenv: $c of the running cluster had exited; last lines of .testenv/logs/$c.log:" >&2
      tail -n 15 "$RUN/logs/$c.log" >&2
    fi
  done
  echo "testenv: restarting the whole cluster" >&2
fi

# The images the real node imports (a no-op when they are up to date).
[[ $MODE == real ]] && { bash scripts/images.sh || exit 1; }

# Whatever is left from an earlier run (killed make, crashed component) goes first.
bash scripts/testenv-down.sh >/dev/null
rm -rf "$RUN/etcd" "$RUN/pki" "$RUN/node" "$RUN/logs" "$RUN/pids" "$RUN/services.json" "$RUN/kubeconfig"
mkdir -p "$RUN/logs" "$RUN/pids" "$RUN/node"
echo "$MODE" >"$RUN/mode"
# Where the real node's pod network is, for clients that serve its pods (a PostgreSQL for
# the tests listens on the node's address and lets the pod CIDR in).
[[ $MODE == real ]] && printf 'NODE_IP=%s\nPOD_CIDR=%s\n' "$NODE_IP" "$POD_CIDR" >"$RUN/real-network.env"

if [[ $MODE == real ]]; then
  SVC_RANGE=$SVC_CIDR
  "$BIN/testenv-certs" --dir "$RUN/pki" --kubeconfig-dir "$RUN" --server "$API" --service-ip "$SVC_IP" --node-ip "$NODE_IP"
else
  SVC_RANGE=127.96.0.0/16
  "$BIN/testenv-certs" --dir "$RUN/pki" --kubeconfig-dir "$RUN" --server "$API" --service-ip 127.96.0.1
fi

fail() {
  echo "testenv: $1" >&2
  for c in "${components[@]}"; do
    if [[ -f $RUN/logs/$c.log ]] && ! alive "$c"; then
      echo "---- $c exited; last lines of .testenv/logs/$c.log:" >&2
      tail -n 25 "$RUN/logs/$c.log" >&2
    fi
  done
  bash scripts/testenv-down.sh >/dev/null
  exit 1
}

start() {
  local name=$1; shift
  # setsid: the component outlives this script and make, and gets its own process group.
  # 9>&-: the component must not inherit (and so hold) the cluster-up lock.
  setsid "${IN[@]/@NS@/$(ns_pid)}" "$@" >"$RUN/logs/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$RUN/pids/$name.pid"
}

# wait_for NAME TIMEOUT CMD...: polls CMD until it succeeds, failing early if NAME died.
wait_for() {
  local name=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  local run=in_cluster
  declare -F "$1" >/dev/null && run= # a function wraps its own commands
  until $run "$@" >/dev/null 2>&1; do
    for c in "${components[@]}"; do
      [[ -f $RUN/pids/$c.pid ]] && ! alive "$c" && fail "$c exited while waiting for $name"
    done
    ((SECONDS < deadline)) || fail "timed out after ${timeout}s waiting for $name"
    sleep 0.2
  done
}

cat "$BIN"/.stamp-* >"$RUN/pids/stamps"
if [[ $MODE == real ]]; then
  real_namespaces || fail "could not set up the node's namespaces"
  real_configs "$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
fi
start etcd "$BIN/testenv-etcd" --data-dir "$RUN/etcd" --listen-client http://127.0.0.1:12379 --listen-peer http://127.0.0.1:12380
wait_for etcd 30 curl -fsS http://127.0.0.1:12379/health

if [[ $MODE == real ]]; then
  # Pods reach the API server through the kubernetes Service (kube-proxy), at the node IP;
  # 0.0.0.0 is only loopback and the bridge inside the namespace.
  apiserver_mode_flags=(--bind-address=0.0.0.0 --advertise-address="$NODE_IP")
else
  apiserver_mode_flags=(--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --endpoint-reconciler-type=none)
fi
start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:12379 \
  "${apiserver_mode_flags[@]}" --secure-port=16443 \
  --service-cluster-ip-range="$SVC_RANGE" --service-node-port-range=30000-32767 \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true \
  --client-ca-file="$PKI/ca.crt" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --kubelet-certificate-authority="$PKI/ca.crt" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=InternalIP \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
  --profiling=false --v=1
wait_for kube-apiserver 90 curl -fsS --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$API/readyz"

# Simulated node: the Endpoints and EndpointSlice controllers are off: the API server
# rejects loopback addresses in both, so they would only leave stale slices and Warning
# events on every Service. The node agent's service proxy derives ready endpoints from
# pods the same way and publishes them in .testenv/services.json. The real node has real
# pod IPs, so every controller runs and kube-proxy follows the EndpointSlices.
controllers='*,-endpoint,-endpointslice,-endpointslicemirroring'
[[ $MODE == real ]] && controllers='*'
start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig="$PKI/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$PKI/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$PKI/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=16257 \
  --leader-elect=false --use-service-account-credentials=true \
  --controllers="$controllers" \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --service-cluster-ip-range="$SVC_RANGE" \
  --profiling=false --v=1
start kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig="$PKI/scheduler.kubeconfig" \
  --authentication-kubeconfig="$PKI/scheduler.kubeconfig" \
  --authorization-kubeconfig="$PKI/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=16259 \
  --leader-elect=false --profiling=false --v=1
if [[ $MODE == real ]]; then
  real_save_sysctls
  start containerd containerd --config "$REAL/containerd.toml"
  wait_for containerd 30 ctr --address "$CONTAINERD_SOCK" version
  real_import_images "$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)" || fail "importing .images/ into containerd"
  start kubelet "$BIN/kubelet" --config="$REAL/kubelet.yaml" --kubeconfig="$PKI/node.kubeconfig" \
    --hostname-override=testenv --node-ip="$NODE_IP" --v=1
  start kube-proxy "$BIN/kube-proxy" --config="$REAL/kube-proxy.yaml" --v=1
else
  start node "$BIN/testenv-node" \
    --kubeconfig="$PKI/node.kubeconfig" --repo-root="$ROOT" --state-dir="$RUN/node" \
    --images="$ROOT/testenv/images.yaml" --apiserver="$API" --ca="$PKI/ca.crt" \
    --tls-cert="$PKI/kubelet.crt" --tls-key="$PKI/kubelet.key" --port=16250 \
    --services-file="$RUN/services.json"
fi

node_ready() {
  [[ $($KUBECTL get node testenv -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]] &&
    [[ -z $($KUBECTL get node testenv -o 'jsonpath={.spec.taints}') ]] &&
    $KUBECTL get serviceaccount default -n default
}
wait_for "node testenv Ready" 90 node_ready

ms=$(($(date +%s%N) / 1000000 - start_ms))
elapsed=$((ms / 1000)).$(printf %03d $((ms % 1000)))
cat <<MSG
testenv: cluster up in ${elapsed}s (Kubernetes v1.37.2, node testenv Ready, $MODE node)
  export KUBECONFIG=$RUN/kubeconfig
MSG
if [[ $MODE == real ]]; then
  cat <<MSG
  The cluster lives in its own network namespace: run clients through scripts/testenv-exec.sh
  scripts/testenv-exec.sh $BIN/kubectl get nodes,pods -A -o wide
  Pods 10.244.0.0/24, Services 10.96.0.0/16 (kube-proxy, iptables), reachable in the namespace only.
  Logs: .testenv/logs/<component>.log, pods in .testenv/real/varlog/pods   Stop: make cluster-down
MSG
else
  cat <<MSG
  $BIN/kubectl get nodes,pods -A
  Services: <clusterIP>:<port> is reachable from this host; table in .testenv/services.json
  Logs: .testenv/logs/<component>.log   Stop: make cluster-down
MSG
fi
