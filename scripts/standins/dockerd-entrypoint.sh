#!/bin/sh
# The stand-in docker:dind's entrypoint: what docker:dind's dockerd-entrypoint.sh does, as far
# as compose.yaml uses it. With DOCKER_TLS_CERTDIR set it makes a CA (kept in $DIR/ca), a server
# certificate (DNS:docker among its names) and a client certificate ($DIR/client, key mode
# 0644 so any uid can read it), then runs dockerd on the unix socket and, TLS-verified, on
# tcp://0.0.0.0:2376. Arguments that start with "-" go to dockerd, as in the real image.
#
# Stand-in only: STANDIN_DIND_TCP replaces tcp://0.0.0.0:2376 (the test runs on the host's
# network, where it listens on 127.0.0.1 and a port of its own).
set -eu

tls_generate_certs() {
    dir=$1
    if [ -s "$dir/ca/key.pem" ] || [ ! -s "$dir/ca/cert.pem" ]; then
        mkdir -p "$dir/ca"
        [ -s "$dir/ca/key.pem" ] || openssl genrsa -out "$dir/ca/key.pem" 4096
        openssl req -new -key "$dir/ca/key.pem" -out "$dir/ca/cert.pem" \
            -subj '/CN=docker:dind CA' -x509 -days "${DOCKER_TLS_CERTDAYS:-825}"
    fi
    if [ -s "$dir/ca/key.pem" ]; then
        mkdir -p "$dir/server"
        [ -s "$dir/server/key.pem" ] || openssl genrsa -out "$dir/server/key.pem" 4096
        openssl req -new -key "$dir/server/key.pem" -out "$dir/server/csr.pem" \
            -subj '/CN=docker:dind server'
        printf '[ x509_exts ]\nsubjectAltName = %s\n' \
            "DNS:docker,DNS:localhost,DNS:$(cat /etc/hostname),IP:127.0.0.1${DOCKER_TLS_SAN:+,$DOCKER_TLS_SAN}" \
            >"$dir/server/openssl.cnf"
        openssl x509 -req -in "$dir/server/csr.pem" -CA "$dir/ca/cert.pem" \
            -CAkey "$dir/ca/key.pem" -CAcreateserial -out "$dir/server/cert.pem" \
            -days "${DOCKER_TLS_CERTDAYS:-825}" -extfile "$dir/server/openssl.cnf" \
            -extensions x509_exts
        cp "$dir/ca/cert.pem" "$dir/server/ca.pem"
        openssl verify -CAfile "$dir/server/ca.pem" "$dir/server/cert.pem"

        mkdir -p "$dir/client"
        [ -s "$dir/client/key.pem" ] || openssl genrsa -out "$dir/client/key.pem" 4096
        chmod 0644 "$dir/client/key.pem"
        openssl req -new -key "$dir/client/key.pem" -out "$dir/client/csr.pem" \
            -subj '/CN=docker:dind client'
        printf '[ x509_exts ]\nextendedKeyUsage = clientAuth\n' >"$dir/client/openssl.cnf"
        openssl x509 -req -in "$dir/client/csr.pem" -CA "$dir/ca/cert.pem" \
            -CAkey "$dir/ca/key.pem" -CAcreateserial -out "$dir/client/cert.pem" \
            -days "${DOCKER_TLS_CERTDAYS:-825}" -extfile "$dir/client/openssl.cnf" \
            -extensions x509_exts
        cp "$dir/ca/cert.pem" "$dir/client/ca.pem"
        openssl verify -CAfile "$dir/client/ca.pem" "$dir/client/cert.pem"
    fi
}

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    if [ -n "${DOCKER_TLS_CERTDIR:-}" ]; then
        tls_generate_certs "$DOCKER_TLS_CERTDIR"
        set -- dockerd --host=unix:///var/run/docker.sock \
            --host="${STANDIN_DIND_TCP:-tcp://0.0.0.0:2376}" --tlsverify \
            --tlscacert "$DOCKER_TLS_CERTDIR/server/ca.pem" \
            --tlscert "$DOCKER_TLS_CERTDIR/server/cert.pem" \
            --tlskey "$DOCKER_TLS_CERTDIR/server/key.pem" "$@"
    else
        set -- dockerd --host=unix:///var/run/docker.sock \
            --host="${STANDIN_DIND_TCP:-tcp://0.0.0.0:2375}" "$@"
    fi
fi
if [ "$1" = dockerd ]; then
    # A container restarted after a kill keeps the pid files of the engine that died.
    rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
fi
exec "$@"
