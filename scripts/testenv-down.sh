#!/usr/bin/env bash
# Stops everything `make cluster-up` started, in reverse order: SIGTERM, then SIGKILL after
# a grace period; then any pod process group the node agent left; for the real node
# (TESTENV_NODE=real), containers, namespaces, cgroups and sysctls too. Idempotent.
set -uo pipefail
cd "$(dirname "$0")/.."
RUN=$PWD/.testenv
BIN=$PWD/testenv/bin
mkdir -p "$RUN"
if [[ -z ${TESTENV_LOCKED:-} ]]; then
  exec 9>"$RUN/.lock"
  flock -w 600 9 || { echo "testenv: another cluster-up/down holds .testenv/.lock" >&2; exit 1; }
fi

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

# The API server's clients stop together, then the API server, then etcd.
for c in node kubelet kube-proxy kube-scheduler kube-controller-manager; do stop "$c" & done
wait
stop kube-apiserver
stop etcd
stop containerd
if [[ -f $RUN/pids/netns.pid || -d $RUN/real || -f $RUN/sysctl.saved ]]; then
  PKI=$RUN/pki ROOT=$PWD
  source scripts/testenv-real.sh
  real_down
fi

# Pod processes run in their own process groups; the agent records each group id.
if [[ -d $RUN/node/pids ]]; then
  for f in "$RUN"/node/pids/*; do
    [[ -e $f ]] || continue
    pgid=$(basename "$f")
    kill -KILL -- "-$pgid" 2>/dev/null
    rm -f "$f"
  done
fi
# A component whose pid file was lost (a killed cluster-up) is found by its executable.
for exe in /proc/[0-9]*/exe; do
  target=$(readlink "$exe" 2>/dev/null) || continue
  if [[ $target == "$BIN"/* && $target != "$BIN/kubectl" ]]; then
    pid=${exe#/proc/}; pid=${pid%/exe}
    echo "testenv: killing stray $(basename "$target") (pid $pid)" >&2
    kill -KILL "$pid" 2>/dev/null
  fi
done
rm -f "$RUN/mode" "$RUN/real-network.env"
echo "testenv: cluster stopped"
