import base64
import json
import secrets
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


class History(models.TextChoices):
    """How much of the repository an archive holds."""

    FULL = "full", "Full clone (files and .git)"
    FILES = "files", "Files only, no .git (git archive)"
    SHALLOW = "shallow", "Shallow clone (the last commits only)"
    BUNDLE = "bundle", "git bundle (one file git clone accepts)"
    # Every ref the server advertises, as `git clone --mirror` keeps them: a tar of the bare
    # repository, or one bundle of all refs.
    MIRROR = "mirror", "Mirror (every branch, tag and other ref; a bare repository)"


class ArchiveFormat(models.TextChoices):
    TAR = "tar", "tar"
    TAR_GZ = "tar.gz", "tar.gz"
    ZIP = "zip", "zip"
    # The one format of History.BUNDLE, and of nothing else.
    BUNDLE = "bundle", "bundle"


# What cloneshelf packs itself (clones.pipeline.archives), and what a person picks: every format
# but the bundle, which git writes.
PACKED_FORMATS = tuple(format.value for format in ArchiveFormat if format != ArchiveFormat.BUNDLE)


class SnapshotState(models.TextChoices):
    # A job (its builder) is cloning it; identical jobs wait for it.
    BUILDING = "building", "Building"
    # The archive is in storage, shared by every job that asked for it.
    READY = "ready", "Ready"
    # The clone failed for a reason that is the snapshot's (what the repository holds, a limit on
    # every clone); the jobs that waited for it failed with the same error.
    FAILED = "failed", "Failed"
    # Its builder was cancelled, or failed for a reason of its own (its token, its ref, its
    # worker); the jobs that waited for it went back to the queue.
    ABANDONED = "abandoned", "Abandoned"
    # Its last job expired and the file was deleted.
    DELETED = "deleted", "Deleted"


class Follow(models.TextChoices):
    """What a watch follows (clones.watches)."""

    DEFAULT = "default", "The default branch"
    REFS = "refs", "Named branches and tags"
    # Every ref: each change anywhere makes a snapshot of history `mirror`.
    EVERYTHING = "everything", "Every ref (a mirror)"


class CheckResult(models.TextChoices):
    """How a watch's last check ended."""

    UNCHANGED = "unchanged", "Checked, unchanged"
    CHANGED = "changed", "Changed: snapshot queued"
    FAILED = "failed", "Failed"


ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
# A worker that misses this many heartbeats in a row is taken as dead: a few, so that a database
# busy for a moment does not take a live clone away (that would only restart it, never lose it).
LOST_AFTER_BEATS = 4


def storable(text: str) -> str:
    """Text from outside (git, git servers, webhook receivers) as a text field can hold it:
    PostgreSQL's text type refuses the NUL byte, which git's upload-pack itself sends after
    "possible repository corruption on the remote side"."""
    return text.replace("\x00", "")


def repo_name(url: str) -> str:
    """`flask` for https://github.com/pallets/flask.git: a job's or a watch's repository."""
    path = urlsplit(url).path.rstrip("/")
    return path.rsplit("/", 1)[-1].removesuffix(".git") or "repository"


def lost_after_seconds() -> int:
    return settings.CLONES_HEARTBEAT_SECONDS * LOST_AFTER_BEATS


def lost_its_worker() -> models.Q:
    """Running, but their worker has not said it is alive for LOST_AFTER_BEATS heartbeats: it
    was killed, or its machine died (clones.ops.heartbeat)."""
    silent_for = timedelta(seconds=lost_after_seconds())
    return models.Q(status=Status.RUNNING, heartbeat_at__lt=timezone.now() - silent_for)


def pinned_on_a_watch() -> models.Q:
    """A watch's snapshots pinned by its owner: kept whatever their expiry says while the watch
    lives (clones.retention); a deleted watch's go as one-off archives do."""
    return models.Q(pinned=True, watch__isnull=False)


