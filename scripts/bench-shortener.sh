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

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

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

deadline=$((SECONDS + 30))
until curl -fsS "$base/readyz" >/dev/null 2>&1; do
  if ! kill -0 "$pid" 2>/dev/null || ((SECONDS > deadline)); then
    echo "shortener did not become ready:" >&2
    cat "$tmp/server.log" >&2
    exit 1
  fi
  sleep 0.1
done

for ((i = 0; i < SLUGS; i++)); do
  curl -fsS -o /dev/null -H 'content-type: application/json' \
    -d "{\"url\":\"https://example.com/seed/$i\",\"slug\":\"bench-$i\"}" "$base/api/v1/urls"
done

cat >"$tmp/resolve.lua" <<LUA
request = function()
  return wrk.format("GET", "/bench-" .. math.random(0, $((SLUGS - 1))))
end
LUA
cat >"$tmp/create.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/api/v1/urls", nil,
    '{"url":"https://example.com/bench/' .. math.random(1, 1e9) .. '/' .. n .. '"}')
end
LUA

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
