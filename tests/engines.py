"""Docker engines of a test's own, beside the shared test engine: for TLS, and for killing.

Like .ci/engine.sh's, they have no bridge network and no iptables rules, so nothing a container
does can leave the machine; the stand-in git image is copied over from the shared engine.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

DOCKERD_FLAGS = ["--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false"]


class Engine:
    """A dockerd on `host` (a unix socket of its own unless given), with its own data root."""

    def __init__(
        self,
        image: str,
        host: str = "",
        extra_flags: list[str] | None = None,
        client_env: dict[str, str] | None = None,
    ):
        # Short: containerd's socket path must fit in 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="cs-engine-"))
        self.host = host or f"unix://{self.root}/docker.sock"
        self.extra_flags = extra_flags or []
        # How a docker client (the CLI, or a worker) reaches this engine.
        self.client_env = {**os.environ, "DOCKER_HOST": self.host, **(client_env or {})}
        self.process: subprocess.Popen | None = None
        self.start()
        self.copy_image(image)

    def start(self) -> None:
        # A dockerd killed with -9 leaves its pid files: a new one would refuse to start.
        for stale in ["dockerd.pid", "exec/containerd/containerd.pid"]:
            (self.root / stale).unlink(missing_ok=True)
        self.process = subprocess.Popen(
            ["dockerd", "--host", self.host, *self.extra_flags,
             "--data-root", f"{self.root}/docker", "--exec-root", f"{self.root}/exec",
             "--pidfile", f"{self.root}/dockerd.pid", *DOCKERD_FLAGS],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "dockerd.log", "ab"),  # noqa: SIM115
            start_new_session=True,
        )  # fmt: skip
        self.wait_until_up()

    def wait_until_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_up():
            if time.monotonic() > deadline:
                log = (self.root / "dockerd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the engine at {self.host} did not start:\n{log}")
            time.sleep(0.3)

    def is_up(self) -> bool:
        result = subprocess.run(["docker", "info"], env=self.client_env, capture_output=True)
        return result.returncode == 0

    def kill(self) -> None:
        """SIGKILL dockerd and its containerd: the engine dies as in a crash."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def remove(self) -> None:
        self.stop()
        # dockerd leaves mounts below its roots (netns, overlay); deepest first, then the tree.
        with open("/proc/self/mountinfo") as mountinfo:
            mounts = [line.split()[4] for line in mountinfo]
        for mount in sorted((m for m in mounts if m.startswith(f"{self.root}/")), reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def copy_image(self, image: str) -> None:
        saved = subprocess.run(["docker", "save", image], capture_output=True, check=True).stdout
        subprocess.run(
            ["docker", "load"], input=saved, env=self.client_env, capture_output=True, check=True
        )

    def containers(self, label: str) -> list[str]:
        """Ids of the containers (running or not) with this label."""
        result = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={label}"],
            env=self.client_env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return result.stdout.split()
