"""A stand-in for the `docker:dind` image that compose runs: Debian's engine in an image.

No registry is reachable on the test machines, so, like .ci/engine.sh's git image, it is made
with `docker import` from this machine's own binaries (docker.io's dockerd, containerd, runc)
and every library that ldd lists for them (/work/shared/DOCKER-HERE.md, "an engine inside a
container"). It takes about a second; it is built once into the shared test engine and reused
while its tag is there. `python -m tests.support.dind_image` builds it ahead of the tests.
"""

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

IMAGE = os.environ.get("CLONESHELF_TEST_DIND_IMAGE", "cloneshelf-test/dind:standin-1")
# dockerd starts containerd and the shims, which start runc; docker-init is each clone
# container's PID 1 (init=True); mount and a shell as docker:dind has them.
PROGRAMS = [
    "dockerd", "containerd", "containerd-shim-runc-v2", "runc", "docker-init", "docker-proxy",
    "dash", "mount", "umount",
]  # fmt: skip
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Two test sessions starting together must not both import (the loser's image would dangle).
LOCK = Path(tempfile.gettempdir()) / "cloneshelf-test-dind-image.lock"


def ensure_image(env: dict[str, str] | None = None) -> str:
    """IMAGE on the engine that `env` (DOCKER_HOST) names, built if its tag is missing."""
    env = env or dict(os.environ)
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _present(env):
            build(env)
    return IMAGE


def _present(env: dict[str, str]) -> bool:
    inspect = ["docker", "image", "inspect", IMAGE]
    return subprocess.run(inspect, env=env, capture_output=True).returncode == 0


def build(env: dict[str, str]) -> None:
    programs = [_which(name) for name in PROGRAMS]
    ldd = subprocess.run(["ldd", *programs], capture_output=True, text=True)  # not all dynamic
    libraries = sorted(set(re.findall(r"(/\S+\.so\S*)", ldd.stdout)))
    with tempfile.TemporaryDirectory(prefix="cs-dind-root-") as root:
        # -h: what symlinks point at (bookworm's /bin is one), so the image holds real files.
        files = [*programs, *libraries, "/etc/ssl/certs", "/usr/share/ca-certificates"]
        packed = subprocess.run(["tar", "-ch", *files], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", root], input=packed, check=True)
        base = Path(root)
        for directory in ["bin", "tmp", "run", "var/lib/docker", "proc", "sys", "dev"]:
            (base / directory).mkdir(parents=True, exist_ok=True)
        (base / "bin" / "sh").symlink_to(_which("dash"))
        (base / "tmp").chmod(0o1777)
        (base / "var" / "run").symlink_to("../run")
        (base / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (base / "etc" / "group").write_text("root:x:0:\n")
        tarball = subprocess.run(["tar", "-C", root, "-c", "."], capture_output=True, check=True)
        subprocess.run(
            # No VOLUME /var/lib/docker (docker:dind has one): its user mounts a named volume,
            # and an anonymous one would outlive a container removed without --volumes.
            ["docker", "import", "-c", 'ENTRYPOINT ["dockerd"]', "-c", f"ENV PATH={SYSTEM_PATH}",
             "-", IMAGE],
            input=tarball.stdout, env=env, capture_output=True, check=True,
        )  # fmt: skip


def _which(name: str) -> str:
    found = shutil.which(name, path=SYSTEM_PATH)
    if not found:
        raise RuntimeError(f"{name} is missing: install Debian's docker.io (.ci/engine.sh does)")
    return found


if __name__ == "__main__":
    os.environ.setdefault("DOCKER_HOST", "unix:///run/cloneshelf-test-docker.sock")
    print(ensure_image())
