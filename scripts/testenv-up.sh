#!/usr/bin/env bash
# Starts the testenv cluster in the background (see testenv/README.md). Reuses a running,
# healthy cluster unless TESTENV_FRESH=1; otherwise wipes .testenv state and starts anew.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUN=$ROOT/.testenv
BIN=$ROOT/testenv/bin
API=https://127.0.0.1:16443
KUBECTL="$BIN/kubectl --kubeconfig $RUN/kubeconfig"
components=(etcd kube-apiserver kube-controller-manager kube-scheduler node)
start_ms=$(($(date +%s%N) / 1000000))

mkdir -p "$RUN"
# One cluster-up/down at a time: engineers and test harnesses share this checkout.
if [[ -z ${TESTENV_LOCKED:-} ]]; then
  exec 9>"$RUN/.lock"
  flock -w 600 9 || { echo "testenv: another cluster-up/down holds .testenv/.lock" >&2; exit 1; }
  export TESTENV_LOCKED=1
fi

bash scripts/testenv-build.sh

alive() { [[ -f $RUN/pids/$1.pid ]] && kill -0 "$(cat "$RUN/pids/$1.pid")" 2>/dev/null; }

healthy=1 started=0
for c in "${components[@]}"; do
  if alive "$c"; then
    started=1
  else
    healthy=0
  fi
done
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

# Whatever is left from an earlier run (killed make, crashed component) goes first.
bash scripts/testenv-down.sh >/dev/null
rm -rf "$RUN/etcd" "$RUN/pki" "$RUN/node" "$RUN/logs" "$RUN/pids" "$RUN/services.json" "$RUN/kubeconfig"
mkdir -p "$RUN/logs" "$RUN/pids" "$RUN/node"

"$BIN/testenv-certs" --dir "$RUN/pki" --kubeconfig-dir "$RUN" --server "$API" --service-ip 127.96.0.1

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
  setsid "$@" >"$RUN/logs/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$RUN/pids/$name.pid"
}

# wait_for NAME TIMEOUT CMD...: polls CMD until it succeeds, failing early if NAME died.
wait_for() {
  local name=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    for c in "${components[@]}"; do
      [[ -f $RUN/pids/$c.pid ]] && ! alive "$c" && fail "$c exited while waiting for $name"
    done
    ((SECONDS < deadline)) || fail "timed out after ${timeout}s waiting for $name"
    sleep 0.2
  done
}

PKI=$RUN/pki
cat "$BIN"/.stamp-* >"$RUN/pids/stamps"
start etcd "$BIN/testenv-etcd" --data-dir "$RUN/etcd" --listen-client http://127.0.0.1:12379 --listen-peer http://127.0.0.1:12380
wait_for etcd 30 curl -fsS http://127.0.0.1:12379/health

start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:12379 \
  --bind-address=127.0.0.1 --secure-port=16443 --advertise-address=127.0.0.1 \
  --service-cluster-ip-range=127.96.0.0/16 --service-node-port-range=30000-32767 \
  --endpoint-reconciler-type=none \
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

# The Endpoints and EndpointSlice controllers are off: the API server rejects loopback
# addresses in both, so they would only leave stale slices and Warning events on every
# Service. The node agent's service proxy derives ready endpoints from pods the same way
# and publishes them in .testenv/services.json.
start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig="$PKI/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$PKI/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$PKI/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=16257 \
  --leader-elect=false --use-service-account-credentials=true \
  --controllers='*,-endpoint,-endpointslice,-endpointslicemirroring' \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --service-cluster-ip-range=127.96.0.0/16 \
  --profiling=false --v=1
start kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig="$PKI/scheduler.kubeconfig" \
  --authentication-kubeconfig="$PKI/scheduler.kubeconfig" \
  --authorization-kubeconfig="$PKI/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=16259 \
  --leader-elect=false --profiling=false --v=1
start node "$BIN/testenv-node" \
  --kubeconfig="$PKI/node.kubeconfig" --repo-root="$ROOT" --state-dir="$RUN/node" \
  --images="$ROOT/testenv/images.yaml" --apiserver="$API" --ca="$PKI/ca.crt" \
  --tls-cert="$PKI/kubelet.crt" --tls-key="$PKI/kubelet.key" --port=16250 \
  --services-file="$RUN/services.json"

node_ready() {
  [[ $($KUBECTL get node testenv -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]] &&
    [[ -z $($KUBECTL get node testenv -o 'jsonpath={.spec.taints}') ]] &&
    $KUBECTL get serviceaccount default -n default
}
wait_for "node testenv Ready" 90 node_ready

ms=$(($(date +%s%N) / 1000000 - start_ms))
elapsed=$((ms / 1000)).$(printf %03d $((ms % 1000)))
cat <<MSG
testenv: cluster up in ${elapsed}s (Kubernetes v1.37.2, node testenv Ready)
  export KUBECONFIG=$RUN/kubeconfig
  $BIN/kubectl get nodes,pods -A
  Services: <clusterIP>:<port> is reachable from this host; table in .testenv/services.json
  Logs: .testenv/logs/<component>.log   Stop: make cluster-down
MSG
