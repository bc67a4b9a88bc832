"""Webhooks: a job's end POSTed as JSON to the URL its owner gave, signed as Standard Webhooks
sign (https://www.standardwebhooks.com), tried again on failure. A watch's webhook URL is told
of each new snapshot (watch.snapshot: the job's end, told as such) and of a failing streak
(watch.failing), the same way.

Under the clone URLs' policy, with a reach of its own (RECEIVERS): private hosts only where
CLONES_WEBHOOK_ALLOWED_PRIVATE_HOSTS lets them in, whatever git servers are allowed. The URL is
checked when the job is submitted (check_url, in the form) and again right before each attempt
(urlpolicy.pin, resolving the host afresh; a URL the policy forbids by then fails the delivery
at once), and the request goes only to the addresses just checked (clones.safety.pinnedhttp): no
redirect followed, no proxy, TIMEOUT_SECONDS for the connection and for each wait for the
answer, one read of at most MAX_ANSWER_BYTES of the answer, and CLONES_WEBHOOK_TIMEOUT for the
whole attempt: a socket timeout bounds each wait, not a receiver that trickles its answer a
byte at a time, so each attempt's task carries django-q2's own timeout (an alarm in its worker
process). Attempts go to a queue of their own (QUEUE), which only the webhook cluster of
`manage.py worker` serves: a slow receiver holds one of its CLONES_WEBHOOK_WORKERS, never a
worker a clone needs.

A 2xx answer delivers it; any other answer, a timeout or a refused connection is tried again
after CLONES_WEBHOOK_BACKOFF_SECONDS, doubling (a one-off django-q2 schedule), up to
CLONES_WEBHOOK_RETRIES times. Each attempt is claimed with a conditional UPDATE on the delivery's
attempt count, so a task delivered twice, or the recovery sweep's second task for a lost one,
never sends the same attempt twice. An owner has at most CLONES_MAX_PENDING_WEBHOOKS_PER_USER
deliveries pending: a job that ends past that is not told, and its page says why.
"""

import base64
import hashlib
import hmac
import json
import logging
import re
import ssl
import time
from datetime import timedelta
from functools import partial
from urllib.parse import urlsplit
from uuid import UUID

import urllib3
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django_q.exceptions import TimeoutException
from django_q.models import Schedule
from django_q.tasks import async_task, schedule

from .. import queue, stopping
from ..models import (
    CloneJob,
    DeliveryState,
    Profile,
    Status,
    Watch,
    WebhookDelivery,
    WebhookEvent,
    storable,
)
from ..safety import pinnedhttp, signing, urlpolicy

logger = logging.getLogger(__name__)

EVENT = WebhookEvent.CLONE_FINISHED
# django-q2's queue (its "cluster") for attempts: manage.py worker serves it with a cluster of
# its own, never with the clones' workers.
QUEUE = "cloneshelf-webhooks"
# Of the schemes the URL policy knows, the ones a webhook can be POSTed over.
SCHEMES = ("https", "http")
TIMEOUT_SECONDS = 10
MAX_ANSWER_BYTES = 4096  # enough for an error message; a receiver's page is not kept
SHOWN_ANSWER_CHARS = 200
MAX_BACKOFF_SECONDS = 3600
# Public receivers, and the private ones the operator allowed for webhooks alone: the git
# servers' allowances do not reach them, as the receiver's answer is shown to the job's owner.
RECEIVERS = urlpolicy.Reach(
    "webhooks are only sent to public servers",
    hosts_setting="CLONES_WEBHOOK_ALLOWED_PRIVATE_HOSTS",
)


def check_url(url: str) -> str:
    """The webhook URL stripped of surrounding spaces, or ValidationError saying why not: an
    http(s) URL that the clone URLs' policy accepts."""
    return _under_policy(urlpolicy.check_url, url)


def _pin(url: str) -> urlpolicy.PinnedURL:
    return _under_policy(urlpolicy.pin, url)


def _under_policy(check, url: str):
    """`check` (urlpolicy's check_url or pin) of an http(s) URL, worded for webhooks."""
    schemes = [scheme for scheme in SCHEMES if scheme in settings.CLONES_ALLOWED_SCHEMES]
    if not schemes:
        raise ValidationError("Webhooks need https:// URLs, which this site does not accept.")
    use = " or ".join(f"{allowed}://" for allowed in schemes)
    scheme, _, rest = url.strip().partition(":")
    scheme = scheme.lower()
    if scheme not in schemes and re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        raise ValidationError(f"{scheme}:// URLs cannot receive webhooks; use {use}.")
    if scheme not in schemes or not rest.startswith("//"):
        raise ValidationError(f"Enter a full {use} URL, such as https://example.com/hooks/clones.")
    return check(url, RECEIVERS)


