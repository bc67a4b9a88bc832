"""The README's production command, `docker compose up`, run for real: compose.yaml's services
built and started by Debian's docker-compose on the shared test engine, a clone submitted
through the site's port, and the stack taken down and up again, its worker restarted mid-clone.

No registry is reachable here, so the images are local stand-ins (scripts/standin_images.sh,
which .ci/run runs first): the app is built from the Dockerfile on a Python of this machine's,
PostgreSQL and Redis are Debian's, the engine is Debian's dockerd in the dind stand-in, which
makes its own certificates as docker:dind does. tests/compose.test.yaml puts every service on
the host's network, on 127.0.0.1 and ports of this test's (nothing leaves the machine); the one
change compose v1 cannot make in an override file, dropping web's published port (host
networking publishes nothing), is made in the merged file that compose itself writes.

About two minutes with the images there, up to three with a cold build of the app image,
after the stand-ins' 24 s on a fresh machine (measured with another test run beside it): the
README's "Run it with Docker Compose" has the figures.
"""

import hashlib
import html
import http.cookiejar
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml
from django.conf import settings

from .support import PROJECT_DIR
from .support.engines import make_certificates, remove_cgroups
from .support.gitservers import GitHTTPServer, free_port
from .support.helpers import assert_is_clean_checkout
from .support.repos import git

OVERRIDE = PROJECT_DIR / "tests" / "compose.test.yaml"
APP_IMAGE = "cloneshelf-composetest/app:latest"  # kept between runs: the build's cache
UP_SECONDS = 300  # a cold build of the app image included
JOB_SECONDS = 120
PROJECT_PREFIX = "cloneshelf-composetest-"


def standin_images() -> dict[str, str]:
    listing = subprocess.run(
        ["bash", str(PROJECT_DIR / "scripts" / "standin_images.sh"), "--tags"],
        capture_output=True, text=True,
    )  # fmt: skip
    if listing.returncode != 0:
        pytest.skip(f"scripts/standin_images.sh --tags: {listing.stderr.strip()}")
    return dict(line.split("=", 1) for line in listing.stdout.split())


