"""Webhooks and emails when a job ends: to a real receiver and a real mail server on 127.0.0.1,
admitted by CLONES_WEBHOOK_ALLOWED_PRIVATE_HOSTS with private networks otherwise refused, as
deployed. Signatures are checked with the standardwebhooks package, as a receiver would.

Most tests run the queued notification tasks here, in this process, from the broker's queue
(so that the resolver can be stubbed); the retry and the end-to-end test leave them to a real
worker. No test resolves a real name or leaves 127.0.0.0/8.
"""

import ast
import contextlib
import email
import email.policy
import itertools
import re
import subprocess
import time
import uuid
from datetime import datetime, timedelta
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.models import OrmQ, Schedule
from standardwebhooks import Webhook, WebhookVerificationError

from clones import jobs, queue, stopping, watches
from clones.models import (
    LOST_AFTER_BEATS,
    CloneJob,
    DeliveryState,
    Profile,
    Snapshot,
    SnapshotState,
    Status,
    Watch,
    WebhookDelivery,
    WebhookEvent,
)
from clones.notify import webhooks
from clones.ops import recovery
from clones.safety import tokens
from project.settings import smtp_mailers

from ..support import PROJECT_DIR
from ..support.gitservers import _RawServer, free_port
from ..support.helpers import run_schedule_now, submit, wait_for_job, wait_until
from ..support.receivers import Received, Receiver

pytestmark = [pytest.mark.database, pytest.mark.django_db(transaction=True)]

SITE = "https://cloneshelf.example.org"
TOKEN = "glpat-never-told-1234"
POLICY_ENV = {
    "CLONES_ALLOW_PRIVATE_NETWORKS": "0",
    "CLONES_ALLOWED_PRIVATE_HOSTS": "127.0.0.1",  # the git servers'
    "CLONES_WEBHOOK_ALLOWED_PRIVATE_HOSTS": "127.0.0.1",  # the receivers'
}


@pytest.fixture
def receiver():
    started = []

    def start(*statuses: int, **options) -> Receiver:
        started.append(Receiver(*statuses, **options))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def allowlisted(production_policy):
    """No private networks, but the receiver's (and the git servers') address is allowed."""
    production_policy.CLONES_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]
    production_policy.CLONES_WEBHOOK_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]
    return production_policy


class Mailbox:
    """aiosmtpd's handler: keeps every message it is given."""

    def __init__(self):
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        return "250 Message accepted for delivery"