def payload(job: CloneJob, event: str = EVENT) -> dict:
    """What a receiver is told about a job that has ended: never a token, nor git's output. A
    watch's new snapshot says which watch, too."""
    told = {
        "event": event,
        "job_id": str(job.id),
        "status": job.status,
        "url": job.url,
        "ref": job.ref,
        "commit": job.commit,
        "history": job.history,
        "depth": job.depth,
        "paths": job.paths,
        "submodules": job.submodules,
        "lfs": job.lfs,
        "archive_format": job.archive_format,
        "archive_size": job.archive_size,
        "archive_sha256": job.archive_sha256,
        "provenance_sha256": _provenance_digest(job),
        "error": job.error,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "expires_at": job.expires_at,
        "links": job_links(job),
    }
    if event == WebhookEvent.WATCH_SNAPSHOT and job.watch is not None:
        told |= {"watch_id": str(job.watch_id), "refs_digest": job.refs_digest}
        told["links"]["watch"] = watch_link(job.watch)
    return told


def watch_payload(watch: Watch) -> dict:
    """What a receiver is told about a watch that keeps failing (never its credential)."""
    return {
        "event": WebhookEvent.WATCH_FAILING,
        "watch_id": str(watch.id),
        "url": watch.url,
        "failures": watch.failures,
        "error": watch.last_error,
        "last_checked_at": watch.last_checked_at,
        "next_check_at": watch.next_check_at,
        "links": {"watch": watch_link(watch)},
    }


def watch_link(watch: Watch) -> str:
    return settings.CLONES_SITE_URL + watch.get_absolute_url()


def _provenance_digest(job: CloneJob) -> str:
    """The sha256 of the archive's signed provenance as the site serves it; "" for none."""
    if not job.is_signed:
        return ""
    return hashlib.sha256(signing.canonical_json(job.snapshot.provenance)).hexdigest()


def job_links(job: CloneJob) -> dict[str, str | None]:
    """The job's page and, while there is one, its download and its provenance: absolute
    under CLONES_SITE_URL, paths without it."""
    site = settings.CLONES_SITE_URL
    links = {"job": site + job.get_absolute_url(), "download": None, "provenance": None}
    if job.can_download:
        links["download"] = site + reverse("clones:download", args=[job.id])
    if job.is_signed:
        links["provenance"] = site + reverse("clones:provenance", args=[job.id])
    return links


