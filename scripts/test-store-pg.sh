#!/usr/bin/env bash
# The shortener's store and API test suite against a real PostgreSQL server: starts a
# throwaway one on loopback (scripts/pg.sh), runs `cargo test -p shortener` with
# SHORTENER_TEST_PG_URL set (every test then gets a fresh database; the tests about SQLite
# itself, named sqlite_*, are skipped; the PostgreSQL-only ones, ignored by default, run), and
# stops the server whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.pg/test
bash scripts/pg.sh down "$dir"
trap 'bash scripts/pg.sh down "$dir"' EXIT
# fsync off: each test creates a database, and a stopped server (not a crashed host) loses
# no committed data without it. The restart test starts its own server with fsync on.
url=$(PG_FSYNC=off bash scripts/pg.sh up "$dir")
SHORTENER_TEST_PG_URL=$url cargo test -p shortener --locked -- --include-ignored --skip sqlite_ "$@"
