"""Telling a job's owner that it has ended: to its webhook URL, if it has one
(clones.notify.webhooks), and by email, when the settings name a mail server (EMAIL_HOST, Django's
default mailer) and the owner has an address.

clones.jobs calls job_ended once for every ending (done, failed, cancelled), once it is
committed; an archive's expiry is not told. A watch's snapshot job is a job (its email says it
is a new snapshot); clones.watches calls watch_failing once a watch's failing streak reaches
CLONES_WATCH_FAILURES_TO_TELL.
"""

import logging
from collections.abc import Callable, Iterable
from functools import partial

from django.core.mail import DEFAULT_MAILER_ALIAS, mailers, send_mail
from django.utils import timezone
from django_q.tasks import async_task

from .. import queue, units
from ..models import CloneJob, Status, Watch
from . import webhooks

logger = logging.getLogger(__name__)

SUBJECT_REASON_CHARS = 100
HEADLINES = {Status.DONE: "is done", Status.FAILED: "failed", Status.CANCELLED: "was cancelled"}


def job_ended(job_ids: Iterable) -> None:
    """Queue what the owners of these jobs, which have just ended, are to be told."""
    for job in CloneJob.objects.filter(pk__in=list(job_ids)).select_related("owner"):
        if job.webhook_url:
            _try(webhooks.start, job)
        if _can_email(job.owner):
            _try(_queued(queue.SEND_EMAIL), str(job.id))


def watch_failing(watch_id) -> None:
    """Queue what the owner of a watch that keeps failing is to be told."""
    watch = Watch.objects.select_related("owner").filter(pk=watch_id).first()
    if watch is None:
        return  # deleted meanwhile: nothing to tell of
    if watch.webhook_url:
        _try(webhooks.start_watch_failing, watch)
    if _can_email(watch.owner):
        _try(_queued(queue.SEND_WATCH_EMAIL), str(watch.id))


def _can_email(user) -> bool:
    return DEFAULT_MAILER_ALIAS in mailers and bool(user.email)


def _queued(task: str) -> Callable:
    # On the webhooks' queue: a slow mail server must not hold a clone's worker.
    return partial(async_task, task, q_options=webhooks.task_options())


def _try(tell: Callable, what) -> None:
    """One way of telling one owner: a broker down for it must not keep the other way, or the
    other owners, from being told. Logged, not raised: the job's ending stands."""
    try:
        tell(what)
    except Exception:
        logger.exception("could not notify the owner of job %s", getattr(what, "id", what))


def send(job_id: str) -> None:
    """Run by django-q2 (tasks.send_email): a short plain-text email to the job's owner.
    A mail server that fails is logged, not retried: the job page says the same."""
    job = CloneJob.objects.select_related("owner").get(pk=job_id)
    _send(job.owner, email_subject(job), email_body(job), f"job {job_id}")


def send_watch_failing(watch_id: str) -> None:
    """Run by django-q2 (tasks.send_watch_email): the owner's email that a watch keeps failing,
    unless it was deleted or recovered meanwhile."""
    watch = Watch.objects.select_related("owner").filter(pk=watch_id, failures__gt=0).first()
    if watch is not None:
        _send(watch.owner, watch_subject(watch), watch_body(watch), f"watch {watch_id}")


def _send(owner, subject: str, body: str, about: str) -> None:
    try:
        send_mail(subject, body, None, [owner.email], using=DEFAULT_MAILER_ALIAS)  # DEFAULT_FROM
    except OSError:  # smtplib's errors are OSErrors too
        logger.exception("could not email the owner of %s", about)


def email_subject(job: CloneJob) -> str:
    if job.status == Status.FAILED:
        # One line: a header cannot hold a line break.
        reason = " ".join(job.error.split())[:SUBJECT_REASON_CHARS]
        return f"cloneshelf: {job.repo_name} failed: {reason}"
    return f"cloneshelf: {job.repo_name} {job.get_status_display().lower()}"


def email_body(job: CloneJob) -> str:
    ref = f" ({job.ref})" if job.ref else ""
    headline = HEADLINES.get(job.status, job.get_status_display().lower())
    what = "The new snapshot of your watch of" if job.watch_id else "Your clone of"
    lines = [f"{what} {job.url}{ref} {headline}.", ""]
    if job.error:
        lines += [job.error, ""]
    links = webhooks.job_links(job)
    if job.can_download:
        lines += [
            f"Commit: {job.commit}",
            f"Archive: {job.download_filename}, {units.human_size(job.archive_size)}",
            f"sha256: {job.archive_sha256}",
            f"Kept until: {timezone.localtime(job.expires_at):%Y-%m-%d %H:%M %Z}",
            f"Download: {links['download']}",
            "",
        ]
    lines.append(f"The job: {links['job']}")
    return "\n".join(lines) + "\n"


def watch_subject(watch: Watch) -> str:
    reason = " ".join(watch.last_error.split())[:SUBJECT_REASON_CHARS]
    return f"cloneshelf: watch of {watch.repo_name} failing: {reason}"


def watch_body(watch: Watch) -> str:
    next_at = timezone.localtime(watch.next_check_at)
    return (
        f"Your watch of {watch.url} has failed {watch.failures} times in a row.\n\n"
        f"{watch.last_error}\n\n"
        f"Next check: {next_at:%Y-%m-%d %H:%M %Z} (checks back off while it fails).\n"
        f"The watch: {webhooks.watch_link(watch)}\n"
    )
