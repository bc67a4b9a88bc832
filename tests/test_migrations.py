"""Rows made before a migration keep working after it."""

from datetime import timedelta
from importlib import import_module

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from clones.models import CloneJob, Snapshot
from clones.pipeline import snapshots
from clones.pipeline.refs import Resolved
from clones.pipeline.snapshots import Role

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

BEFORE_SNAPSHOTS = [("clones", "0005_progress")]
WITH_SNAPSHOTS = [("clones", "0006_snapshots")]
COMMIT = "2ac8988" + "0" * 33
MAIN = Resolved(COMMIT, "refs/heads/main")


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()  # as it is now, after any earlier migrate
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def back_to_the_latest_afterwards(transactional_db):
    """The tests after this one need every migration applied, as they were before it."""
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_archives_made_before_snapshots_become_snapshots_keyed_until_keys_held_the_ref(
    back_to_the_latest_afterwards, owner
):
    old = migrate(BEFORE_SNAPSHOTS)
    Job = old.get_model("clones", "CloneJob")
    now = timezone.now()
    archived = {
        "owner_id": owner.pk,
        "commit": COMMIT,
        "status": "done",
        "archive_size": 10,
        "archive_sha256": "a" * 64,
        "finished_at": now,
    }
    older = Job.objects.create(
        url="https://Example.com/team/widget.git",
        archive="older.tar",
        expires_at=now + timedelta(days=1),
        **archived | {"finished_at": now - timedelta(hours=1)},
    )
    newer = Job.objects.create(
        url="https://example.com/team/widget",
        archive="newer.tar",
        expires_at=now + timedelta(days=2),
        **archived,
    )
    expired = Job.objects.create(
        url="https://example.com/x.git", owner_id=owner.pk, status="expired"
    )

    new = migrate(WITH_SNAPSHOTS)

    Job = new.get_model("clones", "CloneJob")
    older, newer, expired = (Job.objects.get(pk=job.pk) for job in (older, newer, expired))
    assert newer.snapshot.archive.name == "newer.tar"
    key_then = import_module("clones.migrations.0006_snapshots").key_then
    assert newer.snapshot.key == key_then(newer.url, COMMIT)
    assert newer.snapshot.state == "ready" and newer.snapshot.expires_at == newer.expires_at
    # The same commit archived twice: the older file still serves its own job, unkeyed.
    assert older.snapshot.archive.name == "older.tar" and older.snapshot.key is None
    assert expired.snapshot is None
    assert (newer.history, newer.archive_format, newer.depth) == ("full", "tar", None)

    # Which ref it was cloned through was never recorded (0011_snapshot_ref): a new request for
    # that commit builds its own, and the old file keeps serving its job.
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    assert Snapshot.objects.get(pk=newer.snapshot_id).key is None
    job = CloneJob.objects.create(owner=owner, url="https://example.com/team/widget/")
    snapshot, role = snapshots.take(job, MAIN)
    assert role is Role.BUILD and snapshot.pk != newer.snapshot_id
    assert CloneJob.objects.get(pk=newer.pk).snapshot.archive.name == "newer.tar"
