# Shared by the shortener benchmarks (bench-shortener.sh, bench-store.sh); sourced, not run.

# Writes need a bearer token; this one exists only for this run. Start the shortener with
# SHORTENER_API_TOKENS=$BENCH_TOKEN (and --write-rate-limit 0: the load comes from one IP).
BENCH_TOKEN=bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')

# bench_deps [nginx]: wrk and curl (and nginx if asked), from Debian if missing.
bench_deps() {
  local need=()
  command -v wrk >/dev/null || need+=(wrk)
  command -v curl >/dev/null || need+=(curl)
  [[ ${1:-} != nginx || -x /usr/sbin/nginx ]] || need+=(nginx-light)
  if ((${#need[@]})); then
    apt-get update -qq
    # No service start by a package: the benchmarks run their own nginx, on loopback only.
    local policy_added=
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      policy_added=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    [[ -z $policy_added ]] || rm -f /usr/sbin/policy-rc.d
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
      -H "authorization: Bearer $BENCH_TOKEN" -d "{\"url\":\"https://example.com/seed/$i\",\"slug\":\"bench-$i\"}" "$1/api/v1/urls"
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
  cat >"$1/create.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $BENCH_TOKEN"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/api/v1/urls", nil,
    '{"url":"https://example.com/bench/' .. math.random(1, 1e9) .. '/' .. n .. '"}')
end
LUA
}
