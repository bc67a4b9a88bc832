"""The queue on Redis (CLONES_REDIS_URL), with a real redis-server on 127.0.0.1 and real
workers. Redis has no acknowledgement: a task taken by a worker that dies, or held by a Redis
that restarts, is gone. Jobs must finish all the same."""

import os
import signal
import time

import pytest
from django.contrib.auth import get_user_model

from clones import jobs
from clones.models import Status, WebhookDelivery

from .support.gitservers import GitHTTPServer
from .support.helpers import containers_of, refreshed, wait_for_job, wait_until
from .support.receivers import Receiver
from .support.services import redis_env

pytestmark = pytest.mark.database


@pytest.fixture
def owner_in_db(transactional_db):
    return get_user_model().objects.create_user("redis-owner", password="x")


def test_jobs_run_through_redis(redis, owner_in_db, start_worker, new_repo, git_http):
    repo = new_repo()
    start_worker(env=redis_env(redis))

    submitted = [jobs.submit(owner_in_db, git_http.url(repo.name)) for _ in range(2)]

    assert [wait_for_job(job).status for job in submitted] == [Status.DONE] * 2


def test_webhooks_go_through_redis_on_a_queue_of_their_own(
    redis, owner_in_db, start_worker, new_repo, git_http
):
    hook = Receiver()
    repo = new_repo()
    start_worker(env=redis_env(redis, CLONES_WEBHOOK_ALLOWED_PRIVATE_HOSTS="127.0.0.1"))

    job = wait_for_job(jobs.submit(owner_in_db, git_http.url(repo.name), webhook_url=hook.url()))
    wait_until(lambda: hook.received, 30, what="the webhook")

    hook.stop()
    assert job.status == Status.DONE, job.error
    assert [received.json["job_id"] for received in hook.received] == [str(job.id)]
    assert WebhookDelivery.objects.get(job=job).state == "delivered"


def test_a_worker_killed_with_the_task_in_hand_still_gets_its_job_done(
    redis, owner_in_db, start_worker, new_repo, served_root
):
    slow = GitHTTPServer(served_root, delay=1)
    repo = new_repo()
    beat_fast = redis_env(redis, CLONES_HEARTBEAT_SECONDS="1")
    first = start_worker(env=beat_fast)
    job = jobs.submit(owner_in_db, slow.url(repo.name))
    wait_until(lambda: containers_of(job), what="a clone container")

    os.killpg(first.pid, signal.SIGKILL)  # the task it took from Redis dies with it
    time.sleep(5)  # past four missed beats: lost
    start_worker(env=beat_fast)  # its start-up sweep takes the job back

    job = wait_for_job(job)
    assert job.status == Status.DONE, job.error
    assert job.attempts == 2
    slow.stop()


def test_queued_jobs_survive_a_redis_restart(redis, owner_in_db, start_worker, new_repo, git_http):
    repo = new_repo()
    queued = [jobs.submit(owner_in_db, git_http.url(repo.name)) for _ in range(3)]

    redis.restart()  # no worker had taken them: their tasks are gone with it

    start_worker(env=redis_env(redis, CLONES_TASK_LOST_SECONDS="0"))
    assert [wait_for_job(job).status for job in queued] == [Status.DONE] * 3
    assert len({refreshed(job).snapshot_id for job in queued}) == 1  # one clone for the three
