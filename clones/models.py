import uuid
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone


class Status(models.TextChoices):
    # Recorded and handed to the queue; no worker has taken it yet.
    QUEUED = "queued", "Queued"
    # A worker owns it: pulling the image, cloning in a container, or packing the archive.
    RUNNING = "running", "Running"
    # The archive is in storage and can be downloaded until expires_at.
    DONE = "done", "Done"
    # It did not work; `error` says why, in words for the person who asked.
    FAILED = "failed", "Failed"
    # The archive was deleted after its time ran out; the history row stays.
    EXPIRED = "expired", "Expired"
    # Someone stopped it before it finished.
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
# A worker that misses this many heartbeats in a row is taken as dead: a few, so that a database
# busy for a moment does not take a live clone away (that would only restart it, never lose it).
LOST_AFTER_BEATS = 4


def lost_its_worker() -> models.Q:
    """Running, but their worker has not said it is alive for LOST_AFTER_BEATS heartbeats: it
    was killed, or its machine died (clones.heartbeat)."""
    silent_for = timedelta(seconds=settings.CLONES_HEARTBEAT_SECONDS * LOST_AFTER_BEATS)
    return models.Q(status=Status.RUNNING, heartbeat_at__lt=timezone.now() - silent_for)


class CloneJobQuerySet(models.QuerySet):
    def for_user(self, user) -> "CloneJobQuerySet":
        return self.filter(owner=user)

    def expired(self) -> "CloneJobQuerySet":
        """Done jobs whose archive has outlived its time and should be deleted."""
        return self.filter(status=Status.DONE, expires_at__lte=timezone.now())

    def lost(self) -> "CloneJobQuerySet":
        return self.filter(lost_its_worker())

    def active(self) -> "CloneJobQuerySet":
        return self.filter(status__in=ACTIVE_STATUSES)


class CloneJob(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="clone_jobs"
    )
    url = models.CharField(max_length=2048, help_text="The repository URL as submitted.")
    ref = models.CharField(
        max_length=255, blank=True, help_text="Branch, tag or commit; blank for the default branch."
    )
    commit = models.CharField(
        max_length=64, blank=True, help_text="The commit that was cloned (SHA-1 or SHA-256)."
    )

    status = models.CharField(max_length=16, choices=Status, default=Status.QUEUED)
    phase = models.CharField(max_length=200, blank=True, help_text="What the worker is doing now.")
    progress = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Percent of the phase done, when it can be told."
    )
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Times a worker started it.")
    waits = models.PositiveSmallIntegerField(
        default=0, help_text="Times it was put back to wait for the engine or for disk space."
    )
    used_token = models.BooleanField(
        default=False, help_text="An access token was given; the token itself is never stored."
    )

    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="When its worker last said it is alive (while running)."
    )
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)

    archive = models.FileField(blank=True, help_text="The tar archive in storage.")
    archive_size = models.BigIntegerField(null=True, blank=True, help_text="Bytes.")
    archive_sha256 = models.CharField(max_length=64, blank=True)

    error = models.TextField(blank=True, help_text="Why it failed, for the person who asked.")
    git_output = models.TextField(blank=True, help_text="The end of git's output, for staff.")

    objects = CloneJobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # A user's history, newest first.
            models.Index(fields=["owner", "-created_at"]),
            # The expiry sweep: done jobs by expiry date.
            models.Index(fields=["status", "expires_at"]),
        ]

    def __str__(self) -> str:
        ref = f"@{self.ref}" if self.ref else ""
        return f"{self.url}{ref} ({self.get_status_display()})"

    def get_absolute_url(self) -> str:
        return reverse("clones:detail", args=[self.id])

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def can_download(self) -> bool:
        return self.status == Status.DONE and bool(self.archive)

    @property
    def duration(self) -> timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    @property
    def repo_name(self) -> str:
        """`flask` for https://github.com/pallets/flask.git; used to name the download."""
        path = urlsplit(self.url).path.rstrip("/")
        name = path.rsplit("/", 1)[-1].removesuffix(".git")
        return name or "repository"

    @property
    def download_filename(self) -> str:
        return f"{self.repo_name}-{self.commit[:7]}.tar"


class WorkerReport(models.Model):
    """What the workers last found out about the Docker engine (one row, for /healthz: the web
    process has no engine access of its own)."""

    reported_at = models.DateTimeField()
    engine_ok = models.BooleanField()
    engine_error = models.TextField(blank=True)

    def __str__(self) -> str:
        state = "reachable" if self.engine_ok else f"unreachable ({self.engine_error})"
        return f"engine {state} at {self.reported_at:%Y-%m-%d %H:%M:%S}"