@pytest.fixture
def mail_server():
    """A real SMTP server on 127.0.0.1; its port is `.port`, what it got `.handler.messages`."""
    controller = Controller(Mailbox(), hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller
    controller.stop()


def email_env(port: int) -> dict[str, str]:
    return {"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(port)}


@pytest.fixture
def mailer_on(settings, monkeypatch):
    """Turns on what EMAIL_HOST=127.0.0.1 and EMAIL_PORT=`port` do: the mailer that
    project.settings makes of them."""

    def turn_on(port: int) -> None:
        for name, value in email_env(port).items():
            monkeypatch.setenv(name, value)
        settings.MAILERS = smtp_mailers()

    return turn_on


def queued_job(owner, webhook_url: str = "", **fields) -> CloneJob:
    return CloneJob.objects.create(
        owner=owner,
        url="https://example.com/team/widget.git",
        ref="main",
        webhook_url=webhook_url,
        **fields,
    )


def run_queued_tasks(*funcs: str) -> None:
    """Run the queued tasks of these functions here, as a worker would: from the broker's queue,
    with the arguments it holds. Other tasks (a clone's) stay queued."""
    while True:
        due = [queued for queued in OrmQ.objects.order_by("id") if queued.func() in funcs]
        if not due:
            return
        for queued in due:
            task = queued.task
            queued.delete()
            import_string(task["func"])(*task["args"], **task["kwargs"])


def run_deliveries() -> None:
    run_queued_tasks(queue.DELIVER_WEBHOOK)


def signed_by(user, received: Received) -> bool:
    """Whether a Standard Webhooks library, given the secret on the user's profile page, takes
    the request as theirs."""
    try:
        Webhook(secret_of(user)).verify(received.body, dict(received.headers))
    except WebhookVerificationError:
        return False
    return True


def secret_of(user) -> str:
    return Profile.objects.get(user=user).signing_secret


def running(job: CloneJob) -> CloneJob:
    return jobs.claim(job.id)


ENDINGS = {
    Status.DONE: lambda job, snapshot: jobs.mark_done(running(job), snapshot),
    Status.FAILED: lambda job, snapshot: jobs.mark_failed(running(job), "The clone failed."),
    Status.CANCELLED: lambda job, snapshot: jobs.cancel(job, by="owner"),
}


# Each ending, told once, signed, in full.


@pytest.mark.parametrize("status", ENDINGS)
def test_a_job_that_ends_posts_its_summary_once_signed_with_the_owners_secret(
    owner, allowlisted, receiver, snapshot, status
):
    allowlisted.CLONES_SITE_URL = SITE
    hook = receiver()
    job = queued_job(owner, hook.url(), used_token=True)
    tokens.keep(job.id, TOKEN)

    assert ENDINGS[status](job, snapshot)
    run_deliveries()

    [received] = hook.received
    job.refresh_from_db()
    delivery = job.delivery
    assert (delivery.state, delivery.attempts, delivery.response_status) == ("delivered", 1, 200)
    assert signed_by(owner, received)
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["User-Agent"] == "cloneshelf-webhook"
    assert received.headers["X-Cloneshelf-Event"] == "clone.finished"
    assert received.headers["webhook-id"] == str(delivery.id)
    told = received.json
    assert {key: told[key] for key in ["event", "job_id", "status", "url", "ref", "error"]} == {
        "event": "clone.finished",
        "job_id": str(job.id),
        "status": status,
        "url": "https://example.com/team/widget.git",
        "ref": "main",
        "error": job.error,
    }
    assert abs(datetime.fromisoformat(told["created_at"]) - job.created_at) < timedelta(
        milliseconds=1
    )
    assert told["links"]["job"] == f"{SITE}/clones/{job.id}/"
    if status == Status.DONE:
        assert (told["commit"], told["archive_sha256"], told["archive_size"]) == (
            "c" * 40,
            "f" * 64,
            10240,
        )
        assert told["links"]["download"] == SITE + reverse("clones:download", args=[job.id])
        assert datetime.fromisoformat(told["expires_at"]) > timezone.now()
    else:
        assert told["links"]["download"] is None
    assert TOKEN.encode() not in received.body
    profile = Profile.objects.get(user=owner)
    assert profile.webhook_secret.encode() not in received.body
    assert secret_of(owner).encode() not in received.body


def builder_and_follower(owner, url: str) -> tuple[CloneJob, CloneJob, Snapshot]:
    """Two identical jobs: the first builds the snapshot, the second waits for it."""
    builder, follower = running(queued_job(owner, url)), running(queued_job(owner, url))
    building = Snapshot.objects.create(
        key="b" * 64,
        url="https://example.com/team/widget",
        commit="c" * 40,
        history="full",
        archive_format="tar",
        state=SnapshotState.BUILDING,
        builder=builder,
    )
    jobs.record_builder(builder, building)
    assert jobs.follow(follower, building)
    return builder, follower, building


def test_jobs_that_waited_for_an_identical_one_are_told_once_each(owner, allowlisted, receiver):
    hook = receiver()
    builder, follower, building = builder_and_follower(owner, hook.url())
    Snapshot.objects.filter(pk=building.pk).update(
        state=SnapshotState.READY, archive="w.tar", archive_size=1, archive_sha256="a" * 64
    )

    assert jobs.mark_done(builder, Snapshot.objects.get(pk=building.pk))
    jobs.settle_followers(building)  # a second settlement, as recovery's, finds nothing to do
    run_deliveries()

    told = sorted((r.json["job_id"], r.json["status"]) for r in hook.received)
    assert told == sorted([(str(builder.id), "done"), (str(follower.id), "done")])
    assert WebhookDelivery.objects.filter(state=DeliveryState.DELIVERED).count() == 2


@pytest.mark.parametrize(
    "ending", ["builder failed", "gave up waiting", "worker died twice", "rolled back"]
)
def test_every_other_ending_is_told_once_and_nothing_else_is(
    owner, allowlisted, receiver, settings, ending
):
    hook = receiver()
    if ending == "builder failed":
        builder, follower, _ = builder_and_follower(owner, hook.url())
        assert jobs.mark_failed(builder, "The clone timed out after 60 s.", shared=True)
        expected = {str(builder.id), str(follower.id)}
    elif ending == "gave up waiting":
        settings.CLONES_WAIT_RETRIES = 0
        job = running(queued_job(owner, hook.url()))
        assert jobs.retry_later(
            job, "Waiting for the Docker engine.", "The engine never came back."
        )
        expected = {str(job.id)}
    elif ending == "worker died twice":
        job = running(queued_job(owner, hook.url(), attempts=1))
        silent_since = timezone.now() - timedelta(
            seconds=settings.CLONES_HEARTBEAT_SECONDS * LOST_AFTER_BEATS + 1
        )
        CloneJob.objects.filter(pk=job.pk).update(heartbeat_at=silent_since)
        recovery.recover()
        expected = {str(job.id)}
    else:
        job = running(queued_job(owner, hook.url()))
        with contextlib.suppress(RuntimeError), transaction.atomic():
            assert jobs.mark_failed(job, "The clone failed.")
            raise RuntimeError("the change is rolled back")
        assert CloneJob.objects.get(pk=job.pk).status == Status.RUNNING
        expected = set()

    run_deliveries()

    told = [received.json for received in hook.received]
    assert sorted(message["job_id"] for message in told) == sorted(expected)
    assert all(message["status"] == "failed" for message in told)


def test_an_expiry_is_not_told(owner, allowlisted, receiver, snapshot):
    hook = receiver()
    job = queued_job(owner, hook.url())
    ENDINGS[Status.DONE](job, snapshot)
    run_deliveries()

    assert jobs.expire(CloneJob.objects.get(pk=job.pk))
    run_deliveries()

    assert len(hook.received) == 1


# The signature: Standard Webhooks.

README = PROJECT_DIR / "README.md"
SNIPPET_MARK = "<!-- tests/notify/test_webhooks.py runs this snippet with a real delivery -->"


def readme_snippet() -> dict:
    """What the README's verification snippet defines, once run."""
    text = README.read_text()
    after = text[text.index(SNIPPET_MARK) + len(SNIPPET_MARK) :]
    code = re.match(r"\s*```python\n(.*?)```", after, re.DOTALL)[1]
    defined: dict = {}
    exec(code, defined)
    return defined


class SixMinutesLater(datetime):
    """The receiver's clock, six minutes on: past the five the verification allows."""

    @classmethod
    def now(cls, tz=None):
        return datetime.now(tz) + timedelta(minutes=6)


def test_a_delivery_passes_the_readmes_check_and_nothing_changed_or_replayed_does(
    owner, other_user, allowlisted, receiver, monkeypatch
):
    hook = receiver()
    jobs.cancel(queued_job(owner, hook.url()), by="owner")
    run_deliveries()
    [received] = hook.received
    headers = dict(received.headers)
    clone_finished = readme_snippet()["clone_finished"]

    assert clone_finished(received.body, headers, secret_of(owner)) == received.json
    assert headers["webhook-id"] == str(WebhookDelivery.objects.get().id)
    assert abs(int(headers["webhook-timestamp"]) - received.at.timestamp()) < 5

    def refused(body: bytes = received.body, secret: str = secret_of(owner), **changed) -> str:
        with pytest.raises(WebhookVerificationError) as refusal:
            clone_finished(body, {**headers, **changed}, secret)
        return str(refusal.value)

    signature_fails = "No matching signature found"
    assert refused(body=received.body.replace(b"cancelled", b"done")) == signature_fails
    assert refused(**{"webhook-id": str(uuid.uuid4())}) == signature_fails
    earlier = str(int(headers["webhook-timestamp"]) - 1)
    assert refused(**{"webhook-timestamp": earlier}) == signature_fails
    Profile.objects.get_or_create(user=other_user)
    assert refused(secret=secret_of(other_user)) == signature_fails
    monkeypatch.setattr("standardwebhooks.webhooks.datetime", SixMinutesLater)
    assert refused() == "Message timestamp too old"  # the same request, sent again later


# Retries.


def test_a_failed_attempt_is_retried_after_its_backoff_by_a_real_worker(
    owner, allowlisted, receiver, start_worker
):
    hook = receiver(500, 200)
    start_worker(env={**POLICY_ENV, "CLONES_WEBHOOK_BACKOFF_SECONDS": "60"})
    job = queued_job(owner, hook.url())

    assert jobs.cancel(job, by="owner")
    wait_until(lambda: Schedule.objects.filter(func=queue.DELIVER_WEBHOOK).exists(), 30)

    retry = Schedule.objects.get(func=queue.DELIVER_WEBHOOK)
    delivery = WebhookDelivery.objects.get(job=job)
    [first] = hook.received
    assert ast.literal_eval(retry.args) == (str(delivery.id), 2)
    assert abs((retry.next_run - first.at).total_seconds() - 60) < 5
    assert (delivery.state, delivery.attempts, delivery.response_status) == ("pending", 1, 500)
    assert delivery.next_attempt_at == retry.next_run
    assert (
        delivery.error == "The receiver answered HTTP 500."
    )  # a private receiver's words: not shown

    run_schedule_now(retry.name)  # as the worker's scheduler does when it is due
    wait_until(lambda: WebhookDelivery.objects.get(pk=delivery.pk).state == "delivered", 30)

    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.response_status, delivery.error) == (2, 200, "")
    _, second = hook.received
    assert second.headers["webhook-id"] == first.headers["webhook-id"] == str(delivery.id)
    assert second.body == first.body
    assert abs(int(second.headers["webhook-timestamp"]) - second.at.timestamp()) < 5  # its own
    assert signed_by(owner, second)


class TricklingReceiver(_RawServer):
    """Reads the POST, then answers one byte a second, forever: each wait is short, the
    answer never ends."""

    def _serve(self, conn) -> None:
        with contextlib.suppress(OSError):
            conn.recv(65536)
            for byte in itertools.cycle(b"HTTP/1.1 200 OK\r\nX-Slow: "):
                conn.sendall(bytes([byte]))
                time.sleep(1)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


def test_a_receiver_that_trickles_its_answer_is_cut_off_and_retried(
    owner, allowlisted, start_worker
):
    """A socket timeout bounds each wait, not the whole answer: without the task's own
    timeout this attempt would hold a worker that clones share for as long as the receiver
    likes."""
    slow = TricklingReceiver()
    allowlisted.CLONES_WEBHOOK_TIMEOUT = 3  # the task's own timeout is set where it is queued
    try:
        start_worker(env={**POLICY_ENV, "CLONES_WEBHOOK_TIMEOUT": "3"})
        job = queued_job(owner, slow.url())
        assert jobs.cancel(job, by="owner")

        wait_until(lambda: WebhookDelivery.objects.filter(job=job, error__gt="").exists(), 30)
    finally:
        slow.stop()
    delivery = WebhookDelivery.objects.get(job=job)
    assert (delivery.state, delivery.attempts) == ("pending", 1)
    assert delivery.error == f"127.0.0.1:{slow.port} did not finish answering within 3 s."
    assert Schedule.objects.filter(name__endswith="attempt 2").exists()


# Deliveries never take a clone's worker, and an owner's pending ones are bounded.


def test_a_trickling_receiver_for_50_jobs_does_not_delay_a_clone_queued_behind_them(
    owner, owner_client, allowlisted, start_worker, new_repo, git_http, tmp_path
):
    """Each attempt holds its worker for a whole CLONES_WEBHOOK_TIMEOUT (3 s here): in the
    clones' two workers, the 50 attempts ahead would hold the clone back for over a minute."""
    attempt_seconds = 3
    allowlisted.CLONES_WEBHOOK_TIMEOUT = attempt_seconds  # set where the tasks are queued
    allowlisted.CLONES_MAX_PENDING_WEBHOOKS_PER_USER = 50
    slow = TricklingReceiver()
    repo = new_repo()
    start_worker(env={**POLICY_ENV, "CLONES_WEBHOOK_TIMEOUT": str(attempt_seconds)})
    log = tmp_path / "worker-0.log"
    wait_until(lambda: log.read_text().count("] running.") == 2, 60, what="both clusters")
    try:
        for _ in range(50):
            jobs.cancel(queued_job(owner, slow.url()), by="owner")
        wait_until(lambda: WebhookDelivery.objects.filter(attempts=1).exists(), 30)

        job = wait_for_job(submit(owner_client, git_http.url(repo.name)))
        waiting = WebhookDelivery.objects.filter(attempts=0).count()
    finally:
        slow.stop()
    assert job.status == Status.DONE, job.error
    assert job.started_at - job.created_at < timedelta(seconds=attempt_seconds)
    assert waiting > 40  # most were still queued ahead of it when it was done


def test_an_attempt_fetched_as_its_worker_stops_goes_back_to_its_queue(
    owner, allowlisted, receiver, monkeypatch, tmp_path
):
    hook = receiver()
    jobs.cancel(queued_job(owner, hook.url()), by="owner")
    [queued] = OrmQ.objects.all()
    assert queued.key == webhooks.QUEUE
    stop = tmp_path / "stop"
    stop.touch()
    monkeypatch.setenv(stopping.ENVIRONMENT_VARIABLE, str(stop))  # as the worker announces it

    queued.delete()
    webhooks.deliver(*queued.task["args"])

    [again] = OrmQ.objects.all()
    assert (again.key, again.task["args"]) == (webhooks.QUEUE, queued.task["args"])
    assert WebhookDelivery.objects.get().attempts == 0 and not hook.received
    monkeypatch.delenv(stopping.ENVIRONMENT_VARIABLE)  # the next worker
    run_deliveries()
    assert WebhookDelivery.objects.get().state == "delivered" and len(hook.received) == 1


def test_an_owner_with_too_many_deliveries_pending_is_not_told_of_more(
    owner, other_user, allowlisted, receiver
):
    allowlisted.CLONES_MAX_PENDING_WEBHOOKS_PER_USER = 2
    hook = receiver()
    first, second, third = (queued_job(owner, hook.url()) for _ in range(3))
    for job in (first, second, third):
        jobs.cancel(job, by="owner")
    others = queued_job(other_user, hook.url())
    jobs.cancel(others, by="other")  # another owner's are counted apart

    refused = WebhookDelivery.objects.get(job=third)
    assert (refused.state, refused.attempts, refused.next_attempt_at) == ("failed", 0, None)
    page = render_to_string("clones/_webhook.html", {"job": CloneJob.objects.get(pk=third.pk)})
    assert (
        "Not sent: 2 of your webhooks were already waiting to be delivered, the most this site "
        "holds for one account." in " ".join(page.split())
    )
    run_deliveries()
    told = sorted(received.json["job_id"] for received in hook.received)
    assert told == sorted(str(job.id) for job in (first, second, others))

    fourth = queued_job(owner, hook.url())  # once those are delivered, the next is told
    jobs.cancel(fourth, by="owner")
    run_deliveries()
    assert WebhookDelivery.objects.get(job=fourth).state == "delivered"


def test_backoff_doubles_and_the_last_failure_is_final(owner, allowlisted, receiver, settings):
    settings.CLONES_WEBHOOK_RETRIES, settings.CLONES_WEBHOOK_BACKOFF_SECONDS = 2, 30
    hook = receiver(503)
    jobs.cancel(queued_job(owner, hook.url()), by="owner")
    delivery = WebhookDelivery.objects.get()

    def retry(attempt: int) -> Schedule:
        return Schedule.objects.get(name=f"cloneshelf: webhook {delivery.id} attempt {attempt}")

    run_deliveries()  # attempt 1, from its queued task
    webhooks.deliver(str(delivery.id), 1)  # the same task delivered twice: nothing is sent
    second = retry(2)
    webhooks.deliver(str(delivery.id), 2)  # as its schedule runs it
    third = retry(3)
    webhooks.deliver(str(delivery.id), 3)

    delivery.refresh_from_db()
    first_sent, second_sent, _ = (received.at for received in hook.received)
    waits = [second.next_run - first_sent, third.next_run - second_sent]
    assert [round(wait.total_seconds()) for wait in waits] == [30, 60]
    assert len(hook.received) == 3  # once per attempt
    assert (delivery.state, delivery.attempts, delivery.response_status) == ("failed", 3, 503)
    assert not Schedule.objects.filter(name__endswith="attempt 4").exists()


def test_a_job_run_again_is_told_of_its_new_end_only(owner, allowlisted, receiver):
    hook = receiver(500, 200)
    job = queued_job(owner, hook.url())
    jobs.mark_failed(running(job), "The clone failed.")
    run_deliveries()  # answered 500: a retry is scheduled
    earlier = WebhookDelivery.objects.get(job=job)

    assert jobs.requeue(CloneJob.objects.get(pk=job.pk))
    webhooks.deliver(str(earlier.id), 2)  # the retry, due while the job runs again
    assert len(hook.received) == 1
    jobs.cancel(job, by="owner")
    webhooks.deliver(str(earlier.id), 2)  # and after: it is gone
    run_deliveries()

    first, second = (received.json for received in hook.received)
    assert (first["status"], second["status"]) == ("failed", "cancelled")
    assert WebhookDelivery.objects.get(job=job).state == "delivered"


def test_a_receiver_that_is_not_there_is_retried(owner, allowlisted, receiver):
    hook = receiver()
    url = hook.url()
    hook.stop()  # nothing listens on the port any more
    jobs.cancel(queued_job(owner, url), by="owner")

    run_deliveries()

    delivery = WebhookDelivery.objects.get()
    assert delivery.state == "pending" and delivery.response_status is None
    assert delivery.error == f"Could not connect to 127.0.0.1:{hook.port}: connection refused."
    assert Schedule.objects.filter(func=queue.DELIVER_WEBHOOK).count() == 1


def test_a_lost_delivery_is_taken_up_by_the_recovery_sweep(owner, allowlisted, receiver, settings):
    hook = receiver()
    lost_since = timezone.now() - timedelta(seconds=settings.CLONES_TASK_LOST_SECONDS + 60)
    task_lost = WebhookDelivery.objects.create(
        job=queued_job(owner, hook.url(), status=Status.FAILED),
        url=hook.url(),
        attempts=1,
        next_attempt_at=lost_since,
    )
    last_attempt_died = WebhookDelivery.objects.create(
        job=queued_job(owner, hook.url(), status=Status.FAILED),
        url=hook.url(),
        attempts=webhooks.attempts_allowed(),
        next_attempt_at=lost_since,
    )

    recovery.recover()
    recovery.recover()  # a second sweep finds them handled
    run_deliveries()

    task_lost.refresh_from_db()
    last_attempt_died.refresh_from_db()
    assert (task_lost.state, task_lost.attempts) == ("delivered", 2)
    assert len(hook.received) == 1
    assert last_attempt_died.state == "failed"
    assert last_attempt_died.error.startswith("The last attempt never finished")


# The URL policy, at submit and at send.


REFUSED = [
    (
        "http://10.0.0.1/hook",
        "10.0.0.1 is a private or reserved address; webhooks are only sent to public servers.",
    ),
    (
        "http://127.0.0.2:8080/hook",  # loopback, but not the allowlisted address
        "127.0.0.2 is a private or reserved address; webhooks are only sent to public servers.",
    ),
    (
        "http://localhost/hook",
        "localhost is a local host name; webhooks are only sent to public servers.",
    ),
    ("file:///etc/passwd", "file:// URLs cannot receive webhooks; use https:// or http://."),
    ("ssh://git@example.com/hook", "ssh:// URLs cannot receive webhooks; use https:// or http://."),
    ("git://127.0.0.1/hook", "git:// URLs cannot receive webhooks; use https:// or http://."),
    (
        "git@example.com:hook",
        "Enter a full https:// or http:// URL, such as https://example.com/hooks/clones.",
    ),
    (
        "https:example.com/hook",  # no "//": not a URL with a host
        "Enter a full https:// or http:// URL, such as https://example.com/hooks/clones.",
    ),
    (
        "https://user:secret@example.com/hook",
        "Remove the user name or password from the URL: credentials in URLs end up in logs and "
        "history.",
    ),
]


@pytest.mark.parametrize(("webhook_url", "message"), REFUSED)
def test_a_webhook_url_the_policy_forbids_is_refused_at_submit(
    owner_client, allowlisted, dns, webhook_url, message
):
    response = owner_client.post(
        reverse("clones:new"), {"url": "https://127.0.0.1/a.git", "webhook_url": webhook_url}
    )

    assert response.status_code == 200
    assert response.context["form"].errors["webhook_url"] == [message]
    assert message in response.content.decode()
    assert not CloneJob.objects.exists()


def test_http_webhooks_only_where_http_urls_are_accepted(owner_client, allowlisted, dns):
    allowlisted.CLONES_ALLOWED_SCHEMES = ["https"]
    response = owner_client.post(
        reverse("clones:new"),
        {"url": "https://127.0.0.1/a.git", "webhook_url": "http://127.0.0.1/hook"},
    )
    assert response.context["form"].errors["webhook_url"] == [
        "http:// URLs cannot receive webhooks; use https://."
    ]


def test_the_form_keeps_an_allowed_webhook_url_with_the_job(
    owner_client, allowlisted, dns, receiver
):
    hook = receiver()
    job = submit(owner_client, "https://127.0.0.1/a.git", webhook_url=f"  {hook.url()} ")
    assert job.webhook_url == hook.url()
    assert submit(owner_client, "https://127.0.0.1/a.git").webhook_url == ""


def test_the_webhook_goes_to_the_address_checked_at_send_time(
    owner_client, owner, allowlisted, dns, receiver
):
    hook = receiver()
    dns["hooks.example"] = ["127.0.0.1"]
    url = hook.url(host="hooks.example")
    first = submit(owner_client, "https://127.0.0.1/a.git", webhook_url=url)
    second = submit(owner_client, "https://127.0.0.1/a.git", webhook_url=url)

    jobs.cancel(first, by="owner")
    run_deliveries()
    dns["hooks.example"] = ["127.0.0.2"]  # changed between submit and send
    jobs.cancel(second, by="owner")
    run_deliveries()

    [received] = hook.received
    assert received.json["job_id"] == str(first.id)
    assert received.headers["Host"] == f"hooks.example:{hook.port}"
    refused = WebhookDelivery.objects.get(job=second)
    assert (refused.state, refused.attempts, refused.response_status) == ("failed", 1, None)
    assert refused.error == (
        "The webhook URL is not allowed any more: hooks.example resolves to 127.0.0.2, a "
        "private or reserved address; webhooks are only sent to public servers."
    )
    assert not Schedule.objects.filter(func=queue.DELIVER_WEBHOOK).exists()  # no retry


def test_the_git_servers_allowances_do_not_reach_webhooks(
    owner_client, owner, production_policy, dns, receiver
):
    production_policy.CLONES_ALLOW_PRIVATE_NETWORKS = True
    production_policy.CLONES_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]
    hook = receiver()
    refusal = (
        "127.0.0.1 is a private or reserved address; webhooks are only sent to public servers."
    )

    response = owner_client.post(
        reverse("clones:new"), {"url": "https://127.0.0.1/a.git", "webhook_url": hook.url()}
    )
    assert response.context["form"].errors["webhook_url"] == [refusal]
    job = queued_job(owner, hook.url())  # asked for while the webhooks' allowance had it
    jobs.cancel(job, by="owner")
    run_deliveries()

    assert not hook.received
    delivery = WebhookDelivery.objects.get(job=job)
    assert (delivery.state, delivery.error) == (
        "failed",
        f"The webhook URL is not allowed any more: {refusal}",
    )


