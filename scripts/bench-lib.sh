# Shared by the shortener benchmarks (bench-shortener.sh, bench-store.sh); sourced, not run.

# bench_deps: wrk and curl, from Debian if missing.
bench_deps() {
  local need=()
  command -v wrk >/dev/null || need+=(wrk)
  command -v curl >/dev/null || need+=(curl)
  if ((${#need[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  fi
}

# wait_ready BASE PID LOG SECONDS: polls BASE/readyz; exits with LOG if PID dies or time runs out.
wait_ready() {
  local base=$1 pid=$2 log=$3 deadline=$((SECONDS + $4))
  until curl -fsS "$base/readyz" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS > deadline)); then
      echo "shortener did not become ready:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
}

# seed_slugs BASE N: creates bench-0 .. bench-(N-1), the slugs resolve.lua asks for.
seed_slugs() {
  local i
  for ((i = 0; i < $2; i++)); do
    curl -fsS -o /dev/null -H 'content-type: application/json' \
      -d "{\"url\":\"https://example.com/seed/$i\",\"slug\":\"bench-$i\"}" "$1/api/v1/urls"
  done
}

# write_wrk_scripts DIR N: DIR/resolve.lua (GET one of the N seeded slugs at random) and
# DIR/create.lua (POST a new URL each time).
write_wrk_scripts() {
  cat >"$1/resolve.lua" <<LUA
request = function()
  return wrk.format("GET", "/bench-" .. math.random(0, $(($2 - 1))))
end
LUA
  cat >"$1/create.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/api/v1/urls", nil,
    '{"url":"https://example.com/bench/' .. math.random(1, 1e9) .. '/' .. n .. '"}')
end
LUA
}