class CloneJobQuerySet(models.QuerySet):
    def for_user(self, user) -> "CloneJobQuerySet":
        """A person's jobs, newest first; ties broken by id, so that pages of them never skip or
        repeat one."""
        return self.filter(owner=user).order_by("-created_at", "-id")

    def expired(self) -> "CloneJobQuerySet":
        """Done jobs whose archive has outlived its time and should be deleted (not a pinned
        one that retention forgot before the pin, and takes back at its next run)."""
        due = self.filter(status=Status.DONE, expires_at__lte=timezone.now())
        return due.exclude(pinned_on_a_watch())

    def lost(self) -> "CloneJobQuerySet":
        return self.filter(lost_its_worker())

    def task_lost(self) -> "CloneJobQuerySet":
        """Queued, but their task is long overdue: the broker lost it (clones.jobs.enqueue)."""
        overdue = timezone.now() - timedelta(seconds=settings.CLONES_TASK_LOST_SECONDS)
        return self.filter(status=Status.QUEUED, task_due_at__lt=overdue)

    def active(self) -> "CloneJobQuerySet":
        return self.filter(status__in=ACTIVE_STATUSES)

    def attempt(self, job: "CloneJob") -> "CloneJobQuerySet":
        """The job's row while this attempt of it runs: none once it was cancelled, or recovered
        from under its worker (a new attempt has a new started_at)."""
        return self.filter(pk=job.pk, status=Status.RUNNING, started_at=job.started_at)


LFS_HELP = (
    "With the files Git LFS keeps (clones.pipeline.lfs) in place of their pointers, fetched "
    "through the egress proxy."
)
SUBMODULES_HELP = (
    "With the repository's submodules, recursively (clones.pipeline.submodules): each fetched "
    "through the egress proxy, at the commit the repository records."
)
PATHS_HELP = (
    "The repository's paths the archive is limited to (clones.safety.repopaths): files only "
    "holds just them, a full or shallow clone checks just them out; empty: everything."
)


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

    history = models.CharField(max_length=16, choices=History, default=History.FULL)
    depth = models.PositiveIntegerField(
        null=True, blank=True, help_text="Commits to keep, for a shallow clone."
    )
    paths = models.JSONField(default=list, blank=True, help_text=PATHS_HELP)
    submodules = models.BooleanField(default=False, help_text=SUBMODULES_HELP)
    lfs = models.BooleanField(default=False, help_text=LFS_HELP)
    archive_format = models.CharField(
        max_length=16, choices=ArchiveFormat, default=ArchiveFormat.TAR
    )
    snapshot = models.ForeignKey(
        "Snapshot",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="jobs",
        help_text="The archive this job delivers, shared with identical jobs.",
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
    task_due_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When its task was due to reach a worker (queued jobs; none while it waits "
        "for an identical job).",
    )
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="When its worker last said it is alive (while running)."
    )
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)

    # What the job delivered, kept on the job so that its history still shows the size and
    # sha256 after the shared file is gone; `archive` is emptied when the job expires.
    archive = models.FileField(blank=True, help_text="The archive in storage (its snapshot's).")
    archive_size = models.BigIntegerField(null=True, blank=True, help_text="Bytes.")
    archive_sha256 = models.CharField(max_length=64, blank=True)

    webhook_url = models.CharField(
        max_length=2048, blank=True, help_text="Told when the job ends (clones.webhooks)."
    )

    # A snapshot of a watched repository: kept by its watch's retention policy (expires_at stays
    # empty until the policy lets it go), not for CLONES_ARCHIVE_TTL_HOURS.
    watch = models.ForeignKey(
        "Watch",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="snapshots",
        help_text="The watch whose check made this job, if any.",
    )
    pinned = models.BooleanField(
        default=False, help_text="Kept whatever the watch's retention policy says."
    )
    refs_digest = models.CharField(
        max_length=64,
        blank=True,
        help_text="For a mirror: sha256 of every ref and the object it names, as archived.",
    )
    changes = models.JSONField(
        default=list,
        blank=True,
        help_text="For a watch's snapshot: [sha, subject] of the commits since its previous "
        "snapshot, newest first (at most clones.watches.MAX_CHANGES); subjects are untrusted.",
    )
    changes_total = models.PositiveIntegerField(
        null=True, blank=True, help_text="How many commits there were since the previous one."
    )

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
            # The staff dashboard (clones.web.figures): the last 30 days' jobs by day and status
            # and their clone times, read from the index alone, and the latest failures without
            # sorting them all.
            models.Index(fields=["created_at", "status", "started_at", "finished_at"]),
            models.Index(fields=["status", "finished_at"]),
            # A watch's timeline, newest first.
            models.Index(fields=["watch", "-created_at"]),
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
    def page_may_change(self) -> bool:
        """Its page still moves on: it is active, or its webhook is still on its way."""
        if self.is_active:
            return True
        if not self.webhook_url:
            return False
        try:
            return self.delivery.state == DeliveryState.PENDING  # cached for the webhook line
        except WebhookDelivery.DoesNotExist:
            # It is made just after the job ends, unless its process died then.
            just_ended = timezone.now() - timedelta(minutes=1)
            return self.finished_at is not None and self.finished_at > just_ended

    @property
    def can_download(self) -> bool:
        return self.status == Status.DONE and bool(self.archive)

    @property
    def is_signed(self) -> bool:
        """Its archive can be downloaded, with a signed provenance (archives made before
        signing have none)."""
        return self.can_download and self.snapshot is not None and bool(self.snapshot.provenance)

    @property
    def duration(self) -> timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    @property
    def repo_name(self) -> str:
        """Used to name the download."""
        return repo_name(self.url)

    @property
    def top_level(self) -> str:
        """The directory an archive unpacks into: `flask-2ac8988`."""
        return f"{self.repo_name}-{self.commit[:7]}"

    @property
    def download_filename(self) -> str:
        return f"{self.top_level}.{self.archive_format}"