def test_a_private_receivers_answer_is_not_shown_only_its_status(owner, allowlisted, receiver):
    hook = receiver(500)  # its answer's text: "thank you ✓"
    job = queued_job(owner, hook.url())
    jobs.cancel(job, by="owner")
    run_deliveries()

    delivery = WebhookDelivery.objects.get()
    assert (delivery.response_status, delivery.error) == (500, "The receiver answered HTTP 500.")
    page = render_to_string("clones/_webhook.html", {"job": CloneJob.objects.get(pk=job.pk)})
    assert "Attempt 1 failed: The receiver answered HTTP 500. Trying again" in " ".join(
        page.split()
    )
    assert "thank you" not in page


def test_a_receiver_whose_certificate_does_not_verify_gets_nothing(
    owner, allowlisted, dns, receiver, tmp_path
):
    pem = tmp_path / "hooks.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-subj", "/CN=hooks.example", "-addext", "subjectAltName=DNS:hooks.example",
            "-keyout", pem, "-out", pem,
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    hook = receiver(pem=str(pem))
    dns["hooks.example"] = ["127.0.0.1"]
    jobs.cancel(queued_job(owner, hook.url(host="hooks.example", scheme="https")), by="owner")

    run_deliveries()

    delivery = WebhookDelivery.objects.get()
    assert not hook.received
    assert delivery.error.startswith(
        f"hooks.example:{hook.port}'s TLS certificate could not be verified: self"
    )


