"""`./run`: one command starts the site and the worker on this machine, and Ctrl-C stops both."""

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil

from .support import PROJECT_DIR
from .support.gitservers import free_port
from .support.helpers import wait_until


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

        # A task that was running when Ctrl-C came (a schedule's, an email) may take the stop
        # grace (CLONES_STOP_GRACE, 60 s) to finish; a clean exit within it is what is asked.
        assert run.wait(timeout=75) == 0
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


def test_the_scripts_find_a_python_new_enough_on_the_path_and_refuse_an_old_one(tmp_path):
    def find(name: str, python: Path) -> subprocess.CompletedProcess:
        bin_dir = tmp_path / name
        bin_dir.mkdir()
        (bin_dir / "python3").symlink_to(python)
        (bin_dir / "bash").symlink_to("/bin/bash")
        # Only that python3 and bash: no pythonX.Y, no pyenv, no $PYTHON.
        env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
        script = PROJECT_DIR / "scripts" / "python.sh"
        return subprocess.run([script], env=env, capture_output=True, text=True)

    found = find("new", Path(sys.executable))
    assert found.returncode == 0 and Path(found.stdout.strip()).samefile(sys.executable)
    too_old = tmp_path / "python3.11"
    too_old.write_text("#!/bin/sh\nexit 1\n")  # what the version check sees of a 3.11
    too_old.chmod(0o755)
    old = find("old", too_old)
    assert old.returncode == 1 and "No Python 3.12 or newer found" in old.stderr
