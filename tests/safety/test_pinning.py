"""git reaches exactly the address the worker checked, right before cloning.

The worker's task runs in this process here, so the resolver can be stubbed; git itself runs in
a real container on the test engine. No test resolves a real name or leaves 127.0.0.0/8.
"""

import pytest

from clones import jobs, tasks
from clones.models import Status

from ..support.gitservers import GitDaemon, GitHTTPServer
from ..support.helpers import assert_left_nothing_behind, submit


@pytest.mark.parametrize("server_class", [GitHTTPServer, GitDaemon])
def test_git_connects_to_the_checked_address_not_to_what_its_own_lookup_says(
    server_class, owner, production_policy, dns, served_root, new_repo
):
    # The container would look "localhost" up as 127.0.0.1, where nothing listens on this port;
    # the worker checked 127.0.0.2, where the server is. Only a pinned git gets there.
    server = server_class(served_root, host="127.0.0.2")
    production_policy.CLONES_ALLOWED_PRIVATE_HOSTS = ["localhost"]
    dns["localhost"] = ["127.0.0.2"]
    repo = new_repo()
    scheme = "http" if server_class is GitHTTPServer else "git"
    job = jobs.submit(owner, f"{scheme}://localhost:{server.port}/{repo.name}")

    tasks.run_clone_job(str(job.id))

    job.refresh_from_db()
    assert job.status == Status.DONE, job.error
    assert job.commit == repo.head
    server.stop()


def test_a_name_that_rebinds_to_a_private_address_is_refused_by_the_worker(
    owner_client, production_policy, dns
):
    # At submission the name answers a "public" address: a documentation address the test lets
    # through, which nothing ever connects to. By the time the worker runs, it answers loopback.
    production_policy.CLONES_ALLOWED_PRIVATE_HOSTS = ["192.0.2.0/24"]
    dns["rebind.example"] = ["192.0.2.10"]
    job = submit(owner_client, "https://rebind.example/team/repo.git")
    dns["rebind.example"] = ["127.0.0.1"]

    tasks.run_clone_job(str(job.id))

    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert job.error == (
        "rebind.example resolves to 127.0.0.1, a private or reserved address; "
        "only public git servers can be cloned."
    )
    assert_left_nothing_behind(job)
