"""GET /healthz: can the site do its work? For compose healthchecks and monitors.

The web process has no access to the Docker engine. What it knows of the engine is what the
workers' recovery sweep last wrote (WorkerReport); that a worker runs at all, it reads from the
workers' scheduler advancing the recovery schedule. `manage.py healthcheck` runs the same
checks for the worker's container, which has no HTTP server.
"""

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import DatabaseError, connection
from django.db.models import Count, Min, Q
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_q.models import Schedule

from .. import queue, units
from ..models import CloneJob, Status, WorkerReport

# django-q2's scheduler runs every 30 s in each cluster, busy or not, so a live one is never
# much more than 30 s late with a due schedule. Four missed passes: no cluster is running.
HEARTBEAT_GRACE_SECONDS = 120

Check = dict[str, object]


def check_database() -> Check:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"ok": True}


def check_storage() -> Check:
    if settings.CLONES_S3_BUCKET:
        return _check_bucket()
    location = Path(default_storage.location)
    # FileSystemStorage makes its directory on its first save; until then, it needs the parent.
    directory = location if location.exists() else location.parent
    if not directory.is_dir():
        return {"ok": False, "error": "The archive directory is missing."}
    if not os.access(directory, os.W_OK | os.X_OK):
        return {"ok": False, "error": "The archive directory is not writable by this process."}
    free, needed = shutil.disk_usage(directory).free, settings.CLONES_MIN_FREE_BYTES
    if free < needed:
        error = (
            f"{units.human_size(free)} free, less than CLONES_MIN_FREE_BYTES "
            f"({units.human_size(needed)}): jobs wait instead of starting."
        )
        return {"ok": False, "free_bytes": free, "error": error}
    return {"ok": True, "free_bytes": free}


def _check_bucket() -> Check:
    try:
        default_storage.bucket.meta.client.head_bucket(Bucket=settings.CLONES_S3_BUCKET)
    except (BotoCoreError, ClientError) as exc:
        return {"ok": False, "error": f"The archive bucket cannot be reached: {exc}"}
    return {"ok": True}


def check_queue() -> Check:
    """Information only: a long queue is load, not an outage."""
    queued = Q(status=Status.QUEUED)
    counts = CloneJob.objects.active().aggregate(
        queued=Count("pk", filter=queued),
        running=Count("pk", filter=Q(status=Status.RUNNING)),
        oldest=Min("created_at", filter=queued),
    )
    oldest = counts.pop("oldest")
    age = None if oldest is None else round(units.seconds_since(oldest))
    return {"ok": True, **counts, "oldest_queued_seconds": age}


def check_worker() -> Check:
    next_run = (
        Schedule.objects.filter(name=queue.RECOVERY_SCHEDULE)
        .values_list("next_run", flat=True)
        .first()
    )
    if next_run is None:
        return {"ok": False, "error": "The recovery schedule is missing (migrate creates it)."}
    overdue = round(units.seconds_since(next_run))
    if overdue > HEARTBEAT_GRACE_SECONDS:
        error = f"The recovery sweep is {overdue} s overdue: no worker is running its scheduler."
        return {"ok": False, "overdue_seconds": overdue, "error": error}
    return {"ok": True, "overdue_seconds": overdue}


def check_engine() -> Check:
    """Up, down or unknown, as the last sweep found it. Unknown (no report yet, or an old one)
    does not fail: sweeps stop only when no worker runs, which the worker check reports, or
    while every worker is busy with clones, which is not an outage. A "down" stays down until
    a later sweep finds the engine answering."""
    last = WorkerReport.objects.filter(pk=1).first()
    if last is None:
        return {"ok": True, "state": "unknown", "reported_seconds_ago": None}
    age = round(units.seconds_since(last.reported_at))
    if not last.engine_ok:
        return {
            "ok": False,
            "state": "down",
            "reported_seconds_ago": age,
            "error": last.engine_error,
        }
    state = "up" if age <= engine_report_max_age() else "unknown"
    return {"ok": True, "state": state, "reported_seconds_ago": age}


def engine_report_max_age() -> int:
    """Seconds an "up" is believed. The sweep is a queued task: behind busy workers it waits as
    long as a clone task may run."""
    return settings.CLONES_TASK_TIMEOUT + 2 * 60 * settings.CLONES_RECOVERY_INTERVAL_MINUTES


CHECKS: dict[str, Callable[[], Check]] = {
    "database": check_database,
    "storage": check_storage,
    "queue": check_queue,
    "worker": check_worker,
    "engine": check_engine,
}


def report() -> dict:
    checks = {name: _run(check) for name, check in CHECKS.items()}
    healthy = all(result["ok"] for result in checks.values())
    return {"status": "ok" if healthy else "down", "checks": checks}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Anyone may ask whether each check passes; why one fails is for staff (and for
    `manage.py healthcheck`): the errors carry the database's, the bucket's and the engine's own
    words, which name hosts, addresses and paths."""
    result = report()
    status = 200 if result["status"] == "ok" else 503
    if not _asked_by_staff(request):
        result["checks"] = {name: _without_error(check) for name, check in result["checks"].items()}
    return JsonResponse(result, status=status)


def _asked_by_staff(request) -> bool:
    """Whether the caller is staff; not, when the database that says so cannot be reached
    (the session and the user live there): the answer must not turn into an error page."""
    try:
        return request.user.is_staff
    except DatabaseError:
        return False


def _without_error(check: Check) -> Check:
    return {key: value for key, value in check.items() if key != "error"}


def _run(check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as exc:
        # With the database gone, every check but storage ends here; each still answers.
        return {"ok": False, "error": str(exc) or type(exc).__name__}
