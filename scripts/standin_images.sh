#!/usr/bin/env bash
# Local stand-ins for the images compose.yaml names, for tests/test_compose.py on machines that
# reach no container registry (/work/shared/DOCKER-HERE.md). Each is made from what this machine
# has, as .ci/engine.sh makes the git image, and tagged under cloneshelf-standin/ only: the
# test's own compose file points at them; compose.yaml and the Dockerfile keep the real images
# (python:3.12-slim, postgres:17, redis:7, docker:28-dind).
#
#   python   this machine's CPython 3.12 (pyenv's, or $STANDIN_PYTHON) at /usr/local with the
#            libraries it links, dash, coreutils, groupadd/useradd: what the Dockerfile's RUN
#            steps use. No registry is reachable from a build on the test engine (it has no
#            network), so the image carries a wheelhouse of the project's dependencies, made
#            here with pip (PyPI, at set-up time like .ci/run's pip install), and pip is told
#            to install from it only (PIP_NO_INDEX, PIP_FIND_LINKS).
#   postgres Debian's PostgreSQL 15; scripts/standins/postgres-entrypoint.sh does what the
#            official image's entrypoint does with POSTGRES_USER/PASSWORD/DB and PGDATA.
#   redis    Debian's redis-server and redis-cli.
#   dind     the test suite's dind stand-in (tests/support/dind_image.py: Debian's dockerd),
#            plus the docker CLI (compose's healthcheck), openssl and
#            scripts/standins/dockerd-entrypoint.sh, which makes certificates into
#            DOCKER_TLS_CERTDIR as docker:dind does.
#
# Each is built once: a tag that is there is kept, and the tags change with what the images are
# made of (below). `--tags` prints the tags and builds nothing. Needs Debian's docker.io,
# postgresql and redis-server (.ci/run installs them) and the test engine (.ci/engine.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export DOCKER_HOST=${DOCKER_HOST:-unix:///run/cloneshelf-test-docker.sock}

