#!/usr/bin/env bash
# The store side of `make bench`: durable creates/s with group commit next to one commit per
# create (SHORTENER_GROUP_COMMIT=false), and GET /{slug} req/s, on SQLite and on PostgreSQL
# (a throwaway server on loopback, scripts/pg.sh, fsync on), all in one run. Release build,
# wrk on loopback. Writes bench-results/store.txt (summary first, then each wrk report).
# Tunables: DURATION, THREADS, CONNECTIONS, PORT, SLUGS, PROFILE (release; `debug` measures the
# debug build, for a quick relative figure when a release build is not at hand).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
PORT=${PORT:-18182}
SLUGS=${SLUGS:-200}
PROFILE=${PROFILE:-release}
OUT=bench-results/store.txt

source scripts/bench-lib.sh
bench_deps

if [[ $PROFILE == release ]]; then cargo build --release -p shortener; else cargo build -p shortener; fi

tmp=$(mktemp -d)
pgdir=.pg/bench
pid=
stop_server() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    wait "$pid" || true
  fi
  pid=
}
cleanup() {
  stop_server
  bash scripts/pg.sh down "$pgdir"
  rm -rf "$tmp"
}
trap cleanup EXIT

base=http://127.0.0.1:$PORT

# start_server STORE GROUP_COMMIT: starts the release build and waits for /readyz.
start_server() {
  SHORTENER_GROUP_COMMIT=$2 SHORTENER_API_TOKENS=$BENCH_TOKEN "target/$PROFILE/shortener" \
    --host 127.0.0.1 --port "$PORT" --store "$1" --write-rate-limit 0 >>"$tmp/server.log" 2>&1 &
  pid=$!
  wait_ready "$base" "$pid" "$tmp/server.log" 60
}

write_wrk_scripts "$tmp" "$SLUGS"

# run LABEL SCRIPT: one wrk run; the report goes to $tmp/reports, the figures to $tmp/summary.
run() {
  local label=$1 script=$2 report
  report=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$script" "$base")
  { echo "## $label"; echo "$report"; echo; } >>"$tmp/reports"
  local rps p99 errors
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$report")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$report")
  errors=$(grep -E 'Non-2xx or 3xx responses|Socket errors' <<<"$report" | tr '\n' ' ' || true)
  printf '%-44s %12s req/s   p99 %-9s %s\n' "$label" "$rps" "$p99" "$errors" >>"$tmp/summary"
  echo "$rps"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "n/a" }'; }

# bench_backend NAME STORE: creates both ways on one store, then redirects. One commit per
# create runs first, so any cost of a fuller table falls on group commit, not on the baseline.
bench_backend() {
  local name=$1 group single
  start_server "$2" false
  single=$(run "$name: POST /api/v1/urls, one commit per create" "$tmp/create.lua")
  stop_server
  start_server "$2" true
  group=$(run "$name: POST /api/v1/urls, group commit" "$tmp/create.lua")
  seed_slugs "$base" "$SLUGS"
  run "$name: GET /{slug} ($SLUGS slugs, at random)" "$tmp/resolve.lua" >/dev/null
  stop_server
  echo "$name: group commit / one commit per create = $(ratio "$group" "$single")x" >>"$tmp/ratios"
}

: >"$tmp/summary"
: >"$tmp/ratios"
: >"$tmp/reports"
bench_backend sqlite "$tmp/bench.db"

bash scripts/pg.sh down "$pgdir"
bench_backend postgres "$(bash scripts/pg.sh up "$pgdir")"

mkdir -p "$(dirname "$OUT")"
{
  echo "# store benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "# $PROFILE build, loopback, $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d$DURATION; creates are durable (201 after commit)"
  echo "# SQLite: WAL, synchronous=FULL, file on $(df -T "$tmp" | awk 'NR==2 {print $2}'); PostgreSQL (scripts/pg.sh) on loopback, fsync on, synchronous_commit on"
  echo
  cat "$tmp/summary"
  echo
  cat "$tmp/ratios"
  echo
  cat "$tmp/reports"
} | tee "$OUT"
echo "results in $OUT"
