#!/bin/sh
# The stand-in postgres image's entrypoint: what the official image's docker-entrypoint.sh does,
# as far as compose.yaml uses it. On an empty $PGDATA it makes a cluster whose superuser is
# $POSTGRES_USER with $POSTGRES_PASSWORD (scram-sha-256 over TCP, trust on the socket, as the
# official image sets up), creates $POSTGRES_DB, and listens on every address; then runs
# postgres as the postgres user. Arguments that start with "-" go to postgres.
set -eu

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- postgres "$@"
fi
if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 0700 "$PGDATA"
    as_postgres="setpriv --reuid=postgres --regid=postgres --clear-groups"
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        : "${POSTGRES_PASSWORD:?the official image refuses to start without it, and so does this one}"
        user=${POSTGRES_USER:-postgres}
        printf '%s\n' "$POSTGRES_PASSWORD" >/tmp/pwfile
        chown postgres /tmp/pwfile
        $as_postgres initdb -D "$PGDATA" -U "$user" --pwfile=/tmp/pwfile -E UTF8 --locale=C \
            --auth-local=trust --auth-host=scram-sha-256
        rm -f /tmp/pwfile
        printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
        printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
        db=${POSTGRES_DB:-$user}
        if [ "$db" != postgres ]; then
            echo "CREATE DATABASE \"$db\";" | $as_postgres postgres --single -D "$PGDATA" postgres >/dev/null
        fi
    fi
    exec $as_postgres "$@"
fi
exec "$@"
