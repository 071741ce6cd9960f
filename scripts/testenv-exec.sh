#!/usr/bin/env bash
# testenv-exec.sh CMD...: runs CMD where the testenv cluster can be reached. The real node
# (TESTENV_NODE=real) keeps the whole cluster in a network namespace of its own, so its
# API server, pods and Services exist only there: CMD enters that namespace (only it; the
# filesystem and mounts stay the host's). With the simulated node, CMD just runs.
set -euo pipefail
RUN=$(cd "$(dirname "$0")/.." && pwd)/.testenv
if [[ $(cat "$RUN/mode" 2>/dev/null) == real && -f $RUN/pids/netns.pid ]]; then
  exec nsenter --target "$(cat "$RUN/pids/netns.pid")" --net -- "$@"
fi
exec "$@"
