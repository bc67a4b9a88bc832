"""Snapshots: one archive per repository, commit, options and, where the archive names it, ref,
shared by every job that asks for it. A job whose snapshot is ready is done at once, with no
clone; identical jobs in flight wait for the one that builds it; a snapshot's file is deleted
once the last job using it expires.

Every change of state is one conditional UPDATE on the snapshot's row, so that a cache hit and
the deletion of the same snapshot, or two workers building it, can never both win.
"""

import enum
import hashlib
from datetime import timedelta

from django.conf import settings
from django.db.models import Exists, F, Max, OuterRef, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from ..models import (
    ACTIVE_STATUSES,
    CloneJob,
    Snapshot,
    SnapshotState,
    Status,
    pinned_on_a_watch,
)
from ..safety import urlpolicy
from . import archives, cloning, refs

# A snapshot that turns from ready to deleted (or the reverse) between our read and our UPDATE
# sends us round again; more than this many times in a row is not a race any more.
MAX_TAKE_ROUNDS = 5


class Role(enum.Enum):
    HIT = "its snapshot is ready"
    FOLLOW = "another job is building its snapshot"
    BUILD = "it builds its snapshot"


def key(
    url: str,
    commit: str,
    history: str,
    depth: int | None,
    archive_format: str,
    ref: str,
    paths: list[str] = (),
    submodules: bool = False,
    lfs: bool = False,
    private_to: str = "",
) -> str:
    """What a snapshot's bytes depend on, in 64 characters (a URL may have 2,048); `ref` is the
    part of the ref they do (cloning.ref_in_archive), `paths` those it is limited to, and
    `submodules` and `lfs` whether those are in it, `private_to` whose alone it is (none of
    them: the key is what it was before they existed)."""
    where = cloning.url_in_archive(history, url, submodules)
    what = [where, commit, history, str(depth or ""), archive_format, ref]
    if paths:  # a line that no URL or ref can be: a NUL between the paths
        what.append("paths\0" + "\0".join(paths))
    if submodules:
        what.append("submodules\0")
    if lfs:
        what.append("lfs\0")
    if private_to:
        what.append(f"private to\0{private_to}")
    return hashlib.sha256("\n".join(what).encode()).hexdigest()


def take(job: CloneJob, resolved: refs.Resolved) -> tuple[Snapshot, Role]:
    """The snapshot `job` asks for, now that its ref is known to name `resolved`, and what the
    job must do about it. A ready one's expiry is extended to the job's."""
    commit, ref = resolved.commit, cloning.ref_in_archive(job.history, resolved)
    options = job.paths, job.submodules, job.lfs, _private_to(job)
    wanted = key(job.url, commit, job.history, job.depth, job.archive_format, ref, *options)
    for _ in range(MAX_TAKE_ROUNDS):
        snapshot, created = Snapshot.objects.get_or_create(
            key=wanted, defaults=_building(job) | _what(job, commit, ref)
        )
        if created:
            return snapshot, Role.BUILD
        role = _role(job, snapshot)
        if role is not None:
            return snapshot, role
    raise RuntimeError(f"snapshot {wanted} kept changing under job {job.id}")


def _role(job: CloneJob, snapshot: Snapshot) -> Role | None:
    """What `job` must do about an existing snapshot; None if it changed meanwhile."""
    if snapshot.state == SnapshotState.READY:
        return Role.HIT if _extend(snapshot, job_expiry()) else None
    if snapshot.state == SnapshotState.BUILDING and snapshot.builder_id == job.id:
        return Role.BUILD  # this job's own earlier attempt, interrupted
    if snapshot.state == SnapshotState.BUILDING and _builder_is_active(snapshot):
        return Role.FOLLOW
    # Failed, abandoned or deleted, or its builder was deleted: build it (again), unless
    # another job has just said it will.
    taken = _unchanged(snapshot).update(**_building(job), error="")
    return Role.BUILD if taken else None


def _builder_is_active(snapshot: Snapshot) -> bool:
    return CloneJob.objects.active().filter(pk=snapshot.builder_id).exists()


def _private_to(job: CloneJob) -> str:
    """Whose alone a job's archive is: its owner's, if it used a token and fetches from beyond
    the repository (submodules, LFS files). A token may open other repositories on its host
    that the next person, who can read this one, cannot; the ref lookup that lets her share a
    snapshot proves only the repository's own access."""
    return str(job.owner_id) if job.used_token and (job.submodules or job.lfs) else ""


def _building(job: CloneJob) -> dict:
    return {"state": SnapshotState.BUILDING, "builder": job}


def _what(job: CloneJob, commit: str, ref: str) -> dict:
    return {
        "url": urlpolicy.normalized_url(job.url),
        "commit": commit,
        "history": job.history,
        "depth": job.depth,
        "paths": job.paths,
        "submodules": job.submodules,
        "lfs": job.lfs,
        "archive_format": job.archive_format,
        "ref": ref,
    }


