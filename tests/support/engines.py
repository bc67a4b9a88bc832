"""Docker engines of a test's own, beside the shared test engine: for TLS, and for killing.

Like .ci/engine.sh's, they have no bridge network and no iptables rules, so nothing a container
does can leave the machine; the stand-in git image is copied over from the shared engine.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psutil

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
        end_processes_naming(self.root)
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


def end_processes_naming(root: Path) -> None:
    """SIGKILL every process whose command line names `root`, and everything below them.

    A containerd-shim runs in a session of its own, so killing dockerd's process group (kill())
    leaves it, and the container's `runc init` under it, running once the engine is gone: seen
    after whole test runs. Its command line names the engine's containerd socket, in `root`.
    """
    doomed = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(root) in argument for argument in process.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                doomed += [process, *process.children(recursive=True)]
    for process in doomed:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(doomed, timeout=10)


# How the dind container runs here. `--privileged` fails on these machines ("unable to apply
# caps": the capability bounding set lacks CAP_SYS_RESOURCE); this is what DOCKER-HERE.md found
# to work instead. Host networking: the engine listens on 127.0.0.1 and its clone containers
# (network mode host) reach the test git servers there.
DIND_FLAGS = [
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--device-cgroup-rule", "a *:* rwm", "-v", "/sys/fs/cgroup:/sys/fs/cgroup",
    "--network", "host",
]  # fmt: skip
DIND_LABEL = "cloneshelf-test.dind"  # on the container and the volume: who made them
CGROUP_ROOT = Path("/sys/fs/cgroup")


class ContainedEngine(Engine):
    """A dockerd in a container of the shared test engine, as compose runs docker:dind.

    It listens on `host` (tcp://127.0.0.1:PORT) with TLS only: `server_certs` (ca.pem, cert.pem,
    key.pem) verify every client. `mounts` (host path -> path inside) are what it sees of this
    machine; /var/lib/docker is a volume of its own. remove() takes the container, the volume
    and whatever the inner engine left on the host (see below) away.
    """

    def __init__(
        self,
        image: str,
        dind_image: str,
        host: str,
        server_certs: Path,
        client_env: dict[str, str],
        mounts: dict[Path, str],
    ):
        self.name = f"cs-dind-{uuid.uuid4().hex[:12]}"
        self.dind_image, self.server_certs, self.mounts = dind_image, server_certs, mounts
        self.created = False
        tls = ["--tlsverify", "--tlscacert=/certs/ca.pem", "--tlscert=/certs/cert.pem",
               "--tlskey=/certs/key.pem"]  # fmt: skip
        # The host's cgroup tree is mounted in (cgroup v1, no cgroup namespace): with dockerd's
        # default parent, /docker, the inner containers' cgroups would sit beside the shared
        # engine's and outlive a killed engine. A relative parent puts them inside the dind
        # container's own (the shared engine removes those with it); only the cgroup v2 tree
        # of a hybrid set-up, which no engine here manages, keeps them: remove() takes them.
        flags = [*tls, f"--cgroup-parent={self.name}"]
        try:
            super().__init__(image, host, extra_flags=flags, client_env=client_env)
        except BaseException:
            self.remove()  # a half-started engine too: nobody else holds it
            raise

    def start(self) -> None:
        if self.created:  # after kill() or stop(): the same engine, its images kept
            self._shared("start", self.name)
        else:
            self.created = True
            label = f"{DIND_LABEL}={os.getpid()}"
            self._shared("volume", "create", "--label", label, self.name)
            volumes = [f"{self.name}:/var/lib/docker", f"{self.server_certs}:/certs:ro"]
            volumes += [f"{outside}:{inside}" for outside, inside in self.mounts.items()]
            self._shared(
                "run", "-d", "--name", self.name, "--label", label, *DIND_FLAGS,
                # dockerd's and containerd's pid files and sockets: none left for a restart.
                "--tmpfs", "/run",
                *[option for volume in volumes for option in ["-v", volume]],
                self.dind_image, "--host", self.host, *self.extra_flags, *DOCKERD_FLAGS,
            )  # fmt: skip
        self.wait_until_up()

    def wait_until_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_up():
            if time.monotonic() > deadline or not self.running():
                raise RuntimeError(f"the engine in {self.name} did not start:\n{self.log()}")
            time.sleep(0.2)

    def running(self) -> bool:
        state = self._shared("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return state.stdout.strip() == "true"

    def log(self) -> str:
        logs = subprocess.run(["docker", "logs", "--tail", "40", self.name], capture_output=True)
        return (logs.stdout + logs.stderr).decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL the container: dockerd, containerd and every clone in it die at once."""
        self._shared("kill", self.name, check=False)

    def stop(self) -> None:
        """SIGTERM to dockerd, which stops its containers (and removes their cgroups) first."""
        self._shared("stop", "--time", "30", self.name, check=False)

    def remove(self) -> None:
        self.stop()
        self._shared("rm", "--force", "--volumes", self.name, check=False)
        self._shared("volume", "rm", "--force", self.name, check=False)
        remove_cgroups(self.name)
        shutil.rmtree(self.root, ignore_errors=True)

    def exec(self, *command: str) -> subprocess.CompletedProcess:
        """Run `command` in the engine's container (its shell is dash)."""
        return self._shared("exec", self.name, *command, check=False)

    def events(self, label: str, since: float) -> list[str]:
        """What happened since `since` (a time.time()) to containers with this label."""
        return engine_events(self.client_env, label, since)

    def _shared(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """The docker CLI against the shared test engine (this process's DOCKER_HOST)."""
        return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def engine_events(env: dict[str, str], label: str, since: float) -> list[str]:
    """Container events ("create", "start", ...) on the engine `env` names, since `since` until
    now, of containers with this label."""
    result = subprocess.run(
        ["docker", "events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}",
         "--filter", "type=container", "--filter", f"label={label}", "--format", "{{.Action}}"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout.split()


def remove_cgroups(parent: str) -> None:
    """rmdir, deepest first, the cgroups below `parent` in every hierarchy: what is left when a
    contained engine dies without removing its containers (the kernel keeps empty cgroups)."""
    for top in CGROUP_ROOT.glob(f"*/{parent}"):
        for directory, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
            with contextlib.suppress(OSError):
                os.rmdir(directory)


def remove_abandoned_engines() -> None:
    """Remove contained engines (container, volume, cgroups) whose test process is gone: one
    killed before its finalizers ran. Other sessions' engines, still in use, are left alone."""
    owner = f'{{{{.Label "{DIND_LABEL}"}}}}'
    for kind, listing in [
        ("container", ["ps", "--all", "--format", f"{{{{.Names}}}} {owner}"]),
        ("volume", ["volume", "ls", "--format", f"{{{{.Name}}}} {owner}"]),
    ]:
        found = subprocess.run(
            ["docker", *listing, "--filter", f"label={DIND_LABEL}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        for name, pid in (line.split() for line in found.splitlines()):
            if not Path(f"/proc/{pid}").exists():
                remove = ["rm", "--force", *(["--volumes"] if kind == "container" else [])]
                subprocess.run(["docker", kind, *remove, name], capture_output=True)
                remove_cgroups(name)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: Path) -> tuple[Path, Path]:
    """A CA, a server certificate for 127.0.0.1, a client certificate; (server dir, client dir)."""
    server, client = directory / "server", directory / "client"
    server.mkdir()
    client.mkdir()
    # keyUsage: Python 3.13's ssl (docker-py's client) verifies strictly, as public CAs are made.
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", "ca-key.pem", "-out", "ca.pem", cwd=directory)  # fmt: skip
    for name, usage, extra in [
        ("server", "serverAuth", "\nsubjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "clientAuth", ""),
    ]:
        (directory / f"{name}.cnf").write_text(f"extendedKeyUsage={usage}{extra}\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}/key.pem", "-out", f"{name}.csr", cwd=directory)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
                "-CAcreateserial", "-days", "1", "-extfile", f"{name}.cnf",
                "-out", f"{name}/cert.pem", cwd=directory)  # fmt: skip
        shutil.copy(directory / "ca.pem", directory / name / "ca.pem")
    return server, client
