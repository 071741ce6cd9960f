#!/usr/bin/env bash
# make e2e-real: the operator's core e2e scenarios on the real node (TESTENV_NODE=real, up).
# The pods are containers there, so they cannot share a SQLite file of the host: like in
# production, every scenario's pods use a PostgreSQL database, here a throwaway server
# (scripts/pg.sh) listening on the node's address on the pod network (the bridge testenv
# made; nothing outside can reach it), with a password the tests put in a Secret.
# Usage: scripts/e2e-real.sh SCENARIO...   (exact test names)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PG_DIR=$ROOT/.pg/e2e-real
export KUBECONFIG=$ROOT/.testenv/kubeconfig
# NODE_IP, POD_CIDR: written by cluster-up.
source "$ROOT/.testenv/real-network.env" 2>/dev/null || { echo "e2e-real: no real-node cluster (TESTENV_NODE=real make cluster-up)" >&2; exit 1; }
node_ip=$NODE_IP pod_cidr=$POD_CIDR

bash scripts/pg.sh down "$PG_DIR" >/dev/null 2>&1
trap 'bash scripts/pg.sh down "$PG_DIR"' EXIT
# Started inside the cluster's network namespace, where the node's address exists.
PG_FSYNC=off PG_LISTEN=$node_ip PG_CLIENTS=$pod_cidr scripts/testenv-exec.sh bash scripts/pg.sh up "$PG_DIR" >/dev/null || exit 1
url=$(cat "$PG_DIR/client-url")
echo "e2e-real: PostgreSQL on $node_ip for $pod_cidr"
SHORTENER_E2E_STORE_URL=$url SHORTENER_E2E_PG_URL=$url \
  scripts/testenv-exec.sh "${CARGO:-cargo}" test -p operator --test e2e -- --ignored --test-threads=1 --nocapture --exact "$@"
