"""Telling a job's owner that it has ended: to its webhook URL, if it has one
(clones.notify.webhooks), and by email, when the settings name a mail server (EMAIL_HOST, Django's
default mailer) and the owner has an address.

clones.jobs calls job_ended once for every ending (done, failed, cancelled), once it is
committed; an archive's expiry is not told.
"""

import logging
from collections.abc import Callable, Iterable
from functools import partial

from django.core.mail import DEFAULT_MAILER_ALIAS, mailers, send_mail
from django.utils import timezone
from django_q.tasks import async_task

from .. import queue, units
from ..models import CloneJob, Status
from . import webhooks

logger = logging.getLogger(__name__)

SUBJECT_REASON_CHARS = 100
HEADLINES = {Status.DONE: "is done", Status.FAILED: "failed", Status.CANCELLED: "was cancelled"}


def job_ended(job_ids: Iterable) -> None:
    """Queue what the owners of these jobs, which have just ended, are to be told."""
    for job in CloneJob.objects.filter(pk__in=list(job_ids)).select_related("owner"):
        if job.webhook_url:
            _try(webhooks.start, job)
        if DEFAULT_MAILER_ALIAS in mailers and job.owner.email:
            # On the webhooks' queue: a slow mail server must not hold a clone's worker.
            _try(
                partial(async_task, queue.SEND_EMAIL, q_options=webhooks.task_options()),
                str(job.id),
            )


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
    try:
        send_mail(
            email_subject(job),
            email_body(job),
            None,  # DEFAULT_FROM_EMAIL
            [job.owner.email],
            using=DEFAULT_MAILER_ALIAS,
        )
    except OSError:  # smtplib's errors are OSErrors too
        logger.exception("could not email the owner of job %s", job_id)


def email_subject(job: CloneJob) -> str:
    if job.status == Status.FAILED:
        # One line: a header cannot hold a line break.
        reason = " ".join(job.error.split())[:SUBJECT_REASON_CHARS]
        return f"cloneshelf: {job.repo_name} failed: {reason}"
    return f"cloneshelf: {job.repo_name} {job.get_status_display().lower()}"


def email_body(job: CloneJob) -> str:
    ref = f" ({job.ref})" if job.ref else ""
    headline = HEADLINES.get(job.status, job.get_status_display().lower())
    lines = [f"Your clone of {job.url}{ref} {headline}.", ""]
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