# A Python 3.12, as the real base has: $STANDIN_PYTHON, python3.12 on the PATH, or pyenv's.
find_python() {
    local candidate version
    for candidate in ${STANDIN_PYTHON:-} python3.12; do
        # A pyenv shim is on the PATH whether or not it answers: ask the interpreter itself.
        "$candidate" -c 'import sys; print(sys.executable)' 2>/dev/null && return
    done
    if command -v pyenv >/dev/null; then
        for version in $(pyenv versions --bare 2>/dev/null | grep '^3\.12\.' | sort -rV); do
            PYENV_VERSION=$version pyenv which python3.12 2>/dev/null && return
        done
    fi
    echo "no Python 3.12 for the stand-in base (set STANDIN_PYTHON)" >&2
    return 1
}
PYTHON=$(find_python)
PY_VERSION=$("$PYTHON" -c 'import platform; print(platform.python_version())')
REQUIREMENTS=$("$PYTHON" -c '
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
# Each tag ends in a hash of what makes the image: this script, the entrypoints, the project's
# dependencies and the test suite's dind image that ours starts from. Any change, a new tag.
DIND_BASE=$(python3 -c 'from tests.support.dind_image import IMAGE; print(IMAGE)')
HASH=$({ cat scripts/standin_images.sh scripts/standins/*; printf '%s\n%s\n' "$REQUIREMENTS" "$DIND_BASE"; } \
    | sha256sum | cut -c1-12)

PYTHON_IMAGE=${STANDIN_PYTHON_IMAGE:-cloneshelf-standin/python:$PY_VERSION-$HASH}
POSTGRES_IMAGE=${STANDIN_POSTGRES_IMAGE:-cloneshelf-standin/postgres:15-$HASH}
REDIS_IMAGE=${STANDIN_REDIS_IMAGE:-cloneshelf-standin/redis:7-$HASH}
DIND_IMAGE=${STANDIN_DIND_IMAGE:-cloneshelf-standin/dind:$HASH}

if [ "${1:-}" = --tags ]; then
    printf 'python=%s\npostgres=%s\nredis=%s\ndind=%s\n' \
        "$PYTHON_IMAGE" "$POSTGRES_IMAGE" "$REDIS_IMAGE" "$DIND_IMAGE"
    exit 0
fi

present() { docker image inspect "$1" >/dev/null 2>&1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Copies `files` (following symlinks: bookworm's /bin is one) and every library they link
# into `root`. glibc loads libgcc_s at run time (thread cancellation), which ldd does not list.
copy_with_libraries() {
    local root=$1
    shift
    local libs
    libs=$({ ldd "$@" 2>/dev/null || true; } | awk '/=> \// {print $3} /^\t\// {print $1}' | sort -u)
    libs="$libs $(ldconfig -p | grep -o '/[^ ]*/libgcc_s\.so\.1$' | head -1)"
    # shellcheck disable=SC2086
    tar -ch "$@" $libs 2>/dev/null | tar -x -C "$root"
}

base_files() {
    local root=$1
    mkdir -p "$root"/{bin,tmp,run,proc,sys,dev,etc,var,usr/local/bin}
    chmod 1777 "$root/tmp"
    ln -sfn dash "$root/bin/sh"
    ln -sfn ../run "$root/var/run"
}

import_root() {  # root image [docker import -c ...]
    local root=$1 image=$2
    shift 2
    tar -C "$root" -c . | docker import "$@" - "$image" >/dev/null
    echo "built $image"
}

build_python() {
    local root=$WORK/python prefix
    prefix=$("$PYTHON" -c 'import sys; print(sys.base_prefix)')
    mkdir -p "$root/usr/local/bin" "$root/usr/local/lib" "$root/wheels"
    # The standard library without its tests, build files and GUI parts; of site-packages, pip.
    tar -C "$prefix/lib" -c --exclude=python3.12/test --exclude='python3.12/config-*' \
        --exclude='_tkinter*' \
        --exclude=python3.12/site-packages --exclude=python3.12/idlelib \
        --exclude=python3.12/tkinter --exclude=python3.12/turtledemo \
        --exclude=python3.12/ensurepip python3.12 | tar -x -C "$root/usr/local/lib"
    mkdir -p "$root/usr/local/lib/python3.12/site-packages"
    cp -a "$prefix/lib/python3.12/site-packages/pip" "$root/usr/local/lib/python3.12/site-packages/"
    cp -a "$prefix"/lib/python3.12/site-packages/pip-*.dist-info "$root/usr/local/lib/python3.12/site-packages/"
    cp -L "$prefix/bin/python3.12" "$root/usr/local/bin/"
    cp -L "$prefix/lib/libpython3.12.so.1.0" "$root/usr/local/lib/"
    for name in python python3; do ln -s python3.12 "$root/usr/local/bin/$name"; done
    for name in pip pip3 pip3.12; do
        printf '#!/bin/sh\nexec /usr/local/bin/python3.12 -m pip "$@"\n' >"$root/usr/local/bin/$name"
        chmod 755 "$root/usr/local/bin/$name"
    done
    base_files "$root"
    # What the Dockerfile runs (sh -c, groupadd, useradd, mkdir, chown) and the libraries of all
    # of it; OpenSSH's client, which the Dockerfile installs when the base lacks it (the worker
    # looks an SSH URL's refs up with it); the interpreter's own libraries are the host's, listed
    # by ldd; all of glibc and the C++ runtime, as Debian's slim image has them (wheels'
    # binaries load librt, libstdc++);
    # tzdata and netbase's files, which python:3.12-slim installs (Django asks for "UTC").
    copy_with_libraries "$root" /bin/dash /usr/sbin/groupadd /usr/sbin/useradd /bin/mkdir \
        /bin/chown /bin/chmod /bin/cp /bin/rm /bin/ls /bin/cat /usr/bin/env /usr/bin/id \
        /usr/bin/ssh /etc/ssl/certs /usr/share/ca-certificates /etc/login.defs /usr/share/zoneinfo \
        /etc/services /etc/protocols \
        "$prefix/bin/python3.12" $(ls "$prefix"/lib/python3.12/lib-dynload/*.so | grep -v _tkinter) \
        $(dpkg -L libc6 libstdc++6 libgcc-s1 | grep -E '^(/usr)?/lib.*/[^/]+\.so[.0-9]*$')
    rm -rf "$root/${prefix#/}"  # ldd named libpython there too; /usr/local/lib has it
    printf '/usr/local/lib\n/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n' >"$root/etc/ld.so.conf"
    ldconfig -r "$root"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    printf 'root:*:19000:0:99999:7:::\n' >"$root/etc/shadow"
    printf 'root:*::\n' >"$root/etc/gshadow"
    chmod 640 "$root/etc/shadow" "$root/etc/gshadow"
    mkdir -p "$root/root"
    # The project's dependencies (and its build backend) as wheels: the build has no network.
    printf '%s\nsetuptools>=69\nwheel\n' "$REQUIREMENTS" >"$WORK/requirements.txt"
    "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$root/wheels" \
        -r "$WORK/requirements.txt" 2> >(grep -v "^WARNING: Location .* is ignored" >&2)
    import_root "$root" "$PYTHON_IMAGE" \
        -c 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'ENV LANG=C.UTF-8' \
        -c 'ENV PIP_NO_INDEX=1' -c 'ENV PIP_FIND_LINKS=/wheels' -c 'CMD ["python3"]'
}

build_postgres() {
    local root=$WORK/postgres bin
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    local version=${bin#/usr/lib/postgresql/}
    version=${version%/bin}
    base_files "$root"
    copy_with_libraries "$root" /bin/dash /usr/bin/setpriv /usr/bin/id /bin/mkdir /bin/chown \
        /bin/chmod /bin/rm /bin/cat "$bin" "/usr/lib/postgresql/$version/lib" \
        "/usr/share/postgresql/$version" /usr/share/zoneinfo "$bin"/* \
        "/usr/lib/postgresql/$version/lib"/*.so
    cp scripts/standins/postgres-entrypoint.sh "$root/usr/local/bin/docker-entrypoint.sh"
    printf 'root:x:0:0:root:/root:/bin/sh\npostgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\npostgres:x:999:\n' >"$root/etc/group"
    mkdir -p "$root/var/lib/postgresql/data"
    import_root "$root" "$POSTGRES_IMAGE" \
        -c "ENV PATH=$bin:/usr/local/bin:/usr/bin:/bin" -c 'ENV PGDATA=/var/lib/postgresql/data' \
        -c 'ENTRYPOINT ["docker-entrypoint.sh"]' -c 'CMD ["postgres"]'
}

build_redis() {
    local root=$WORK/redis
    base_files "$root"
    copy_with_libraries "$root" /bin/dash /usr/bin/redis-server /usr/bin/redis-cli
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\n' >"$root/etc/group"
    mkdir -p "$root/data"
    import_root "$root" "$REDIS_IMAGE" -c 'WORKDIR /data' -c 'CMD ["redis-server"]'
}

build_dind() {
    local context=$WORK/dind
    local base
    # The test suite's own stand-in (its engine), then what docker:dind adds to it.
    base=$(python3 -m tests.support.dind_image)  # $DIND_BASE, built if missing
    mkdir -p "$context/root/usr/local/bin"
    copy_with_libraries "$context/root" /usr/bin/docker /usr/bin/openssl /usr/lib/ssl /usr/lib/os-release \
        /bin/mkdir /bin/cp /bin/chmod /bin/rm /bin/cat
    cp scripts/standins/dockerd-entrypoint.sh "$context/root/usr/local/bin/"
    printf 'FROM %s\nCOPY root/ /\nENV DOCKER_TLS_CERTDIR=/certs\n' "$base" >"$context/Dockerfile"
    printf 'ENTRYPOINT ["dockerd-entrypoint.sh"]\nCMD []\n' >>"$context/Dockerfile"
    docker build --quiet --network none --tag "$DIND_IMAGE" "$context" >/dev/null
    echo "built $DIND_IMAGE"
}

present "$PYTHON_IMAGE" || build_python
present "$POSTGRES_IMAGE" || build_postgres
present "$REDIS_IMAGE" || build_redis
present "$DIND_IMAGE" || build_dind