def remove_abandoned_projects() -> None:
    """Containers, volumes and cgroups of compose projects whose test process is gone (killed
    before its teardown); other sessions' projects, still running, are left alone."""
    for kind, listing in [("container", ["ps", "-a"]), ("volume", ["volume", "ls"])]:
        found = subprocess.run(
            ["docker", *listing, "--quiet", "--filter", "label=com.docker.compose.project"],
            capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
        for item in found:
            project = subprocess.run(
                ["docker", kind, "inspect", "--format",
                 '{{index .Labels "com.docker.compose.project"}}', item]
                if kind == "volume" else
                ["docker", "inspect", "--format",
                 '{{index .Config.Labels "com.docker.compose.project"}}', item],
                capture_output=True, text=True,
            ).stdout.strip()  # fmt: skip
            if not project.startswith(PROJECT_PREFIX):
                continue
            pid = project.removeprefix(PROJECT_PREFIX).split("-")[0]
            if pid.isdecimal() and not Path(f"/proc/{pid}").exists():
                remove = ["rm", "--force", *(["--volumes"] if kind == "container" else [])]
                subprocess.run(["docker", kind, *remove, item], capture_output=True)
                remove_cgroups(f"{project}-dind")


class Stack:
    """One compose project on the shared test engine: `docker-compose -p NAME -f merged`."""

    def __init__(self, directory: Path):
        # Whose it is: remove_abandoned_projects() reads the pid back.
        self.name = f"{PROJECT_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.ports = {name: free_port() for name in ["DB", "REDIS", "WEB", "ENGINE"]}
        self.db_password = secrets.token_urlsafe(16)
        images = standin_images()
        missing = [tag for tag in images.values() if not _image_present(tag)]
        if missing:
            pytest.skip(
                f"stand-in images missing ({', '.join(missing)}): run scripts/standin_images.sh"
                " (.ci/run does; it needs Debian's postgresql and redis-server, and PyPI)"
            )
        # Only what compose.yaml is meant to read: none of the test settings' CLONES_*.
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "DOCKER_HOST": os.environ["DOCKER_HOST"],
            "COMPOSE_PROJECT_NAME": self.name,
            "CLONESHELF_DB_PASSWORD": self.db_password,
            # DJANGO_HTTPS as compose.yaml has it (1): Browser plays the TLS proxy's part.
            "CLONES_ALLOWED_SCHEMES": "http,ssh",
            "CLONES_GIT_IMAGE": settings.CLONES_GIT_IMAGE,
            "CS_TEST_APP_IMAGE": APP_IMAGE,
            "CS_TEST_PYTHON_IMAGE": images["python"],
            "CS_TEST_POSTGRES_IMAGE": images["postgres"],
            "CS_TEST_REDIS_IMAGE": images["redis"],
            "CS_TEST_DIND_IMAGE": images["dind"],
            **{f"CS_TEST_{name}_PORT": str(port) for name, port in self.ports.items()},
        }
        merged = yaml.safe_load(
            self._run("-f", "compose.yaml", "-f", str(OVERRIDE), "config", merged=False).stdout
        )
        web = merged["services"]["web"]
        assert web.pop("ports") == [{"published": 8000, "target": 8000}]
        # The healthcheck is compose.yaml's but for the port it asks.
        ours = yaml.safe_load((PROJECT_DIR / "compose.yaml").read_text())["services"]["web"]
        asked = f"127.0.0.1:{self.ports['WEB']}"
        assert web["healthcheck"]["test"] == [
            part.replace("127.0.0.1:8000", asked) for part in ours["healthcheck"]["test"]
        ]
        self.file = directory / "compose.yaml"
        self.file.write_text(yaml.safe_dump(merged))
        self.url = f"http://127.0.0.1:{self.ports['WEB']}"

    def _run(self, *args: str, merged: bool = True, timeout: float = 120, **options):
        files = ["-f", str(self.file), "--project-directory", str(PROJECT_DIR)] if merged else []
        result = subprocess.run(
            ["docker-compose", *files, "--profile", "redis", *args],
            cwd=PROJECT_DIR, env=self.env, capture_output=True, text=True, timeout=timeout,
            **options,
        )  # fmt: skip
        assert result.returncode == 0, f"docker-compose {' '.join(args)}:\n{result.stderr}"
        return result

    def compose(self, *args: str, timeout: float = 120) -> str:
        return self._run(*args, timeout=timeout).stdout

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).strip()

    def state(self, service: str) -> str:
        """running, exited, ... or, with a healthcheck, healthy / starting / unhealthy."""
        template = "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}"
        inspect = ["docker", "inspect", "--format", template, self.container(service)]
        status, _, health = (
            subprocess.run(inspect, capture_output=True, text=True).stdout.strip().partition(" ")
        )
        return health or status

    def wait_until_up(self, timeout: float = UP_SECONDS) -> None:
        """migrate exited 0, every long-running service healthy."""
        deadline = time.monotonic() + timeout
        wanted = {
            "migrate": "exited",
            **dict.fromkeys(["db", "redis", "docker", "web", "worker"], "healthy"),
        }
        while (states := {s: self.state(s) for s in wanted}) != wanted:
            exit_code = subprocess.run(
                ["docker", "inspect", "--format", "{{.State.ExitCode}}", self.container("migrate")],
                capture_output=True, text=True,
            ).stdout.strip()  # fmt: skip
            assert exit_code in {"0", ""}, f"migrate failed:\n{self.logs('migrate')}"
            assert time.monotonic() < deadline, f"not up after {timeout} s: {states}\n{self.logs()}"
            time.sleep(2)

    def logs(self, *services: str, tail: str = "60") -> str:
        result = subprocess.run(
            ["docker-compose", "-f", str(self.file), "--project-directory", str(PROJECT_DIR),
             "--profile", "redis", "logs", "--no-color", "--tail", tail, *services],
            cwd=PROJECT_DIR, env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return result.stdout + result.stderr

    def job(self, job_id: str) -> dict:
        """The job's row, read from the compose database over its port."""
        dsn = f"postgresql://cloneshelf:{self.db_password}@127.0.0.1:{self.ports['DB']}/cloneshelf"
        with psycopg.connect(dsn) as connection:
            row = connection.execute(
                "SELECT status, error, attempts, archive_sha256 FROM clones_clonejob WHERE id = %s",
                [job_id],
            ).fetchone()
        return dict(zip(["status", "error", "attempts", "sha256"], row, strict=True))

    def wait_for_job(self, job_id: str, timeout: float = JOB_SECONDS) -> dict:
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["status"] in {"queued", "running"}:
            assert time.monotonic() < deadline, f"job {job}\n{self.logs('worker')}"
            time.sleep(0.5)
        return job

    def remove(self) -> None:
        """down -v: containers, volumes and the network-less project gone; then the cgroups the
        inner engine's containers had (tests/support/engines.py says why)."""
        if self.file.exists():
            subprocess.run(
                ["docker-compose", "-f", str(self.file), "--project-directory", str(PROJECT_DIR),
                 "--profile", "redis", "down", "--volumes", "--remove-orphans", "--timeout", "10"],
                cwd=PROJECT_DIR, env=self.env, capture_output=True, timeout=180,
            )  # fmt: skip
        remove_cgroups(f"{self.name}-dind")


def _image_present(tag: str) -> bool:
    return bool(image_id(tag))


def image_id(tag: str) -> str:
    inspect = ["docker", "image", "inspect", "--format", "{{.Id}}", tag]
    return subprocess.run(inspect, capture_output=True, text=True).stdout.strip()


class Browser:
    """A logged-in session on the site, over its port, as a user's browser has one behind the
    TLS-terminating proxy compose.yaml expects: each request says X-Forwarded-Proto: https,
    each POST carries the https Origin a browser sends, and the secure cookies go back."""

    def __init__(self, url: str, user: str, password: str):
        self.url = url
        cookies = http.cookiejar.CookieJar(policy=ProxiedCookiePolicy())
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies))
        self.opener.addheaders = [("X-Forwarded-Proto", "https")]
        response = self.post("/accounts/login/", {"username": user, "password": password})
        assert urllib.parse.urlparse(response.url).path == "/", "the login was refused"
        # The site took the proxy's word: https only cookies, and HSTS.
        assert {cookie.name: cookie.secure for cookie in cookies}["sessionid"] is True
        assert "Strict-Transport-Security" in response.headers

    def get(self, path: str):
        return self.opener.open(self.url + path, timeout=30)

    def post(self, path: str, fields: dict[str, str], form_page: str = ""):
        """POST `fields` to `path`, with the CSRF token of the page that has the form (`path`
        itself unless `form_page` says another)."""
        page = self.get(form_page or path).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
        body = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": token}).encode()
        origin = self.url.replace("http://", "https://")
        request = urllib.request.Request(self.url + path, data=body, headers={"Origin": origin})
        return self.opener.open(request, timeout=30)

    def submit(self, url: str, **options: str) -> str:
        """The new job's id, from the page the form redirects to."""
        response = self.post("/", {"url": url, **options})
        path = urllib.parse.urlparse(response.url).path
        return re.fullmatch(r"/clones/([0-9a-f-]{36})/", path)[1]

    def download(self, job_id: str, into: Path) -> tuple[str, Path]:
        """(sha256 of the download, the checkout in it); the .sha256 beside it must agree."""
        into.mkdir()
        archive = into / f"{job_id}.tar"
        with self.get(f"/clones/{job_id}/download") as response, archive.open("wb") as file:
            shutil.copyfileobj(response, file)
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        assert self.get(f"/clones/{job_id}/download.sha256").read().decode().split()[0] == digest
        target = into / job_id
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="tar")
        [top] = target.iterdir()
        return digest, top


