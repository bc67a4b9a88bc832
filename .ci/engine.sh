#!/usr/bin/env bash
# Starts the Docker engine the test suite runs against, and gives it a stand-in for alpine/git.
#
# No registry is reachable on the CI machines, so the git image is built with `docker import`
# from this machine's own git and the libraries it links. The engine runs without a bridge and
# without touching iptables: clone containers use network mode `host`, and tests only ever talk
# to git servers on 127.0.0.1.
#
# Idempotent: safe to run again while the engine is up.
set -euo pipefail

ENGINE_DIR=${CLONESHELF_ENGINE_DIR:-/var/lib/cloneshelf-test-engine}
SOCKET=${CLONESHELF_ENGINE_SOCKET:-/run/cloneshelf-test-docker.sock}
IMAGE=${CLONESHELF_TEST_GIT_IMAGE:-cloneshelf-test/git:standin-6}
export DOCKER_HOST="unix://$SOCKET"

# git-lfs goes into the stand-in image, as alpine/git has it.
if ! command -v dockerd >/dev/null || ! command -v git-lfs >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io git-lfs >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    mkdir -p "$ENGINE_DIR"
    # A machine handed back after a stop keeps the pid files and sockets of an engine that was
    # killed; dockerd would wait on them. With no engine answering, that runtime state is stale.
    rm -f "$ENGINE_DIR/dockerd.pid" "$ENGINE_DIR/exec/containerd/containerd.pid"
    setsid dockerd --host "$DOCKER_HOST" --data-root "$ENGINE_DIR/docker" \
        --exec-root "$ENGINE_DIR/exec" --pidfile "$ENGINE_DIR/dockerd.pid" \
        --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
        >"$ENGINE_DIR/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 120); do
        docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || { tail -20 "$ENGINE_DIR/dockerd.log"; exit 1; }
fi

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    # git runs helpers (credential-store) through /bin/sh, and `git submodule` is a shell script
    # that calls sed, basename, uname and a few more: alpine/git's busybox provides them all;
    # alpine/git has OpenSSH's client too, for ssh:// URLs.
    tools=(sed basename uname cat expr sort wc git-lfs ssh)
    git_bins=(/usr/bin/git /usr/lib/git-core/* /bin/dash "${tools[@]/#//usr/bin/}")
    # ldd fails on git's shell scripts; only the binaries' libraries matter. glibc loads
    # libgcc_s at run time (pthread_exit, when index-pack's threads end early), so ldd misses it.
    libs=$({ ldd "${git_bins[@]}" 2>/dev/null || true; } | grep -o '/[^ ]*\.so[^ ]*' | sort -u)
    libs="$libs $(ldconfig -p | grep -o '/[^ ]*/libgcc_s\.so\.1$' | head -1)"
    # -h copies what symlinks point at, so the image holds real files.
    tar -ch /usr/bin/git /usr/lib/git-core /usr/share/git-core /etc/ssl/certs /bin/dash $libs \
        "${tools[@]/#//usr/bin/}" \
        2>/dev/null | tar -x -C "$root"
    ln -s dash "$root/bin/sh"
    mkdir -p "$root/tmp" "$root/git" && chmod 1777 "$root/tmp"
    printf 'root:x:0:0:root:/root:/bin/false\nnobody:x:65534:65534:nobody:/tmp:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar -C "$root" -c . | docker import -c 'ENTRYPOINT ["git"]' -c 'WORKDIR /git' - "$IMAGE" >/dev/null
fi

echo "engine: $DOCKER_HOST  image: $IMAGE ($(docker run --rm --network none "$IMAGE" --version))"
