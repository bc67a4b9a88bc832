"""A burst: 100 submissions from 5 users within a few seconds, one worker cluster of two workers.
Every job ends done with an archive of its own repository, and nothing is left behind."""

import hashlib
import itertools
import tarfile

import pytest
from django.core.files.storage import default_storage
from django.test import Client

from clones.models import CloneJob, Status
from clones.pipeline import paths

from .support.helpers import submit, wait_until
from .support.repos import make_tiny_repo

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

JOBS, USERS = 100, 5


def test_a_burst_of_100_jobs_from_5_users_all_complete_faithfully(
    settings, django_user_model, start_worker, served_root, git_daemon, git_http
):

    settings.CLONES_MAX_ACTIVE_PER_USER = JOBS
    settings.CLONES_MAX_SUBMISSIONS_PER_HOUR = JOBS
    clients = []
    for number in range(USERS):
        client = Client()
        client.force_login(django_user_model.objects.create_user(f"user{number}"))
        clients.append(client)
    repos = [make_tiny_repo(served_root, f"burst-{number}") for number in range(JOBS)]
    servers = itertools.cycle([git_daemon, git_http])
    start_worker()

    submitted = {
        submit(client, next(servers).url(repo.name)).id: repo
        for client, repo in zip(itertools.cycle(clients), repos, strict=False)
    }

    wait_until(
        lambda: not CloneJob.objects.active().exists(), timeout=600, interval=1, what="the burst"
    )
    for job in CloneJob.objects.filter(pk__in=submitted):
        repo = submitted[job.id]
        assert job.status == Status.DONE, job.error
        assert job.commit == repo.head
        with default_storage.open(job.archive.name, "rb") as archive:
            assert hashlib.sha256(archive.read()).hexdigest() == job.archive_sha256
        with tarfile.open(job.archive.path) as tar:
            readme = tar.extractfile(f"{job.download_filename.removesuffix('.tar')}/README.md")
            assert readme.read().decode() == f"# {repo.name.removesuffix('.git')}\n"
        assert not paths.job_dir(job.id).exists()
    assert CloneJob.objects.filter(pk__in=submitted).count() == JOBS
    assert {job.owner.username for job in CloneJob.objects.all()} == {f"user{n}" for n in range(5)}
    assert not paths.jobs_root().exists() or not any(paths.jobs_root().iterdir())
