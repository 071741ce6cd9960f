#!/usr/bin/env bash
# Stops everything `make cluster-up` started, in reverse order: SIGTERM, then SIGKILL after
# a grace period; then any pod process group the node agent left. Idempotent.
set -uo pipefail
cd "$(dirname "$0")/.."
RUN=$PWD/.testenv

stop() {
  local name=$1 f=$RUN/pids/$1.pid pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    # Each component leads its own process group (setsid), so signal the group.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "testenv: $name did not stop in 10s, killing" >&2
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
    fi
  fi
  rm -f "$f"
}

for c in node kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$c"; done

# Pod processes run in their own process groups; the agent records each group id.
if [[ -d $RUN/node/pids ]]; then
  for f in "$RUN"/node/pids/*; do
    [[ -e $f ]] || continue
    pgid=$(basename "$f")
    kill -KILL -- "-$pgid" 2>/dev/null
    rm -f "$f"
  done
fi
echo "testenv: cluster stopped"
