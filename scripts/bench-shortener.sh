#!/usr/bin/env bash
# Measures the release build of the shortener on loopback with wrk, side by side with Debian's
# nginx answering `return 301` (the floor for "a redirect"), in one run with the same load:
# redirects (GET /{slug}) against both, alternating ROUNDS times (this machine's throughput
# drifts by a third from one run to the next, so the ratio is the median of the rounds'
# pairs, each pair measured back to back), then creates
# (POST /api/v1/urls) against a fresh temporary store. Prints the redirect ratio
# shortener/nginx and writes everything to bench-results/shortener.txt.
# Tunables: DURATION, THREADS, CONNECTIONS, PORT, NGINX_PORT, SLUGS, ROUNDS.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-6s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
PORT=${PORT:-18181}
NGINX_PORT=${NGINX_PORT:-18183}
SLUGS=${SLUGS:-200}
ROUNDS=${ROUNDS:-7}
OUT=bench-results/shortener.txt

source scripts/bench-lib.sh
bench_deps nginx

cargo build --release -p shortener

tmp=$(mktemp -d)
pid=
nginx_pid=
cleanup() {
  for p in $pid $nginx_pid; do
    if kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p"
      wait "$p" || true
    fi
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

# nginx: one redirect for every path, no access log (the shortener logs no line per redirect
# at its default level either), a worker per core, everything else its defaults.
mkdir -p "$tmp/nginx"
cat >"$tmp/nginx/nginx.conf" <<NGINX
worker_processes auto;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { return 301 https://example.com/seed/0; }
  }
}
NGINX
/usr/sbin/nginx -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" &
nginx_pid=$!

base=http://127.0.0.1:$PORT
nginx_base=http://127.0.0.1:$NGINX_PORT
# Logs go to a file, as they would to a log collector; they are part of the cost.
SHORTENER_API_TOKENS=$BENCH_TOKEN target/release/shortener --host 127.0.0.1 --port "$PORT" \
  --store "$tmp/bench.db" --write-rate-limit 0 >"$tmp/server.log" 2>&1 &
pid=$!
wait_ready "$base" "$pid" "$tmp/server.log" 30
deadline=$((SECONDS + 30))
until curl -s -o /dev/null "$nginx_base/x"; do
  if ! kill -0 "$nginx_pid" 2>/dev/null || ((SECONDS > deadline)); then
    echo "nginx did not start:" >&2
    cat "$tmp/nginx/error.log" >&2 || true
    exit 1
  fi
  sleep 0.1
done

seed_slugs "$base" "$SLUGS"
write_wrk_scripts "$tmp" "$SLUGS"

# run_wrk NAME URL SCRIPT: prints wrk's report and appends "NAME req/s" to $tmp/rates.
run_wrk() {
  local report
  report=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$3" "$2")
  echo "$report"
  echo "$1 $(awk '/^Requests\/sec:/ {print $2}' <<<"$report")" >>"$tmp/rates"
}
# The median of the rounds' shortener/nginx ratios (rounds pair up in order).
median_ratio() {
  paste <(awk '$1 == "shortener" {print $2}' "$tmp/rates") <(awk '$1 == "nginx" {print $2}' "$tmp/rates") |
    awk '$2 > 0 {print $1 / $2}' | sort -g | awk '{r[NR] = $1} END {
      if (!NR) print 0; else if (NR % 2) printf "%.2f", r[(NR + 1) / 2]; else printf "%.2f", (r[NR / 2] + r[NR / 2 + 1]) / 2 }'
}
mean() { awk -v k="$1" '$1 == k {s += $2; n++} END {if (n) printf "%.0f", s / n; else print 0}' "$tmp/rates"; }

mkdir -p "$(dirname "$OUT")"
{
  echo "# shortener benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "# release build, loopback, $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, store on $(df -T "$tmp" | awk 'NR==2 {print $2}')"
  echo "# SQLite WAL, synchronous=FULL; shortener at its default log level (INFO, no line per redirect), to a file"
  echo "# nginx $(/usr/sbin/nginx -v 2>&1 | sed 's/.*nginx\///'): return 301, access_log off, worker_processes auto"
  for ((r = 1; r <= ROUNDS; r++)); do
    echo
    echo "## round $r/$ROUNDS: nginx, GET /bench-N (return 301)"
    run_wrk nginx "$nginx_base" "$tmp/resolve.lua"
    echo
    echo "## round $r/$ROUNDS: shortener, GET /{slug} (308 redirect; $SLUGS seeded slugs, picked at random)"
    run_wrk shortener "$base" "$tmp/resolve.lua"
  done
  echo
  echo "## POST /api/v1/urls (201 create; each one a durable commit, group commit on)"
  run_wrk create "$base" "$tmp/create.lua"
  echo
  echo "## after the run"
  curl -fsS "$base/metrics" | grep -E '^shortener_(urls_total|http_requests_total\{code="(201|308|500)")' || true
  echo
  nginx_rate=$(mean nginx)
  shortener_rate=$(mean shortener)
  echo "## summary (mean of $ROUNDS rounds)"
  echo "nginx     GET /{slug}: $nginx_rate req/s"
  echo "shortener GET /{slug}: $shortener_rate req/s"
  awk -v s="$shortener_rate" -v n="$nginx_rate" 'BEGIN {printf "ratio of the means: %.2fx\n", (n > 0 ? s / n : 0)}'
  echo "ratio shortener/nginx (median of $ROUNDS back-to-back pairs): $(median_ratio)x"
  echo "shortener POST /api/v1/urls: $(mean create) req/s"
} | tee "$OUT"
echo "results in $OUT"
