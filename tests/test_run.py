"""`./run`: one command starts the site and the worker on this machine, and Ctrl-C stops both."""

import os
import signal
import subprocess
import sys
import urllib.request

import psutil

from .conftest import PROJECT_DIR
from .gitservers import free_port
from .helpers import wait_until


def healthz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status
    except OSError:
        return None


def alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_run_starts_the_site_and_the_worker_and_ctrl_c_stops_both(tmp_path, new_repo, git_http):
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_SETTINGS_MODULE", "CLONESHELF_TEST"))
    }
    env |= {
        "CLONES_DATA_DIR": str(tmp_path / "data"),  # a first start: nothing there
        "CLONESHELF_PORT": str(port),
        "DJANGO_SECRET_KEY": "",  # made and kept on the first start
        "CLONESHELF_ADMIN_PASSWORD": "",
    }
    env.pop("DATABASE_URL", None)
    log = (tmp_path / "run.log").open("wb")
    run = subprocess.Popen(
        ["./run"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a terminal's foreground group, as Ctrl-C reaches it
    )
    try:
        wait_until(lambda: healthz(port) == 200, timeout=60, what="the site to answer /healthz")
        children = psutil.Process(run.pid).children(recursive=True)
        assert any("worker" in " ".join(child.cmdline()) for child in children)
        url = git_http.url(new_repo().name)
        clone = subprocess.run(
            [sys.executable, "manage.py", "clone", url, "--user", "admin", "--wait"],
            cwd=PROJECT_DIR, env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert "status done" in clone.stdout, clone.stderr

        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C

        assert run.wait(timeout=30) == 0
        wait_until(
            lambda: not [child for child in children if alive(child)],
            timeout=15,
            what="every process ./run started to exit",
        )
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        log.close()
    output = (tmp_path / "run.log").read_text()
    assert "Created the admin 'admin' with the password" in output
    assert (tmp_path / "data" / "secret_key").is_file()
    assert output.rstrip().endswith("cloneshelf stopped.")