class ProxiedCookiePolicy(http.cookiejar.DefaultCookiePolicy):
    """Secure cookies go back over the plain http between proxy and site."""

    def return_ok_secure(self, cookie, request) -> bool:
        return True


class CountingEvent(threading.Event):
    """An event that counts the waits on it: GitHTTPServer waits once for each held fetch."""

    def __init__(self):
        super().__init__()
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return super().wait(timeout)


def docker_cli(host: str, *tls: str, home: Path) -> subprocess.CompletedProcess:
    """`docker version` against `host` with only the TLS options given (no DOCKER_* settings, an
    empty configuration directory)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("DOCKER_")}
    return subprocess.run(
        ["docker", "--config", str(home), "-H", host, *tls, "version"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.fixture
def stack(tmp_path):
    if not shutil.which("docker-compose"):
        pytest.skip("docker-compose is missing: Debian's docker-compose (.ci/run installs it)")
    remove_abandoned_projects()
    stack = Stack(tmp_path)
    try:
        yield stack
    finally:
        if keep := os.environ.get("CLONESHELF_TEST_KEEP_COMPOSE"):  # to look at after a failure
            print(f"kept: docker-compose -f {stack.file} -p {stack.name} ...")
        else:
            stack.remove()
    if keep:
        return
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.name}"],
        capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    volumes = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"name={stack.name}"],
        capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    assert left == [] and volumes == [], (left, volumes)


def test_compose_up_boots_clones_and_keeps_its_history_over_restarts(
    stack, new_repo, git_http, served_root, sshd, tmp_path
):
    try:
        boot_clone_restart(stack, new_repo, git_http, served_root, sshd, tmp_path)
    except BaseException:
        print(stack.logs())  # what the services said, for the failure's report
        raise


def boot_clone_restart(stack, new_repo, git_http, served_root, sshd, tmp_path):
    timings = {}
    started = time.monotonic()

    # up: the app image built on the stand-in Python, migrate done, every service healthy.
    # (`up --build`, in two steps: a failed build's container is removed too.)
    before = image_id(APP_IMAGE)
    stack.compose("build", "--force-rm", timeout=UP_SECONDS)
    if before and before != image_id(APP_IMAGE):  # the code changed: the old build is no use
        subprocess.run(["docker", "rmi", before], capture_output=True)
    stack.compose("up", "--detach", timeout=UP_SECONDS)
    stack.wait_until_up()
    timings["up (build included)"] = time.monotonic() - started
    log = stack.logs("migrate")
    assert "[ERROR]" not in stack.logs("web"), stack.logs("web")  # gunicorn's own complaints
    password = re.search(r"Created the admin 'admin' with the password (\S+) ", log)[1]
    # The engine in `docker` starts empty, as docker:dind does; the worker would pull alpine/git
    # from a registry. Here the stand-in git image is loaded into it.
    saved = subprocess.run(
        ["docker", "save", settings.CLONES_GIT_IMAGE], capture_output=True, check=True
    )
    subprocess.run(
        ["docker", "exec", "-i", stack.container("docker"), "docker", "load"],
        input=saved.stdout, capture_output=True, check=True,
    )  # fmt: skip

    # The engine answers only TLS clients with the certificate it made for the worker.
    certs = tmp_path / "certs"
    subprocess.run(
        ["docker", "cp", f"{stack.container('worker')}:/certs/client", certs], check=True
    )
    engine = f"tcp://127.0.0.1:{stack.ports['ENGINE']}"
    ca = f"--tlscacert={certs}/ca.pem"
    stranger = make_certificates(tmp_path)[1]
    plain = docker_cli(engine, home=tmp_path)
    assert plain.returncode != 0
    assert "Client sent an HTTP request to an HTTPS server." in plain.stderr
    for refused in [
        docker_cli(engine, "--tlsverify", ca, home=tmp_path),
        docker_cli(engine, "--tlsverify", ca, f"--tlscert={stranger}/cert.pem",
                   f"--tlskey={stranger}/key.pem", home=tmp_path),
    ]:  # fmt: skip
        assert refused.returncode != 0
        assert "remote error: tls: bad certificate" in refused.stderr
    ours = docker_cli(engine, "--tlsverify", ca, f"--tlscert={certs}/cert.pem",
                      f"--tlskey={certs}/key.pem", home=tmp_path)  # fmt: skip
    assert ours.returncode == 0, ours.stderr

    # A clone through the site's port: done, and the download is what its sha256 says.
    repo = new_repo()
    browser = Browser(stack.url, "admin", password)
    first = browser.submit(git_http.url(repo.name))
    job = stack.wait_for_job(first)
    assert job["status"] == "done", f"{job}\n{stack.logs('worker')}"
    digest, checkout = browser.download(first, tmp_path / "first")
    assert digest == job["sha256"]
    assert_is_clean_checkout(checkout, repo.head)
    timings["first clone"] = time.monotonic() - started - sum(timings.values())

    # With a submodule: the site offers the option (it knows the worker's egress proxy is on),
    # and the worker fetches the submodule through its proxy.
    superproject = with_submodule(served_root, git_http.url(new_repo().name))
    nested = browser.submit(git_http.url(superproject), submodules="on")
    job = stack.wait_for_job(nested)
    assert job["status"] == "done", f"{job}\n{stack.logs('worker')}"
    _digest, checkout = browser.download(nested, tmp_path / "submodules")
    assert (checkout / "lib" / "docs" / "guide.txt").read_text() == "how to use it\n"
    timings["a clone with a submodule"] = time.monotonic() - started - sum(timings.values())

    # Over SSH: a key made on the profile page, the host's key added in the admin; the worker's
    # ref lookup runs the app image's ssh, the clone the git image's.
    browser.post("/profile/ssh-key", {}, form_page="/profile/")
    profile = browser.get("/profile/").read().decode()
    public_key = re.search(r'id="ssh-public-key" type="text" value="([^"]+)"', profile)[1]
    sshd.authorize(html.unescape(public_key))
    browser.post("/admin/clones/knownhost/add/", {"line": sshd.known_hosts_line()})
    repo = new_repo()
    over_ssh = browser.submit(sshd.url(served_root / repo.name))
    job = stack.wait_for_job(over_ssh)
    assert job["status"] == "done", f"{job}\n{stack.logs('worker')}"
    assert_is_clean_checkout(browser.download(over_ssh, tmp_path / "ssh")[1], repo.head)
    timings["a clone over ssh"] = time.monotonic() - started - sum(timings.values())

    # down and up again: the history, the admin and the archive are still there.
    stack.compose("down", timeout=180)
    stack.compose("up", "--detach", timeout=UP_SECONDS)
    stack.wait_until_up()
    assert "Created the admin" not in stack.logs("migrate")  # a new container: this start's
    browser = Browser(stack.url, "admin", password)
    assert first in browser.get("/clones/").read().decode()
    assert browser.download(first, tmp_path / "again")[0] == digest
    timings["down, up again"] = time.monotonic() - started - sum(timings.values())

    # The worker container restarted while its clone is fetching: the clone is handed back
    # (CLONES_STOP_GRACE), and the restarted worker takes it up again and finishes it.
    release = CountingEvent()
    held = GitHTTPServer(served_root, hold_fetches=release)
    try:
        repo = new_repo()
        second = browser.submit(held.url(repo.name))
        deadline = time.monotonic() + JOB_SECONDS
        while release.waits < 1:  # git's fetch has reached the server, which holds it
            assert time.monotonic() < deadline, f"{stack.job(second)}\n{stack.logs('worker')}"
            time.sleep(0.2)
        stack.compose("restart", "worker", timeout=240)  # SIGTERM, within stop_grace_period
        # Handed back, not failed: queued, or already taken up by the worker started anew.
        assert stack.job(second)["status"] in {"queued", "running"}
        assert "stopping: running clones have 3 s to finish" in stack.logs("worker", tail="all")
        release.set()
        job = stack.wait_for_job(second)
    finally:
        release.set()
        held.stop()
    assert job["status"] == "done", f"{job}\n{stack.logs('worker')}"
    # Fetched twice: once by the worker stopped, once by the one started in its place. A clone
    # handed back on a stop is not counted as an attempt (clones/jobs.py).
    assert release.waits == 2 and job["attempts"] == 1, (release.waits, job)
    digest, checkout = browser.download(second, tmp_path / "second")
    assert digest == job["sha256"]
    assert_is_clean_checkout(checkout, repo.head)
    timings["worker restarted mid-clone"] = time.monotonic() - started - sum(timings.values())
    print(", ".join(f"{step}: {seconds:.0f} s" for step, seconds in timings.items()))


def with_submodule(served_root: Path, url: str) -> str:
    """A served repository whose one submodule, at `lib`, is the repository at `url`; its name."""
    work = served_root.parent / "work" / f"with-submodule-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    git("init", "--quiet", "--initial-branch=main", cwd=work)
    git("submodule", "add", "--quiet", url, "lib", cwd=work)
    git("commit", "--quiet", "-m", "with a submodule", cwd=work)
    git("clone", "--quiet", "--bare", str(work), str(served_root / f"{work.name}.git"), cwd=work)
    return f"{work.name}.git"


def test_what_users_run_names_the_real_images_only():
    """The stand-ins stay in the test's files: the Dockerfile's base and compose.yaml's images
    are the real ones, and the engine is privileged as docker:dind needs."""
    dockerfile = (PROJECT_DIR / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.12-slim$", dockerfile, re.MULTILINE)
    assert re.findall(r"^FROM .*$", dockerfile, re.MULTILINE) == ["FROM ${BASE_IMAGE}"]
    compose = (PROJECT_DIR / "compose.yaml").read_text()
    services = yaml.safe_load(compose)["services"]
    images = {name: service.get("image") for name, service in services.items()}
    assert images == {
        "db": "postgres:17",
        "redis": "redis:7",
        "migrate": "cloneshelf:latest",
        "web": "cloneshelf:latest",
        "worker": "cloneshelf:latest",
        "docker": "docker:28-dind",
    }
    assert all(services[name]["build"] == "." for name in ["migrate", "web", "worker"])
    assert services["docker"]["privileged"] is True
    assert not any("network_mode" in service for service in services.values())
    said = [
        line for line in (compose + dockerfile).splitlines() if not line.lstrip().startswith("#")
    ]
    assert not [line for line in said if "standin" in line or "composetest" in line]