# Email.


def test_the_owner_is_emailed_when_a_mail_server_is_set(
    owner, mailer_on, mail_server, snapshot, settings
):
    mailer_on(mail_server.port)
    settings.CLONES_SITE_URL = SITE
    owner.email = "owner@example.com"
    owner.save()
    done, failed = queued_job(owner), queued_job(owner)

    ENDINGS[Status.DONE](done, snapshot)
    jobs.mark_failed(running(failed), "There is no git repository at\nhttps://example.com/x.")
    # Beside the webhooks, never in a clone's worker: a slow mail server holds only theirs.
    assert [queued.key for queued in OrmQ.objects.all()] == [webhooks.QUEUE] * 2
    run_queued_tasks(queue.SEND_EMAIL)

    by_subject = {message["Subject"]: message for message in mail_server.handler.messages}
    assert set(by_subject) == {
        "cloneshelf: widget done",
        "cloneshelf: widget failed: There is no git repository at https://example.com/x.",
    }
    text = by_subject["cloneshelf: widget done"].get_content()
    assert by_subject["cloneshelf: widget done"]["To"] == "owner@example.com"
    assert "Your clone of https://example.com/team/widget.git (main) is done." in text
    assert f"Download: {SITE}{reverse('clones:download', args=[done.id])}" in text
    assert "f" * 64 in text