class Snapshot(models.Model):
    """One archive of one commit of one repository, made once, for every job that asks for the
    same thing (clones.pipeline.snapshots): `key` says what that is."""

    SWH_ARCHIVE = "https://archive.softwareheritage.org/"  # a SWHID is a path there

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # sha256 of what its bytes depend on: the normalized URL, commit, options and `ref`; null for
    # an archive whose key is not known (made before snapshots existed and duplicating another's,
    # or before the key held the ref).
    key = models.CharField(max_length=64, unique=True, null=True, blank=True)
    url = models.CharField(max_length=2048, help_text="The repository URL, normalized.")
    commit = models.CharField(max_length=64)
    history = models.CharField(max_length=16, choices=History)
    depth = models.PositiveIntegerField(null=True, blank=True)
    paths = models.JSONField(default=list, blank=True, help_text=PATHS_HELP)
    submodules = models.BooleanField(default=False, help_text=SUBMODULES_HELP)
    lfs = models.BooleanField(default=False, help_text=LFS_HELP)
    archive_format = models.CharField(max_length=16, choices=ArchiveFormat)
    provenance = models.JSONField(
        null=True,
        blank=True,
        help_text="The archive's signed provenance: a DSSE envelope (clones.pipeline.provenance).",
    )
    ref = models.TextField(  # a server's default branch may have a name of any length
        blank=True,
        help_text="The part of the ref its bytes depend on (clones.cloning.ref_in_archive): "
        "the full ref name, 'refs/tags/*' for any tag, or blank for none.",
    )

    state = models.CharField(max_length=16, choices=SnapshotState, default=SnapshotState.BUILDING)
    builder = models.ForeignKey(
        CloneJob,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The job that clones it, while it is building.",
    )
    error = models.TextField(blank=True, help_text="Why it could not be made.")

    archive = models.FileField(blank=True)
    archive_size = models.BigIntegerField(null=True, blank=True, help_text="Bytes.")
    archive_sha256 = models.CharField(max_length=64, blank=True)

    created_at = models.DateTimeField(default=timezone.now)
    ready_at = models.DateTimeField(null=True, blank=True)
    # The latest expiry of the jobs that use it: the file is deleted once it has passed.
    expires_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["state", "expires_at"])]

    def __str__(self) -> str:
        return (
            f"{self.url}@{self.commit[:12]} {self.history} {self.archive_format} "
            f"({self.get_state_display()})"
        )

    @property
    def swhids(self) -> list[tuple[str, str, str]]:
        """(kind, SWHID, its page in the Software Heritage archive) for each identifier the
        signed provenance records (clones.pipeline.swhids); none without one."""
        if not self.provenance:
            return []
        statement = json.loads(base64.b64decode(self.provenance["payload"]))
        source = statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]
        found = source["annotations"].get("swhids", {})
        return [(kind, swhid, self.SWH_ARCHIVE + swhid) for kind, swhid in found.items()]


