#!/usr/bin/env bash
# Measures the release build of the shortener on loopback with wrk: redirects (GET /{slug})
# and creates (POST /api/v1/urls), ~10 s each, against a fresh temporary store.
# Writes bench-results/shortener.txt. Tunables: DURATION, THREADS, CONNECTIONS, PORT, SLUGS.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
PORT=${PORT:-18181}
SLUGS=${SLUGS:-200}
OUT=bench-results/shortener.txt

source scripts/bench-lib.sh
bench_deps

cargo build --release -p shortener

tmp=$(mktemp -d)
pid=
cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    wait "$pid" || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

base=http://127.0.0.1:$PORT
# Request logs go to a file, as they would to a log collector; they are part of the cost.
target/release/shortener --host 127.0.0.1 --port "$PORT" --store "$tmp/bench.db" >"$tmp/server.log" 2>&1 &
pid=$!
wait_ready "$base" "$pid" "$tmp/server.log" 30

seed_slugs "$base" "$SLUGS"

write_wrk_scripts "$tmp" "$SLUGS"

mkdir -p "$(dirname "$OUT")"
{
  echo "# shortener benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "# release build, loopback, $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, store on $(df -T "$tmp" | awk 'NR==2 {print $2}')"
  echo "# SQLite WAL, synchronous=FULL; INFO request logs written to a file"
  echo
  echo "## GET /{slug} (308 redirect; $SLUGS seeded slugs, picked at random)"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$tmp/resolve.lua" "$base"
  echo
  echo "## POST /api/v1/urls (201 create; each one a durable commit)"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$tmp/create.lua" "$base"
  echo
  echo "## after the run"
  curl -fsS "$base/metrics" | grep -E '^shortener_(urls_total|http_requests_total\{code="(201|308|500)")' || true
} | tee "$OUT"
echo "results in $OUT"
