#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on 127.0.0.1:55432 for the tests (trust auth, user postgres):
# installs Debian's postgresql if needed; does nothing if the cluster already answers.
set -euo pipefail

PORT=${CLONESHELF_TEST_PG_PORT:-55432}
DIR=${CLONESHELF_TEST_PG_DIR:-/tmp/cloneshelf-test-postgres}

BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$BIN" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    exit 0
fi
# initdb refuses root: the cluster belongs to the postgres user.
mkdir -p "$DIR"
chown postgres:postgres "$DIR"
as_postgres() { runuser -u postgres -- "$@"; }
[ -f "$DIR/data/PG_VERSION" ] || as_postgres "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust >/dev/null
as_postgres "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w \
    -o "-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
echo "postgres: postgres://postgres@127.0.0.1:$PORT/postgres"