class WatchQuerySet(models.QuerySet):
    def for_user(self, user) -> "WatchQuerySet":
        return self.filter(owner=user).order_by("url", "id")

    def due(self, now=None) -> "WatchQuerySet":
        """Watches whose next check has come, and that no worker is checking."""
        now = now or timezone.now()
        return self.filter(active=True, next_check_at__lte=now, checking_since__isnull=True)

    def failing(self) -> "WatchQuerySet":
        return self.filter(active=True, failures__gt=0)


class Watch(models.Model):
    """A repository followed over time: checked every `interval_minutes` (or as `cron` says),
    and snapshotted, with the archive options below, each time what it follows has changed
    (clones.watches). Its snapshots are CloneJobs that point at it; retention decides which of
    them are kept (clones.retention)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="watches"
    )
    url = models.CharField(max_length=2048, help_text="The repository URL as submitted.")
    follow = models.CharField(max_length=16, choices=Follow, default=Follow.DEFAULT)
    refs = models.TextField(
        blank=True, help_text="For 'named branches and tags': their names, one per line."
    )

    # The archive options, as a one-off job has them.
    history = models.CharField(max_length=16, choices=History, default=History.FULL)
    depth = models.PositiveIntegerField(null=True, blank=True)
    paths = models.JSONField(default=list, blank=True, help_text=PATHS_HELP)
    submodules = models.BooleanField(default=False, help_text=SUBMODULES_HELP)
    lfs = models.BooleanField(default=False, help_text=LFS_HELP)
    archive_format = models.CharField(
        max_length=16, choices=ArchiveFormat, default=ArchiveFormat.TAR
    )

    interval_minutes = models.PositiveIntegerField(
        default=60, help_text="How often to check, unless `cron` is given."
    )
    cron = models.CharField(
        max_length=100, blank=True, help_text="A cron expression (UTC) saying when to check."
    )

    # Retention, as restic's `forget` and borg's `prune` say it: 0 keeps none by that rule.
    keep_last = models.PositiveIntegerField(default=10)
    keep_hourly = models.PositiveIntegerField(default=0)
    keep_daily = models.PositiveIntegerField(default=7)
    keep_weekly = models.PositiveIntegerField(default=4)
    keep_monthly = models.PositiveIntegerField(default=12)
    keep_yearly = models.PositiveIntegerField(default=0)

    credential = models.TextField(
        blank=True,
        help_text="An access token, encrypted (clones.safety.vault); never shown again.",
    )
    webhook_url = models.CharField(
        max_length=2048, blank=True, help_text="Told of new snapshots and of repeated failures."
    )
    active = models.BooleanField(default=True, help_text="Paused watches are not checked.")

    created_at = models.DateTimeField(default=timezone.now)
    next_check_at = models.DateTimeField(help_text="When it is next due.")
    checking_since = models.DateTimeField(
        null=True, blank=True, help_text="A worker's check of it began then (one at a time)."
    )
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_changed_at = models.DateTimeField(
        null=True, blank=True, help_text="When a check last found a change."
    )
    last_result = models.CharField(max_length=16, choices=CheckResult, blank=True)
    last_error = models.TextField(blank=True, help_text="Why the last check failed.")
    failures = models.PositiveIntegerField(
        default=0, help_text="Checks (or their snapshots) failed in a row."
    )
    # How late checks start: due at next_check_at, begun at checking_since (the dashboard's p95).
    last_lag_seconds = models.FloatField(null=True, blank=True)

    objects = WatchQuerySet.as_manager()

    class Meta:
        indexes = [
            # The dispatcher: active watches by due time.
            models.Index(fields=["active", "next_check_at"]),
            models.Index(fields=["owner", "url"]),
        ]

    def __str__(self) -> str:
        return f"watch of {self.url} ({self.get_follow_display().lower()})"

    def get_absolute_url(self) -> str:
        return reverse("clones:watch", args=[self.id])

    @property
    def followed_refs(self) -> list[str]:
        return [line.strip() for line in self.refs.splitlines() if line.strip()]

    @property
    def repo_name(self) -> str:
        return repo_name(self.url)


class MirrorState(models.TextChoices):
    READY = "ready", "Ready"
    # Taken out of service (a failed fetch or fsck, an interrupted write, evicted): rebuilt on
    # its next use.
    DISCARDED = "discarded", "Discarded"


class Mirror(models.Model):
    """One bare mirror of one repository on the data volume, fetched incrementally, from which
    jobs and snapshots are built (clones.pipeline.mirrors)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    key = models.CharField(max_length=64, unique=True, help_text="sha256 of the normalized URL.")
    url = models.CharField(max_length=2048, help_text="The repository URL, normalized.")
    state = models.CharField(max_length=16, choices=MirrorState, default=MirrorState.READY)
    size_bytes = models.BigIntegerField(default=0)
    hits = models.PositiveIntegerField(default=0, help_text="Builds served by a fetch into it.")
    misses = models.PositiveIntegerField(default=0, help_text="Builds that made it afresh.")
    created_at = models.DateTimeField(default=timezone.now)
    fetched_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["state", "last_used_at"])]

    def __str__(self) -> str:
        return f"mirror of {self.url} ({self.get_state_display()})"