def test_no_email_without_a_mail_server_or_an_address(owner, other_user, mailer_on, mail_server):
    owner.email = "owner@example.com"
    owner.save()
    jobs.cancel(queued_job(owner), by="owner")  # no MAILERS: no EMAIL_HOST
    mailer_on(mail_server.port)
    jobs.cancel(queued_job(other_user), by="other")  # who has no address

    assert not OrmQ.objects.exists()  # no task, for an email or anything else
    assert not mail_server.handler.messages


def test_a_mail_server_that_fails_is_logged_and_nothing_else(owner, mailer_on, caplog):
    owner.email = "owner@example.com"
    owner.save()
    mailer_on(free_port())  # nothing listens there
    job = queued_job(owner)
    jobs.cancel(job, by="owner")

    run_queued_tasks(queue.SEND_EMAIL)

    assert f"could not email the owner of job {job.id}" in caplog.text
    assert CloneJob.objects.get(pk=job.pk).status == Status.CANCELLED


# End to end.


def test_a_real_clone_tells_its_webhook_and_its_owner(
    owner, owner_client, allowlisted, receiver, mail_server, start_worker, new_repo, git_http
):
    owner.email = "owner@example.com"
    owner.save()
    hook = receiver()
    repo = new_repo()
    start_worker(
        env={
            **POLICY_ENV,
            **email_env(mail_server.port),
            "CLONES_SITE_URL": SITE,
        }
    )

    job = wait_for_job(submit(owner_client, git_http.url(repo.name), webhook_url=hook.url()))
    assert job.status == Status.DONE, job.error
    wait_until(lambda: hook.received and mail_server.handler.messages, 30, what="notifications")

    [received] = hook.received
    assert signed_by(owner, received)
    told = received.json
    assert (told["status"], told["commit"], told["archive_sha256"]) == (
        "done",
        repo.head,
        job.archive_sha256,
    )
    assert told["links"]["download"] == SITE + reverse("clones:download", args=[job.id])
    [mail] = mail_server.handler.messages
    assert mail["Subject"] == f"cloneshelf: {job.repo_name} done"