def signature(key: bytes, delivery_id: str, timestamp: int, body: bytes) -> str:
    """webhook-signature's value, as Standard Webhooks sign: "v1," and the base64 HMAC-SHA256,
    with the owner's key, of the delivery's id, the attempt's time and the exact body, joined by
    dots. The time is signed so that a receiver can refuse an old request replayed."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def start(job: CloneJob) -> WebhookDelivery:
    """Queue the first attempt to tell the job's webhook URL that the job has ended (a watch's
    done job: that the watch has a new snapshot), unless its owner has too many pending
    already. A job run again (the admin's retry) ends again: its earlier delivery makes way,
    and a task still due for that one finds nothing to claim."""
    snapshot = job.watch_id is not None and job.status == Status.DONE
    event = WebhookEvent.WATCH_SNAPSHOT if snapshot else EVENT
    with transaction.atomic():
        WebhookDelivery.objects.filter(job=job).delete()
        return _start(job.owner_id, job.webhook_url, job=job, event=event)


def start_watch_failing(watch: Watch) -> WebhookDelivery:
    """Queue the first attempt to tell the watch's webhook URL that it keeps failing."""
    with transaction.atomic():
        return _start(
            watch.owner_id, watch.webhook_url, watch=watch, event=WebhookEvent.WATCH_FAILING
        )


def _start(owner_id, url: str, **about) -> WebhookDelivery:
    pending = WebhookDelivery.objects.filter(
        Q(job__owner_id=owner_id) | Q(watch__owner_id=owner_id), state=DeliveryState.PENDING
    ).count()
    if pending >= settings.CLONES_MAX_PENDING_WEBHOOKS_PER_USER:
        return WebhookDelivery.objects.create(
            url=url,
            state=DeliveryState.FAILED,
            error=f"{pending} of your webhooks were already waiting to be delivered, the "
            "most this site holds for one account.",
            **about,
        )
    delivery = WebhookDelivery.objects.create(url=url, next_attempt_at=timezone.now(), **about)
    # Lost if the broker loses it: the recovery sweep gives the delivery another (lost()).
    transaction.on_commit(partial(_queue, delivery.pk, 1))
    return delivery


def _queue(delivery_id: UUID | str, attempt: int) -> None:
    async_task(queue.DELIVER_WEBHOOK, str(delivery_id), attempt, q_options=task_options())


def task_options() -> dict:
    """django-q2's options for an attempt's task (and an email's): on the webhooks' own queue,
    stopped after CLONES_WEBHOOK_TIMEOUT."""
    return {"cluster": QUEUE, "timeout": settings.CLONES_WEBHOOK_TIMEOUT}


def deliver(delivery_id: str, attempt: int) -> None:
    """Run by django-q2 (tasks.deliver_webhook): make attempt number `attempt` of a
    delivery, unless it was made already or the delivery is over."""
    if stopping.seconds_since_requested() is not None:
        # Fetched as the worker began to stop: left, unclaimed, to the next worker.
        _queue(delivery_id, attempt)
        return
    if not _claim(delivery_id, attempt):
        logger.info(
            "webhook delivery %s: attempt %d is not due; nothing to do", delivery_id, attempt
        )
        return
    delivery = WebhookDelivery.objects.select_related(
        "job__owner", "job__watch", "watch__owner"
    ).get(pk=delivery_id)
    if delivery.job is not None and delivery.job.is_active:
        # Run again (the admin's retry) before this was delivered: its next end is told anew.
        _give_up(delivery, attempt, None, "The job was run again before this was delivered.")
        return
    try:
        pinned = _pin(delivery.url)
    except ValidationError as refused:
        error = f"The webhook URL is not allowed any more: {refused.messages[0]}"
        _give_up(delivery, attempt, None, error)
        return
    status, error = _post(pinned, *_request(delivery, int(time.time())))
    if status is not None and 200 <= status < 300:
        _this_attempt(delivery, attempt).update(
            state=DeliveryState.DELIVERED,
            response_status=status,
            error="",
            delivered_at=timezone.now(),
            next_attempt_at=None,
        )
    elif attempt < attempts_allowed():
        _try_later(delivery, attempt, status, error)
    else:
        _give_up(delivery, attempt, status, error)


def _claim(delivery_id: str, attempt: int) -> bool:
    """Take attempt number `attempt`, if it is the next one. Until the attempt records how it
    went, next_attempt_at says when it began: one that never does is found lost()."""
    return bool(
        WebhookDelivery.objects.filter(
            pk=delivery_id, state=DeliveryState.PENDING, attempts=attempt - 1
        ).update(attempts=attempt, next_attempt_at=timezone.now())
    )


def _this_attempt(delivery: WebhookDelivery, attempt: int):
    """The delivery's row while `attempt` is its latest and it is not over: where the attempt's
    outcome goes, unless the recovery sweep gave up on it meanwhile."""
    return WebhookDelivery.objects.filter(
        pk=delivery.pk, state=DeliveryState.PENDING, attempts=attempt
    )


def attempts_allowed() -> int:
    return 1 + settings.CLONES_WEBHOOK_RETRIES


def backoff_seconds(attempt: int) -> int:
    """How long to wait after failed attempt number `attempt` (1, 2, …) before the next."""
    return min(settings.CLONES_WEBHOOK_BACKOFF_SECONDS * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)


def _request(delivery: WebhookDelivery, timestamp: int) -> tuple[bytes, dict[str, str]]:
    """The body and headers of the POST made at `timestamp` (Unix seconds), signed with the
    owner's key (made on first use). webhook-id is the delivery's, the same on every attempt."""
    told = payload(delivery.job, delivery.event) if delivery.job else watch_payload(delivery.watch)
    body = json.dumps(told, cls=DjangoJSONEncoder).encode()
    profile, _ = Profile.objects.get_or_create(user=delivery.owner)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "cloneshelf-webhook",
        "X-Cloneshelf-Event": delivery.event,
        "webhook-id": str(delivery.pk),
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(profile.signing_key, str(delivery.pk), timestamp, body),
    }
    return body, headers


