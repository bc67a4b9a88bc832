"""How long a dead worker's job waits before another worker takes it up, with the default
heartbeat (CLONES_HEARTBEAT_SECONDS=5, lost after four) and recovery schedule (every minute).

    .venv/bin/python scripts/recovery_time.py [--rounds 3]

Needs the test engine (`bash .ci/engine.sh`); starts a Docker engine of its own. Each round: a
worker takes a job against a slow git server, a second worker is started, the first one's
whole process group is SIGKILLed mid-clone, and the script times kill -> the job running again
on the survivor, and kill -> done. Nothing calls the sweep early: django-q2's own scheduler
runs it. A script, not a test: it prints figures and asserts nothing.
"""

import argparse
import statistics
import time

import harness

ROOT = harness.setup_django("cloneshelf-recovery-")

from django.conf import settings  # noqa: E402

from clones import jobs  # noqa: E402
from clones.models import CloneJob, Status  # noqa: E402
from tests.support.gitservers import GitHTTPServer  # noqa: E402
from tests.support.repos import make_repo  # noqa: E402


def wait_for(condition, timeout: float = 600) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise SystemExit("gave up waiting")
        time.sleep(0.1)
    return time.monotonic()


def one_round(owner, url: str, number: int) -> tuple[float, float]:
    doomed = harness.start_worker(ROOT / f"doomed-{number}.log", {"CLONES_WORKERS": "1"})
    job = jobs.submit(owner, url)
    wait_for(lambda: CloneJob.objects.filter(pk=job.pk, status=Status.RUNNING).exists())
    survivor = harness.start_worker(ROOT / f"survivor-{number}.log", {"CLONES_WORKERS": "1"})
    time.sleep(3)  # well into the clone: every request to the server takes three seconds
    doomed.kill()
    killed = time.monotonic()
    running_again = wait_for(lambda: CloneJob.objects.get(pk=job.pk).attempts == 2)
    done = wait_for(lambda: not CloneJob.objects.get(pk=job.pk).is_active)
    job.refresh_from_db()
    survivor.stop(grace=30)
    if job.status != Status.DONE:
        raise SystemExit(f"round {number}: the job ended {job.status}: {job.error}")
    return running_again - killed, done - killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    served = ROOT / "served"
    served.mkdir(parents=True)
    with harness.private_engine():
        harness.migrate()
        (owner,) = harness.create_users(["recovery"])
        server = GitHTTPServer(served, delay=3)
        url = server.url(make_repo(served, "slow").name)
        beat = settings.CLONES_HEARTBEAT_SECONDS
        print(f"heartbeat every {beat} s, lost after {4 * beat} s; sweep every minute")
        taken_up, finished = [], []
        try:
            for number in range(1, options.rounds + 1):
                again, done = one_round(owner, url, number)
                taken_up.append(again)
                finished.append(done)
                print(
                    f"round {number}: running again {again:.1f} s after the kill, done {done:.1f} s"
                )
        finally:
            server.stop()
        print(
            f"kill -> running again: median {statistics.median(taken_up):.1f} s, "
            f"max {max(taken_up):.1f} s; kill -> done: median {statistics.median(finished):.1f} s"
        )
    harness.remove(ROOT)


if __name__ == "__main__":
    main()