def _unchanged(snapshot: Snapshot):
    return Snapshot.objects.filter(
        pk=snapshot.pk, state=snapshot.state, builder=snapshot.builder_id
    )


def job_expiry():
    return timezone.now() + timedelta(hours=settings.CLONES_ARCHIVE_TTL_HOURS)


def _extend(snapshot: Snapshot, until) -> bool:
    """Keep a ready snapshot at least `until`; False if it is no longer ready. One past its time
    is taken up again too (its file is still there: a job expired early, or the sweep has not
    come yet); the sweep marks a row deleted only while it is still due (`delete`), so the two
    cannot both win."""
    return bool(
        Snapshot.objects.filter(pk=snapshot.pk, state=SnapshotState.READY).update(
            expires_at=Greatest(F("expires_at"), until)
        )
    )


def ready(
    snapshot: Snapshot, builder: CloneJob, archive: archives.Archive, provenance: dict
) -> bool:
    """The builder has stored the archive, and signed its `provenance`; False if it is no
    longer this snapshot's builder (cancelled meanwhile): the caller then deletes the file,
    which nobody will use."""
    now = timezone.now()
    return bool(
        Snapshot.objects.filter(
            pk=snapshot.pk, state=SnapshotState.BUILDING, builder=builder
        ).update(
            state=SnapshotState.READY,
            archive=archive.name,
            archive_size=archive.size,
            archive_sha256=archive.sha256,
            provenance=provenance,
            ready_at=now,
            expires_at=job_expiry(),
        )
    )


def builder_ended(
    job: CloneJob, status: str, error: str = "", shared: bool = False
) -> Snapshot | None:
    """A job has just finished (done, failed or cancelled). If it was building a snapshot, that
    snapshot fails with it if the failure is `shared` (gitwords.CloneFailed), or is abandoned:
    the job was cancelled, or failed for a reason of its own; returns the snapshot whose
    waiting jobs must now be settled, if any."""
    if job.snapshot_id is None or status == Status.DONE:
        return job.snapshot
    failed = status == Status.FAILED and shared
    state = SnapshotState.FAILED if failed else SnapshotState.ABANDONED
    Snapshot.objects.filter(pk=job.snapshot_id, state=SnapshotState.BUILDING, builder=job).update(
        state=state, error=error
    )
    return job.snapshot


def stranded() -> list[Snapshot]:
    """Snapshots with jobs waiting for them that nobody will settle: their builder is over, or
    was deleted, without saying so (a crash between two steps), abandoned now."""
    waited_for = Snapshot.objects.filter(jobs__status=Status.QUEUED).distinct()
    building = waited_for.filter(state=SnapshotState.BUILDING)
    active = building.filter(builder__status__in=ACTIVE_STATUSES)
    building.exclude(pk__in=active).update(state=SnapshotState.ABANDONED)
    return list(waited_for.exclude(pk__in=active))


def release(snapshot: Snapshot) -> None:
    """A job using `snapshot` has expired early (the admin's "expire now"): keep the file only
    as long as the jobs still using it need it."""
    delivering = CloneJob.objects.filter(snapshot=snapshot, status=Status.DONE)
    if delivering.filter(expires_at__isnull=True).exists():
        return  # a watch's snapshot: kept until its retention policy lets it go
    needed_until = delivering.aggregate(until=Max("expires_at"))["until"]
    # Only if no cache hit has extended it since it was read.
    Snapshot.objects.filter(
        pk=snapshot.pk, state=SnapshotState.READY, expires_at=snapshot.expires_at
    ).update(expires_at=needed_until or timezone.now())


def due_for_deletion():
    """Ready snapshots past their time that no done job still delivers. The second half is not
    implied by the first: a job's expiry is taken a moment after the one its snapshot got, and
    a watch's done snapshot job has none while its retention keeps it (clones.jobs.mark_done),
    or is pinned (clones.retention)."""
    now = timezone.now()
    still_delivered = CloneJob.objects.filter(
        Q(expires_at__gt=now) | Q(expires_at__isnull=True) | pinned_on_a_watch(),
        snapshot=OuterRef("pk"),
        status=Status.DONE,
    )
    return Snapshot.objects.filter(state=SnapshotState.READY, expires_at__lte=now).exclude(
        Exists(still_delivered)
    )


def delete(snapshot: Snapshot) -> bool:
    """Delete a due snapshot's file; False if a cache hit took it up again first."""
    # The row first: from then on no job can take it, and a file that fails to go is
    # found again by the recovery sweep (no snapshot or job names it).
    deleted = (
        due_for_deletion()
        .filter(pk=snapshot.pk)
        .update(state=SnapshotState.DELETED, archive="", deleted_at=timezone.now())
    )
    if deleted:
        archives.delete(snapshot.archive.name)
    return bool(deleted)
