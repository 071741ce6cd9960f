#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for tests and benchmarks.
#   scripts/pg.sh up DIR     initdb (if DIR has no cluster yet) and start on a free 127.0.0.1
#                            port; prints the admin URL (also in DIR/url)
#   scripts/pg.sh stop DIR   stop at once, like a crash (pg_ctl -m immediate)
#   scripts/pg.sh start DIR  start again on the same port
#   scripts/pg.sh down DIR   stop and delete DIR
# Trust auth, over 127.0.0.1 and DIR's unix socket only: nothing else can reach it. initdb and
# postgres refuse to run as root, so as root they run as the `postgres` user
# (scripts/install-deps.sh makes sure it exists). Tunables: PG_PORT, PG_FSYNC (on|off).
# For clients in containers (testenv's real node): PG_LISTEN=ADDR PG_CLIENTS=CIDR also listen
# on ADDR (an address of a network testenv made, never an outside one) and let CIDR in, by
# password only, as the role `shortener` owning the database `shortener`; its URL (with a
# password generated here) goes to DIR/client-url, mode 600, and is never printed.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[[ -n $cmd && -n $dir ]] || { echo "usage: $0 up|stop|start|down DIR" >&2; exit 2; }
dir=$(realpath -m "$dir")
data=$dir/data

bindir() {
  local d
  if command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
    dirname "$(realpath "$(command -v pg_ctl)")"
    return
  fi
  # Debian's package keeps the binaries off PATH.
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [[ -n $d && -x $d/pg_ctl ]] || { echo "pg.sh: no PostgreSQL binaries (run scripts/install-deps.sh)" >&2; exit 1; }
  echo "$d"
}
bin=$(bindir)

as_owner() {
  if ((EUID == 0)); then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pgctl() { as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" "$@"; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case $cmd in
up)
  mkdir -p "$dir"
  ((EUID == 0)) && chown postgres: "$dir"
  if [[ ! -f $data/PG_VERSION ]]; then
    port=${PG_PORT:-$(free_port)}
    as_owner "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1${PG_LISTEN:+,$PG_LISTEN}'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
fsync = ${PG_FSYNC:-on}
CONF
    # Only loopback and the socket, both trusted: the server is throwaway and local.
    cat >"$data/pg_hba.conf" <<HBA
local all all trust
host  all all 127.0.0.1/32 trust
HBA
    [[ -n ${PG_CLIENTS:-} ]] && echo "host  shortener shortener $PG_CLIENTS scram-sha-256" >>"$data/pg_hba.conf"
    echo "postgres://postgres@127.0.0.1:$port/postgres" >"$dir/url"
  fi
  pgctl -w -t 60 start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
  if [[ -n ${PG_LISTEN:-} && -n ${PG_CLIENTS:-} && ! -f $dir/client-url ]]; then
    password=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
    port=$(sed -n 's/^port = //p' "$data/postgresql.conf" | tail -n1)
    # The password goes to psql on stdin, not on a command line.
    as_owner "$bin/psql" -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres >/dev/null <<SQL
CREATE ROLE shortener LOGIN PASSWORD '$password';
CREATE DATABASE shortener OWNER shortener;
SQL
    (umask 077 && printf %s "postgres://shortener:$password@$PG_LISTEN:$port/shortener" >"$dir/client-url")
  fi
  cat "$dir/url"
  ;;
stop)
  pgctl -m immediate -w stop >/dev/null
  ;;
start)
  pgctl -w -t 60 start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
  ;;
down)
  # Immediate: the data is deleted next, so a clean shutdown's checkpoint (tens of seconds
  # after a test run's many databases) would be wasted.
  if [[ -f $data/postmaster.pid ]]; then
    pgctl -m immediate -w stop >/dev/null || true
  fi
  rm -rf "$dir"
  ;;
*)
  echo "usage: $0 up|stop|start|down DIR" >&2
  exit 2
  ;;
esac