class WorkerReport(models.Model):
    """What the workers last found out about the Docker engine (one row, for /healthz: the web
    process has no engine access of its own)."""

    reported_at = models.DateTimeField()
    engine_ok = models.BooleanField()
    engine_error = models.TextField(blank=True)

    def __str__(self) -> str:
        state = "reachable" if self.engine_ok else f"unreachable ({self.engine_error})"
        return f"engine {state} at {self.reported_at:%Y-%m-%d %H:%M:%S}"


class RefusedSubmission(models.Model):
    """A submission whose URL or webhook URL the policy refused, counted against its owner by
    jobs.check_refusals. What was refused is not kept: only that, and when."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    refused_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["owner", "refused_at"])]

    def __str__(self) -> str:
        return f"{self.owner} refused at {self.refused_at:%Y-%m-%d %H:%M:%S}"


class ApiToken(models.Model):
    """A Bearer token for the JSON API (clones.web.api). Only its sha256 is kept: the token itself
    is shown once, when it is made."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True, help_text="What it is for.")
    digest = models.CharField(max_length=64, unique=True, help_text="sha256 of the token.")
    prefix = models.CharField(max_length=16, help_text="Its first letters, to tell it apart.")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        state = " (revoked)" if self.revoked_at else ""
        return f"{self.owner} {self.prefix}… {self.name}{state}".replace("  ", " ")