# What the owner and staff see.


def test_the_job_page_says_how_the_delivery_went(owner):
    job = queued_job(owner, "https://hooks.example/in", status=Status.FAILED)
    assert "Sending" in render_to_string("clones/_webhook.html", {"job": job})
    delivery = WebhookDelivery.objects.create(job=job, url=job.webhook_url)

    def shown(**fields) -> str:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(**fields)
        page = render_to_string("clones/_webhook.html", {"job": CloneJob.objects.get(pk=job.pk)})
        return " ".join(page.split())

    assert "Delivered (HTTP 204) at" in shown(
        state="delivered", attempts=1, response_status=204, delivered_at=timezone.now()
    )
    assert "Attempt 2 failed: The receiver answered HTTP 500. Trying again at" in shown(
        state="pending", attempts=2, error="The receiver answered HTTP 500."
    )
    assert "Failed after 6 attempts: Could not connect to hooks.example." in shown(
        state="failed", attempts=6, error="Could not connect to hooks.example."
    )
    assert render_to_string("clones/_webhook.html", {"job": queued_job(owner)}).strip() == ""


def test_staff_see_deliveries_in_the_admin(client, staff, owner):
    job = queued_job(owner, "https://hooks.example/in", status=Status.CANCELLED)
    WebhookDelivery.objects.create(job=job, url=job.webhook_url, state="failed", error="nope")
    client.force_login(staff)

    changelist = reverse("admin:clones_webhookdelivery_changelist")
    assert client.get(changelist, {"state__exact": "failed"}).context["cl"].result_count == 1
    page = client.get(reverse("admin:clones_clonejob_change", args=[job.id])).content.decode()
    assert "https://hooks.example/in" in page and "nope" in page


