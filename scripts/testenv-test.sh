#!/usr/bin/env bash
# `make testenv-test`: node agent unit tests, then the end-to-end checks. The last check
# stops the cluster and verifies nothing survives, but only when this run started the
# cluster: a cluster that was already up may be serving someone else's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
down=1
if [[ -f .testenv/pids/kube-apiserver.pid ]] && kill -0 "$(cat .testenv/pids/kube-apiserver.pid)" 2>/dev/null; then
  down=0
fi
[[ -n ${TESTENV_KEEP:-} ]] && down=0
bash scripts/testenv-up.sh
${CARGO:-cargo} build -p shortener
(cd testenv && go vet ./... && go test ./...)
if [[ $down == 0 ]]; then
  echo "testenv-test: the cluster was already running; it stays up (the cluster-down check is skipped)"
fi
cd testenv && TESTENV_E2E=1 TESTENV_E2E_DOWN=$down go test -count=1 -timeout 15m -v ./e2e/
