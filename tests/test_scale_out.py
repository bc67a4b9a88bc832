"""Scaling out: two worker clusters, each with a Docker engine and a data directory of its own,
sharing one PostgreSQL, one Redis and one S3 bucket (an emulator). One cluster and its engine
are killed mid-run; every job still ends done, with its own repository in its archive."""

import io
import itertools
import os
import signal
import tarfile
import time
from datetime import UTC, datetime

import docker
import pytest
from django.db import connection

from clones import jobs
from clones.models import CloneJob, Status
from clones.ops import recovery
from clones.pipeline import engine as clone_engine

from .support.engines import Engine
from .support.helpers import wait_until
from .support.repos import make_tiny_repo
from .support.services import BUCKET, redis_env, s3_worker_env

pytestmark = pytest.mark.database

JOBS, USERS = 40, 4


@pytest.fixture
def postgres_only(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("two clusters share PostgreSQL: run with CLONESHELF_TEST_DATABASE_URL")


@pytest.fixture
def two_engines(settings):
    engines = [Engine(settings.CLONES_GIT_IMAGE) for _ in range(2)]
    yield engines
    for engine in engines:
        engine.remove()


def cluster_env(engine: Engine, data_dir, redis, s3_endpoint) -> dict[str, str]:
    return {
        "DOCKER_HOST": engine.host,
        "CLONES_DATA_DIR": str(data_dir),
        "CLONES_HEARTBEAT_SECONDS": "1",  # lost after four missed beats
        **redis_env(redis),
        **s3_worker_env(s3_endpoint),
    }


def clones_started(engine: Engine, since: datetime) -> int:
    """Clone containers this engine has created since `since`."""
    client = docker.DockerClient(base_url=engine.host)
    try:
        events = client.events(
            since=since,
            until=datetime.now(UTC),
            filters={"type": "container", "event": "create", "label": clone_engine.JOB_LABEL},
            decode=True,
        )
        return sum(1 for _ in events)
    finally:
        client.close()


def sweep_until_all_finished(timeout: float = 300) -> None:
    """The recovery sweep, every second (its schedule would run it every minute): lost jobs,
    and queued jobs whose task died in the killed cluster's hands, go back to the queue."""
    deadline = time.monotonic() + timeout
    while CloneJob.objects.active().exists():
        assert time.monotonic() < deadline, "jobs still active"
        recovery.recover()
        time.sleep(1)


def test_two_clusters_share_the_work_and_one_survives_the_others_death(
    postgres_only, two_engines, redis, bucket, s3_endpoint, settings, tmp_path,
    django_user_model, start_worker, served_root, git_http,
):  # fmt: skip
    settings.CLONES_MAX_ACTIVE_PER_USER = JOBS
    settings.CLONES_TASK_LOST_SECONDS = 5
    users = [django_user_model.objects.create_user(f"scale-{n}") for n in range(USERS)]
    repos = [make_tiny_repo(served_root, f"scale-{n}") for n in range(JOBS)]
    clusters = [
        start_worker(env=cluster_env(engine, tmp_path / f"cluster-{n}", redis, s3_endpoint))
        for n, engine in enumerate(two_engines)
    ]
    since = datetime.now(UTC)
    submitted = {
        jobs.submit(user, git_http.url(repo.name)).id: repo
        for user, repo in zip(itertools.cycle(users), repos, strict=False)
    }
    wait_until(
        lambda: CloneJob.objects.filter(status=Status.DONE).count() >= JOBS // 4,
        timeout=120,
        what="a quarter of the jobs done",
    )

    assert all(clones_started(engine, since) for engine in two_engines)  # both at work

    os.killpg(clusters[0].pid, signal.SIGKILL)  # the cluster and its clones, mid-run
    two_engines[0].kill()
    sweep_until_all_finished()

    finished = CloneJob.objects.filter(pk__in=submitted)
    assert {job.status for job in finished} == {Status.DONE}, [job.error for job in finished]
    for job in finished:
        repo = submitted[job.id]
        assert job.commit == repo.head
        body = bucket.get_object(Bucket=BUCKET, Key=job.archive.name)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            readme = tar.extractfile(f"{job.top_level}/README.md").read().decode()
        assert readme == f"# {repo.name.removesuffix('.git')}\n"