# A watch's new snapshot, and its failing streak (clones.watches).


WATCHED_URL = "https://example.com/team/widget.git"


def watched(owner, hook_url: str) -> Watch:
    return watches.create(
        owner, WATCHED_URL, webhook_url=hook_url, credential="glpat-watch-secret-99"
    )


def snapshot_job(watch: Watch) -> CloneJob:
    return CloneJob.objects.create(
        owner=watch.owner, watch=watch, url=watch.url, webhook_url=watch.webhook_url
    )


def fail_checks(watch: Watch, times: int) -> None:
    """`times` failed checks in a row, as a check records them."""
    for _ in range(times):
        with transaction.atomic():
            locked = Watch.objects.select_for_update().get(pk=watch.pk)
            watches._failed(
                locked, timezone.now(), "There is no git repository at " + WATCHED_URL + "."
            )


def test_a_watchs_new_snapshot_is_told_as_such_signed_with_the_watch(
    owner, allowlisted, receiver, snapshot, settings
):
    settings.CLONES_SITE_URL = SITE
    hook = receiver()
    watch = watched(owner, hook.url())
    job = snapshot_job(watch)

    assert jobs.mark_done(running(job), snapshot)
    run_deliveries()

    [received] = hook.received
    assert signed_by(owner, received)
    assert received.headers["X-Cloneshelf-Event"] == "watch.snapshot"
    told = received.json
    assert (told["event"], told["job_id"], told["watch_id"]) == (
        "watch.snapshot",
        str(job.id),
        str(watch.id),
    )
    assert told["links"]["watch"] == f"{SITE}/watches/{watch.id}/"
    assert told["expires_at"] is None  # kept by the watch's retention
    assert b"glpat-watch-secret-99" not in received.body
    assert watch.credential.encode() not in received.body


