"""The Docker seam: the only module that talks to the Docker engine.

It runs git commands in a throwaway container of CLONES_GIT_IMAGE with one job directory (and,
for a build from a mirror, the mirror beside it) bind-mounted, and always removes the container
again. Every docker-py error comes out as an
EngineError whose message a user can act on.
"""

import hashlib
import logging
import os
import re
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import PurePosixPath

import docker
import requests
from django.conf import settings
from docker.constants import DEFAULT_DOCKER_API_VERSION, MINIMUM_DOCKER_API_VERSION
from docker.errors import DockerException, ImageNotFound, NotFound
from docker.types import LogConfig, Mount, Ulimit

logger = logging.getLogger(__name__)

# docker-py raises its own errors for what the engine says, and requests' for a connection lost.
ENGINE_ERRORS = (DockerException, requests.exceptions.RequestException)
JOB_LABEL = "cloneshelf.job"
# The mirror a container writes in (clones.pipeline.mirrors): whoever takes the mirror over
# removes a dead worker's container that may still be fetching into it.
MIRROR_LABEL = "cloneshelf.mirror"
# Installations that share an engine (staging beside production) must not reap each other's
# containers; each has its own data directory on the engine, which names it.
INSTALLATION_LABEL = "cloneshelf.installation"
MOUNT_POINT = "/job"
POLL_SECONDS = 1.0
NOBODY = 65534
CPU_SHARES = 1024  # the engine's default weight, said outright
OUTPUT_TAIL_LINES = 40
LINE_LIMIT = 1000  # characters of git's live output kept
# The kernel stops a process that writes past the fsize ulimit with SIGXFSZ, and git's index-pack
# dies of it without a word: fetch-pack only says "invalid index-pack output", as it does for
# other deaths. Ignored (and inherited through exec), the write fails with EFBIG instead, and git
# says "File too large": the cause in git's own words. alpine/git's busybox provides /bin/sh.
IGNORE_SIGXFSZ = 'trap "" XFSZ'


@dataclass(frozen=True)
class Step:
    """A git command whose standard output goes to `stdout` (a path in the container), and
    whose failure, if `optional`, stops nothing (the file may then be empty)."""

    args: list[str]
    stdout: str
    optional: bool = False


@dataclass(frozen=True)
class UnlessQuiet:
    """`commands`, run in turn unless `git <probe>`, reading its standard input from `stdin` (a
    path in the container), succeeds and prints nothing: work needed only when the probe finds
    something, and done also when the probe itself fails."""

    probe: list[str]
    stdin: str
    commands: list[list[str]]


@dataclass(frozen=True)
class FailIfAny:
    """`git <probe>`, whose output, if it prints any, stops the script: `says` and what the
    probe printed go to standard error (the probe's own exit status counts for nothing)."""

    probe: list[str]
    says: str


Command = list[str] | Step | UnlessQuiet | FailIfAny


def config_options(settings: list[str]) -> list[str]:
    """git's `-c name=value` options, one for each of `settings`, to put before a command."""
    return [option for setting in settings for option in ("-c", setting)]


def git_script(commands: list[Command]) -> list[str]:
    """The container's command line: each `git <args>` in turn, stopping at the first that
    fails (its exit status is the container's). One container for all: each costs a create and
    a start. Every argument is quoted, so nothing in one can be read by the shell."""
    return ["/bin/sh", "-c", f"{IGNORE_SIGXFSZ}; {shell(commands)}"]


def shell(commands: list[Command]) -> str:
    """The commands as one shell line, stopping at the first that fails (git_script's, and a
    line for `git submodule foreach` to run in each submodule)."""
    return " && ".join(_shell_step(command) for command in commands)