class SSHKey(models.Model):
    """A user's SSH key pair, made here (clones.safety.sshkeys) for cloning ssh:// and
    user@host:path URLs: the public half to paste as a deploy key, the private half sealed
    (clones.safety.vault) and opened only by the worker, for a clone of its owner's."""

    owner = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ssh_key"
    )
    public_line = models.TextField(help_text="“ssh-ed25519 AAAA… cloneshelf:<user>”.")
    fingerprint = models.CharField(max_length=100, help_text="SHA256:…, as ssh-keygen -l says.")
    sealed_private = models.TextField(
        help_text="The private half, encrypted (clones.safety.vault); never shown."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "SSH key"

    def __str__(self) -> str:
        return f"{self.owner} {self.fingerprint}"


class KnownHost(models.Model):
    """A host key that SSH clones accept for a host and port: added by an admin, or recorded the
    first time the host was reached when CLONES_SSH_TRUST_ON_FIRST_USE is on. A host whose key
    is not here is not cloned from; one that offers another key is refused as changed."""

    # As ssh looks it up, and as HostKeyAlias names it: "host" for port 22, else "[host]:port".
    pattern = models.CharField(max_length=300)
    key_type = models.CharField(max_length=40)
    key_base64 = models.TextField()
    fingerprint = models.CharField(max_length=100, help_text="SHA256:…, as ssh-keygen -l says.")
    trusted_on_first_use = models.BooleanField(
        default=False,
        help_text="Recorded as the host offered it, the first time a clone reached it; "
        "checked by no one.",
    )
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The admin who added it, or the owner of the clone that first reached it.",
    )
    added_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["pattern", "key_type"]
        constraints = [
            models.UniqueConstraint(fields=["pattern", "key_type"], name="one_key_of_each_type")
        ]

    def __str__(self) -> str:
        return f"{self.pattern} {self.key_type} {self.fingerprint}"

    @property
    def line(self) -> str:
        """The known_hosts line ssh reads."""
        return f"{self.pattern} {self.key_type} {self.key_base64}\n"


def new_webhook_secret() -> str:
    return secrets.token_hex(32)


class Profile(models.Model):
    """What a user keeps beyond Django's user: the secret that signs their webhooks."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE
    )
    # The signing key, 32 random bytes, in hex.
    webhook_secret = models.CharField(max_length=64, default=new_webhook_secret)
    quota_bytes = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="The most bytes of archives this user keeps; empty for CLONES_USER_QUOTA_BYTES.",
    )

    def __str__(self) -> str:
        return f"profile of {self.user}"

    @property
    def signing_key(self) -> bytes:
        return bytes.fromhex(self.webhook_secret)

    @property
    def signing_secret(self) -> str:
        """The key as Standard Webhooks libraries take it (and the profile page shows it):
        "whsec_" and the key in base64."""
        return "whsec_" + base64.b64encode(self.signing_key).decode()


class DeliveryState(models.TextChoices):
    # Waiting for its first or next attempt.
    PENDING = "pending", "Pending"
    # The receiver answered 2xx.
    DELIVERED = "delivered", "Delivered"
    # Every attempt failed, or the URL was no longer allowed; `error` says why.
    FAILED = "failed", "Failed"


class WebhookEvent(models.TextChoices):
    """What a webhook tells (its payload's "event", its X-Cloneshelf-Event header)."""

    CLONE_FINISHED = "clone.finished", "A job ended"
    # A watch's snapshot job is done: a new snapshot in its timeline.
    WATCH_SNAPSHOT = "watch.snapshot", "A watch's new snapshot"
    # A watch failed CLONES_WATCH_FAILURES_TO_TELL times in a row (told once a streak).
    WATCH_FAILING = "watch.failing", "A watch keeps failing"


class WebhookDelivery(models.Model):
    """The notification of one job's end, or of a watch failing, to its webhook URL, with its
    attempts."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.OneToOneField(
        CloneJob,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="delivery",
        help_text="The job whose end it tells (a watch's new snapshot is a job's end too).",
    )
    watch = models.ForeignKey(
        "Watch",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="deliveries",
        help_text="The watch whose failing it tells.",
    )
    event = models.CharField(
        max_length=32, choices=WebhookEvent, default=WebhookEvent.CLONE_FINISHED
    )
    url = models.CharField(max_length=2048)
    state = models.CharField(max_length=16, choices=DeliveryState, default=DeliveryState.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    response_status = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="The receiver's last HTTP status."
    )
    error = models.TextField(blank=True, help_text="Why the last attempt failed.")
    created_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["state", "next_attempt_at"])]

    def __str__(self) -> str:
        about = self.job_id or self.watch_id
        return f"{self.event} of {about} to {self.url} ({self.get_state_display()})"

    @property
    def owner(self):
        return (self.job or self.watch).owner
