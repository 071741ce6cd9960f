#!/usr/bin/env bash
# Installs what `make test` needs on a fresh machine. Idempotent: skips what is present.
set -euo pipefail
need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
if ((${#need_apt[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