def test_a_watch_failing_is_told_once_a_streak_reaches_the_setting(
    owner, allowlisted, receiver, settings
):
    settings.CLONES_WATCH_FAILURES_TO_TELL = 3
    settings.CLONES_SITE_URL = SITE
    hook = receiver()
    watch = watched(owner, hook.url())

    fail_checks(watch, 2)
    run_deliveries()
    assert not hook.received
    fail_checks(watch, 1)  # the 3rd in a row
    run_deliveries()
    fail_checks(watch, 2)  # more of the same streak
    run_deliveries()

    [received] = hook.received
    assert signed_by(owner, received)
    assert received.headers["X-Cloneshelf-Event"] == "watch.failing"
    told = received.json
    assert (told["event"], told["watch_id"], told["url"], told["failures"]) == (
        "watch.failing",
        str(watch.id),
        WATCHED_URL,
        3,
    )
    assert told["error"] == f"There is no git repository at {WATCHED_URL}."
    assert told["links"] == {"watch": f"{SITE}/watches/{watch.id}/"}
    delivery = WebhookDelivery.objects.get(watch=watch)
    assert (delivery.event, delivery.state, delivery.job) == (
        WebhookEvent.WATCH_FAILING,
        DeliveryState.DELIVERED,
        None,
    )

    watches.snapshot_ended(CloneJob(watch=watch, status=Status.DONE))  # the streak ends
    fail_checks(watch, 3)  # a new one
    run_deliveries()
    assert len(hook.received) == 2


def test_a_failing_snapshot_job_counts_toward_the_streak(owner, allowlisted, receiver, settings):
    settings.CLONES_WATCH_FAILURES_TO_TELL = 1
    hook = receiver()
    watch = watched(owner, hook.url())
    job = snapshot_job(watch)

    jobs.mark_failed(running(job), "The repository is empty: it has no commit to archive.")
    run_deliveries()

    events = sorted(received.json["event"] for received in hook.received)
    assert events == ["clone.finished", "watch.failing"]
    watch.refresh_from_db()
    assert watch.failures == 1
    assert watch.last_error == (
        "Its latest snapshot failed: The repository is empty: it has no commit to archive."
    )


def test_the_owner_is_emailed_of_a_new_snapshot_and_of_a_failing_watch(
    owner, mailer_on, mail_server, snapshot, settings
):
    mailer_on(mail_server.port)
    settings.CLONES_SITE_URL = SITE
    settings.CLONES_WATCH_FAILURES_TO_TELL = 2
    owner.email = "owner@example.com"
    owner.save()
    watch = watched(owner, "")

    jobs.mark_done(running(snapshot_job(watch)), snapshot)
    fail_checks(watch, 2)
    run_queued_tasks(queue.SEND_EMAIL, queue.SEND_WATCH_EMAIL)

    by_subject = {message["Subject"]: message for message in mail_server.handler.messages}
    failing = f"cloneshelf: watch of widget failing: There is no git repository at {WATCHED_URL}."
    assert set(by_subject) == {"cloneshelf: widget done", failing}
    assert (
        by_subject["cloneshelf: widget done"]
        .get_content()
        .startswith(f"The new snapshot of your watch of {WATCHED_URL} is done.")
    )
    text = by_subject[failing].get_content()
    assert f"Your watch of {WATCHED_URL} has failed 2 times in a row." in text
    assert f"The watch: {SITE}/watches/{watch.id}/" in text