def _post(
    pinned: urlpolicy.PinnedURL, body: bytes, headers: dict[str, str]
) -> tuple[int | None, str]:
    """(the receiver's HTTP status, None if it gave none; what went wrong, in words)."""
    where = urlsplit(pinned.url).netloc
    try:
        with (
            pinnedhttp.PinnedPoolManager(pinned, lambda: TIMEOUT_SECONDS) as pool,
            pool.urlopen(
                "POST", pinned.url, body=body, headers=headers, preload_content=False
            ) as response,
        ):
            # One read, so one wait at most: a receiver that sends a byte at a time is not
            # waited for.
            answer = response.read1(MAX_ANSWER_BYTES)
    except urllib3.exceptions.HTTPError as error:
        return None, _explain(error, where)
    except TimeoutException:  # the task's alarm: the receiver is answering too slowly
        seconds = settings.CLONES_WEBHOOK_TIMEOUT
        return None, f"{where} did not finish answering within {seconds} s."
    if 200 <= response.status < 300:
        return response.status, ""
    # What a private receiver says is not for the job's owner to read (they could aim a
    # webhook at any allowed internal service): its status is all that is kept.
    public = all(urlpolicy.is_public(address) for address in pinned.addresses)
    return response.status, _unwelcome(response.status, answer if public else b"")


def _unwelcome(status: int, answer: bytes) -> str:
    if 300 <= status < 400:
        return f"The receiver answered HTTP {status}; redirects are not followed."
    said = " ".join(storable(answer.decode("utf-8", "replace")).split())[:SHOWN_ANSWER_CHARS]
    return f"The receiver answered HTTP {status}" + (f": {said}" if said else ".")


def _explain(error: urllib3.exceptions.HTTPError, where: str) -> str:
    if isinstance(error, urllib3.exceptions.NewConnectionError):  # before TimeoutError: a subclass
        reason = getattr(error.__cause__, "strerror", None)
        return f"Could not connect to {where}" + (f": {reason.lower()}." if reason else ".")
    if isinstance(error, urllib3.exceptions.TimeoutError):
        return f"{where} did not answer within {TIMEOUT_SECONDS} s."
    if isinstance(error, urllib3.exceptions.SSLError):
        cause = error.args[0] if error.args else None
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"{where}'s TLS certificate could not be verified: {cause.verify_message}."
        return f"The TLS handshake with {where} failed."
    if isinstance(error, urllib3.exceptions.ProtocolError):
        return f"{where} closed the connection without a complete HTTP answer."
    return f"The request to {where} failed: {error}"


def _try_later(delivery: WebhookDelivery, attempt: int, status: int | None, error: str) -> None:
    due = timezone.now() + timedelta(seconds=backoff_seconds(attempt))
    with transaction.atomic():
        recorded = _this_attempt(delivery, attempt).update(
            response_status=status, error=error, next_attempt_at=due
        )
        if recorded:
            schedule(
                queue.DELIVER_WEBHOOK,
                str(delivery.pk),
                attempt + 1,
                name=f"cloneshelf: webhook {delivery.pk} attempt {attempt + 1}",
                schedule_type=Schedule.ONCE,
                next_run=due,
                # The clones' cluster runs the schedules; the task goes to QUEUE.
                q_options=task_options(),
            )


def _give_up(delivery: WebhookDelivery, attempt: int, status: int | None, error: str) -> None:
    _this_attempt(delivery, attempt).update(
        state=DeliveryState.FAILED, response_status=status, error=error, next_attempt_at=None
    )


def lost():
    """Pending deliveries whose next attempt is long overdue: its task was lost with the broker,
    or its worker died while sending (clones.ops.recovery)."""
    overdue = timezone.now() - timedelta(seconds=settings.CLONES_TASK_LOST_SECONDS)
    return WebhookDelivery.objects.filter(state=DeliveryState.PENDING, next_attempt_at__lt=overdue)


def send_again(delivery: WebhookDelivery) -> bool:
    """Give a lost delivery a task for its next attempt, or fail it if its last attempt was the
    one that never finished; False if it moved on since it was found."""
    unchanged = WebhookDelivery.objects.filter(
        pk=delivery.pk,
        state=DeliveryState.PENDING,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
    )
    if delivery.attempts >= attempts_allowed():
        # Only this much is known: it was claimed (its task began) and no outcome came back.
        began = timezone.localtime(delivery.next_attempt_at)
        error = (
            f"The last attempt never finished: it began at {began:%Y-%m-%d %H:%M:%S %Z} "
            "and recorded no answer."
        )
        return bool(unchanged.update(state=DeliveryState.FAILED, error=error, next_attempt_at=None))
    if not unchanged.update(next_attempt_at=timezone.now()):
        return False
    # A duplicate of a task that was only late claims nothing: one of the two makes the attempt.
    _queue(delivery.pk, delivery.attempts + 1)
    return True
