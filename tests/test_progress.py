"""A running job says how far along it is: git's progress meter, read as it comes, throttled
into the job's row, against a real server that sends slowly."""

import time

from clones.models import Status

from .support.gitservers import GitHTTPServer
from .support.helpers import submit


def test_a_clone_from_a_slow_server_shows_growing_percentages_before_it_is_done(
    owner_client, start_worker, new_repo, served_root
):
    slow = GitHTTPServer(served_root, rate=400 * 1024)  # 2 MiB of history: about 5 s
    repo = new_repo("slow", extra_bytes=2 * 2**20)
    start_worker()
    job = submit(owner_client, slow.url(repo.name))

    seen = []
    deadline = time.monotonic() + 120
    while job.is_active and time.monotonic() < deadline:
        job.refresh_from_db()
        if job.progress is not None:
            seen.append((job.phase, job.progress))
        time.sleep(0.1)
    slow.stop()

    assert job.status == Status.DONE, job.error
    receiving = [percent for phase, percent in seen if phase == "Receiving objects"]
    assert len(set(receiving)) >= 3, seen
    assert receiving == sorted(receiving)
    assert job.progress is None and job.phase == ""  # a finished job is doing nothing
