#!/usr/bin/env bash
# `make bench-cluster` (part of `make bench`): on testenv, what a bad release costs users
# with the operator versus a plain Deployment (operator/tests/bench.rs, bench_recovery),
# and what the operator itself costs at 1, 100 and 1,000 releases (bench_operator_cost);
# then bench-results/summary.md and timeline PNGs (scripts/bench-report.py, matplotlib in
# .bench-venv/, created from PyPI on first use). Starts testenv if it is not up and stops
# it afterwards only if it started it. About 25-35 min on 2 cores with the defaults.
#
#   bash scripts/bench-cluster.sh venv     # only create the venv (needs PyPI)
#   bash scripts/bench-cluster.sh report   # only re-render the Markdown and PNGs
#
# Tunables: BENCH_REPS (3), BENCH_WINDOW_SECS (45), BENCH_KINDS (all), BENCH_COST_COUNTS
# (1,100,1000), BENCH_IDLE_SECS (10), BENCH_OUT (bench-results), BENCH_TESTS (test name
# filter: bench_recovery or bench_operator_cost runs one of the two; default both). Debug builds: testenv's
# image table runs target/debug/shortener, and the operator is the test build's binary.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.bench-venv
OUT=${BENCH_OUT:-bench-results}

venv() {
  if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q 'matplotlib>=3.8,<4'
  fi
}

report() {
  "$VENV/bin/python" scripts/bench-report.py "$OUT"
}

case ${1:-all} in
  venv) venv; exit ;;
  report) report; exit ;;
esac

venv
cargo build -p shortener -p operator
cargo test -p operator --test bench --no-run
mkdir -p "$OUT"
if testenv/bin/kubectl --kubeconfig .testenv/kubeconfig get --raw /readyz >/dev/null 2>&1; then up=1; else up=0; fi
make --no-print-directory cluster-up
rc=0
cargo test -p operator --test bench -- --ignored --test-threads=1 --nocapture "${BENCH_TESTS:-bench_}" || rc=$?
[[ $up == 1 ]] || make --no-print-directory cluster-down
[[ $rc == 0 ]] || exit "$rc"
report