def _shell_step(command: Command) -> str:
    if isinstance(command, FailIfAny):
        probe = shlex.join(["git", *command.probe])
        says = shlex.quote(command.says)
        failing = f'{{ echo {says} "$found" >&2; exit 1; }}'
        return f'{{ found=$({probe} 2>/dev/null); [ -z "$found" ] || {failing}; }}'
    if isinstance(command, UnlessQuiet):
        probe = f"{shlex.join(['git', *command.probe])} < {shlex.quote(command.stdin)}"
        then = " && ".join(_shell_step(step) for step in command.commands)
        return f'{{ found=$({probe}) && [ -z "$found" ] || {{ {then}; }}; }}'
    if not isinstance(command, Step):
        return shlex.join(["git", *command])
    step = f"{shlex.join(['git', *command.args])} > {shlex.quote(command.stdout)}"
    return f"{{ {step} || true; }}" if command.optional else step


class EngineError(Exception):
    """The engine or the container failed; the message is written for the person who asked."""


class EngineUnreachable(EngineError):
    """The engine did not answer at all (down, restarting, or the wrong address)."""


class ContainerTimedOut(EngineError):
    """The container ran past its time and was killed."""


@dataclass
class ContainerResult:
    exit_code: int
    output: str  # the last lines git printed, progress meter included
    out_of_memory: bool  # killed by the kernel at the memory limit
    image: str  # the image's id (sha256:…): exactly what ran, whatever its tag says now


@contextmanager
def connected() -> Iterator[docker.DockerClient]:
    """A client configured by DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, speaking the
    newest API version that both docker-py and the engine know; closed afterwards."""
    try:
        options = docker.utils.kwargs_from_env()
        with closing(_client(MINIMUM_DOCKER_API_VERSION, options)) as probe:
            engine_version = probe.version(api_version=False)["ApiVersion"]
        if docker.utils.version_lt(DEFAULT_DOCKER_API_VERSION, engine_version):
            engine_version = DEFAULT_DOCKER_API_VERSION
        engine = _client(engine_version, options)
    except ENGINE_ERRORS as exc:
        raise engine_error(exc) from exc
    with closing(engine):
        try:
            yield engine
        except ENGINE_ERRORS as exc:
            raise engine_error(exc) from exc


def _client(api_version: str, options: dict) -> docker.DockerClient:
    engine = docker.DockerClient(version=api_version, timeout=60, **options)
    # requests would let REQUESTS_CA_BUNDLE (and proxy variables) override the engine's own CA
    # from DOCKER_CERT_PATH (docker-py issue 2433): only the engine's TLS settings may count.
    engine.api.trust_env = False
    return engine


def run_git(
    job_id: str,
    commands: list[Command],
    mount_source: PurePosixPath,
    timeout: float,
    environment: dict[str, str],
    on_phase: Callable[[str], None] = lambda phase: None,
    watch: Callable[[], None] = lambda: None,
    more_mounts: dict[str, PurePosixPath] | None = None,
    labels: dict[str, str] | None = None,
    files: dict[str, PurePosixPath] | None = None,
) -> ContainerResult:
    """Run `git <args>` for each of `commands`, one after another in one container, with
    `mount_source` (an engine-side path) at MOUNT_POINT, and each of `more_mounts` (container
    path -> engine-side path) where it says; each of `files` likewise, read-only; `labels` are
    added to the container's.

    The container is locked down (see hardening()). It is killed after `timeout` seconds
    (ContainerTimedOut), or when `watch`, called about once a second while git runs, raises;
    whatever happens, it is removed.
    """
    with connected() as engine:
        ensure_image(engine, on_phase)
        container = engine.containers.create(
            settings.CLONES_GIT_IMAGE,
            entrypoint=git_script(commands),
            labels={JOB_LABEL: str(job_id), INSTALLATION_LABEL: installation(), **(labels or {})},
            # Mounts (not -v volume strings): the engine refuses a missing source instead of
            # quietly creating an empty directory where we would never look.
            mounts=[
                *(
                    Mount(target=target, source=str(source), type="bind")
                    for target, source in {MOUNT_POINT: mount_source, **(more_mounts or {})}.items()
                ),
                *(
                    Mount(target=target, source=str(source), type="bind", read_only=True)
                    for target, source in (files or {}).items()
                ),
            ],
            working_dir=MOUNT_POINT,
            environment=environment,
            **hardening(),
        )
        live = LiveLine(container)
        try:
            container.start()
            exit_code = wait_or_kill(container, timeout, on_phase, watch, live)
            output = container.logs(stdout=True, stderr=True, tail=OUTPUT_TAIL_LINES)
            container.reload()
            return ContainerResult(
                exit_code=exit_code,
                output="\n".join(output_lines(output)),
                out_of_memory=container.attrs["State"]["OOMKilled"],
                image=container.attrs["Image"],
            )
        finally:
            live.stop()
            remove(container)


