"""The dashboard's links into the admin, and the permission each admin page needs: the page
shows a link only to someone who may open it."""

from urllib.parse import urlencode
from uuid import UUID

from django.urls import reverse

from ..models import SnapshotState, Status

# Everything on the page is about jobs, and most of it links to their admin pages: the page
# needs what those pages need, not a permission of its own that could be granted without it.
JOBS_PERMISSION = "clones.view_clonejob"


def admin_url(name: str, **filters: str) -> str:
    url = reverse(name)
    return f"{url}?{urlencode(filters)}" if filters else url


def job_changelist(**filters: str) -> str:
    return admin_url("admin:clones_clonejob_changelist", **filters)


def job_change_url(job_id: UUID) -> str:
    return reverse("admin:clones_clonejob_change", args=[job_id])


def user_change_url(user_id: int) -> str:
    return reverse("admin:auth_user_change", args=[user_id])


def admin_links() -> list[tuple[str, str, str]]:
    """(label, address, the permission its admin page needs to be opened)."""
    return [
        ("All jobs", job_changelist(), JOBS_PERMISSION),
        ("Failed jobs", job_changelist(status__exact=Status.FAILED), JOBS_PERMISSION),
        ("Queued jobs", job_changelist(status__exact=Status.QUEUED), JOBS_PERMISSION),
        ("Running jobs", job_changelist(status__exact=Status.RUNNING), JOBS_PERMISSION),
        (
            "Ready archives (snapshots)",
            admin_url("admin:clones_snapshot_changelist", state__exact=SnapshotState.READY),
            "clones.view_snapshot",
        ),
        (
            "Schedules (expiry and recovery)",
            admin_url("admin:django_q_schedule_changelist"),
            "django_q.view_schedule",
        ),
        (
            "Failed tasks of the queue",
            admin_url("admin:django_q_failure_changelist"),
            "django_q.view_failure",
        ),
        ("Users", admin_url("admin:auth_user_changelist"), "auth.view_user"),
    ]


def links_for(user) -> list[tuple[str, str]]:
    """The admin links whose pages `user` may open."""
    return [(label, url) for label, url, needed in admin_links() if user.has_perm(needed)]