class LiveLine:
    """The line git wrote last, read from the container's stderr as it is written.

    The engine's log keeps whole lines only, and git redraws its progress meter with carriage
    returns: read from the log, a clone's progress would show only once a phase is over.
    """

    def __init__(self, container):
        self.latest = ""
        self._stopped = threading.Event()
        # Attached before the container starts, so nothing it writes is missed.
        threading.Thread(target=self._follow, args=(container,), daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    def _follow(self, container) -> None:
        while not self._stopped.is_set():
            try:
                self._read(container.attach(stdout=False, stderr=True, stream=True))
                return  # the container has exited
            except (OSError, *ENGINE_ERRORS):
                # A read timeout in a long silence, or the engine going away: attach again,
                # unless the clone is over.
                self._stopped.wait(POLL_SECONDS)

    def _read(self, stream) -> None:
        unfinished = ""
        for chunk in stream:
            *finished, unfinished = re.split(r"[\r\n]", unfinished + chunk.decode(errors="replace"))
            unfinished = unfinished[-LINE_LIMIT:]  # what a server sends need not end, ever
            lines = [line.strip() for line in finished if line.strip()]
            if lines:
                self.latest = lines[-1][:LINE_LIMIT]


def hardening() -> dict:
    """What a clone container may do: write its job directory (and its repository's mirror) and
    reach the network, no more.

    git runs on input from strangers; if it is ever tricked, it finds no capabilities, no
    writable system, no way to gain privileges, and limits on memory, processes and file sizes.
    """
    uid, gid = container_user()
    nofile, max_file = settings.CLONES_CONTAINER_NOFILE, settings.CLONES_MAX_REPO_BYTES
    return {
        "user": f"{uid}:{gid}",
        "privileged": False,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,noexec,nosuid,nodev,size={settings.CLONES_CONTAINER_TMPFS}"},
        "network_mode": settings.CLONES_NETWORK,
        "init": True,  # a real PID 1 reaps git's children and passes the kill on
        "pids_limit": settings.CLONES_CONTAINER_PIDS,
        # Memory and memory+swap equal: no swap, so a greedy git is killed, not slowed down.
        "mem_limit": settings.CLONES_CONTAINER_MEMORY,
        "memswap_limit": settings.CLONES_CONTAINER_MEMORY,
        # Every clone the same weight: a lone clone may use every core (index-pack and
        # checkout are threaded), and clones at once share them fairly. A hard quota is opt-in.
        "cpu_shares": CPU_SHARES,
        "nano_cpus": int(settings.CLONES_CONTAINER_CPUS * 1e9),  # 0: no quota
        "ulimits": [
            Ulimit(name="nofile", soft=nofile, hard=nofile),
            # No single file larger than the whole repository may be: the kernel enforces it.
            Ulimit(name="fsize", soft=max_file, hard=max_file),
        ],
        "log_config": LogConfig(
            type="json-file",
            config={"max-size": str(settings.CLONES_CONTAINER_LOG_BYTES), "max-file": "1"},
        ),
    }


def container_user() -> tuple[int, int]:
    """The uid:gid clone containers run as: never root, and one whose files we can delete."""
    if settings.CLONES_CONTAINER_USER:
        uid, _, gid = settings.CLONES_CONTAINER_USER.partition(":")
        return int(uid), int(gid or uid)
    if os.getuid() == 0:
        return NOBODY, NOBODY  # root deletes anything; the container still gets no root
    return os.getuid(), os.getgid()


def ensure_image(engine: docker.DockerClient, on_phase: Callable[[str], None]) -> None:
    image = settings.CLONES_GIT_IMAGE
    try:
        engine.images.get(image)
        return
    except ImageNotFound:
        pass
    on_phase(f"pulling image {image}")
    try:
        engine.images.pull(image)
    except ENGINE_ERRORS as exc:
        raise EngineError(
            f"The git image {image} is not on the Docker engine and could not be pulled: "
            f"{describe(exc)}"
        ) from exc


def wait_or_kill(
    container,
    timeout: float,
    on_phase: Callable[[str], None],
    watch: Callable[[], None],
    live: LiveLine,
) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return container.wait(timeout=POLL_SECONDS)["StatusCode"]
        except requests.exceptions.RequestException:
            # Still running (docker-py reports a wait timeout as a connection error). reload()
            # raises again if the engine itself has gone.
            container.reload()
        if time.monotonic() >= deadline:
            container.kill()
            raise ContainerTimedOut()
        watch()  # may raise; the caller's finally removes the container, killing it
        if live.latest:
            on_phase(live.latest[:200])


def output_lines(raw: bytes) -> list[str]:
    """git's output as lines; of a progress meter redrawn with carriage returns, its last state."""
    text = raw.decode(errors="replace")
    lines = [line.rstrip("\r").rsplit("\r", 1)[-1].strip() for line in text.split("\n")]
    return [line for line in lines if line]


def remove(container) -> None:
    try:
        container.remove(force=True)
    except NotFound:
        pass
    except ENGINE_ERRORS as exc:
        # Expected while the engine is down (a clone cut off by it): its words, no traceback.
        logger.warning("could not remove container %s: %s", container.id, describe(exc))


def installation() -> str:
    return hashlib.sha256(str(settings.CLONES_ENGINE_DATA_DIR).encode()).hexdigest()[:16]


def remove_job_containers(job_id: str) -> int:
    """Force-remove every container labelled with this job; how many there were."""
    return _remove_labelled(f"{JOB_LABEL}={job_id}")


def remove_mirror_containers(key: str) -> int:
    """Force-remove every container that was writing in the mirror `key`; how many there were."""
    return _remove_labelled(f"{MIRROR_LABEL}={key}")


def _remove_labelled(label: str) -> int:
    with connected() as engine:
        found = _ours(engine, label)
        for container in found:
            remove(container)
    return len(found)


def job_containers() -> dict[str, str]:
    """Every clone container of this installation on the engine: container id -> job id."""
    with connected() as engine:
        return {container.id: container.labels[JOB_LABEL] for container in _ours(engine, JOB_LABEL)}


def _ours(engine: docker.DockerClient, label: str) -> list:
    """Containers with `label` (name or name=value) made by this installation."""
    filters = {"label": [label, f"{INSTALLATION_LABEL}={installation()}"]}
    # docker-py inspects each container it lists: one removed in between (a job ending while
    # the sweep looks) is skipped rather than failing the whole listing.
    return engine.containers.list(all=True, filters=filters, ignore_removed=True)


def remove_container(container_id: str) -> None:
    with connected() as engine, suppress(NotFound):
        engine.containers.get(container_id).remove(force=True)


def ping() -> None:
    """Raise EngineError unless the engine answers."""
    with connected() as engine:
        engine.ping()


def engine_error(exc: Exception) -> EngineError:
    if isinstance(exc, docker.errors.APIError):
        return EngineError(describe(exc))
    return EngineUnreachable(describe(exc))


def describe(exc: Exception) -> str:
    if isinstance(exc, docker.errors.APIError):
        return f"The Docker engine refused: {exc.explanation or exc}"
    if isinstance(exc, requests.exceptions.Timeout):
        return "The Docker engine is unreachable: it did not answer in time."
    if isinstance(exc, requests.exceptions.ConnectionError):
        # requests' own text is a tuple of reprs, of no use to the person who asked.
        return "The Docker engine is unreachable: the connection to it failed or was cut off."
    return f"The Docker engine is unreachable: {exc}"
