"""Watches and the mirror cache on the staff dashboard, and in the admin (the stored credential
in no page of it)."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from clones import watches
from clones.models import CloneJob, Mirror, MirrorState, Status, Watch
from clones.web import figures

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

TOKEN = "ghp_never_shown_to_staff"


def make_watch(owner, name: str, **fields) -> Watch:
    watch = watches.create(owner, f"https://127.0.0.1/team/{name}.git", credential=TOKEN)
    Watch.objects.filter(pk=watch.pk).update(**fields)
    return watch


@pytest.fixture
def some_watches(owner):
    now = timezone.now()
    make_watch(owner, "later", next_check_at=now + timedelta(hours=1), last_lag_seconds=1.0)
    make_watch(owner, "due", next_check_at=now - timedelta(minutes=1), last_lag_seconds=2.0)
    make_watch(owner, "overdue", next_check_at=now - timedelta(minutes=30), last_lag_seconds=3.0)
    make_watch(owner, "checking", next_check_at=now - timedelta(hours=1), checking_since=now,
               last_lag_seconds=100.0)  # fmt: skip
    make_watch(owner, "failing", next_check_at=now + timedelta(hours=1), failures=2,
               last_result="failed", last_error="Gone.")  # fmt: skip
    make_watch(owner, "paused", active=False, next_check_at=now - timedelta(days=1), failures=9,
               last_lag_seconds=5000.0)  # fmt: skip


def test_watch_figures(some_watches):
    counted = figures.watches()
    assert (counted.total, counted.due, counted.overdue, counted.failing) == (6, 2, 1, 1)
    # Over the active watches that have a lag: 1, 2, 3 and 100 seconds.
    assert counted.lag_p95 == pytest.approx(3 + (100 - 3) * 0.85)


def test_watch_figures_with_no_watches(db):
    counted = figures.watches()
    assert (counted.total, counted.due, counted.lag_p95) == (0, 0, None)


def test_mirror_cache_size_and_hit_rate(db):
    for state, size, hits, misses in [
        (MirrorState.READY, 1000, 6, 1),
        (MirrorState.READY, 24, 2, 1),
        (MirrorState.DISCARDED, 10**9, 0, 2),
    ]:
        Mirror.objects.create(key=f"{size}", url=f"https://example.com/{size}", state=state,
                              size_bytes=size, hits=hits, misses=misses)  # fmt: skip

    cache = figures.mirror_cache()

    assert (cache.mirrors, cache.size_bytes, cache.hits, cache.misses) == (2, 1024, 8, 4)
    assert cache.hit_rate == pytest.approx(8 / 12)
    assert figures.MirrorCache(0, 0, 1, 0, 0).hit_rate is None


def test_the_dashboard_shows_them(client, staff, some_watches):
    Mirror.objects.create(key="k", url="https://example.com/a", size_bytes=2048, hits=3, misses=1)
    client.force_login(staff)
    page = client.get(reverse("clones:dashboard")).content.decode()
    assert "6 watches" in page and "2 due now" in page and "1 overdue" in page
    assert "1 failing" in page and "(95th percentile)" in page
    assert "Hit rate 75 %: 3 builds fetched into a mirror, 1 made one." in page
    failing = client.get(reverse("admin:clones_watch_changelist"), {"failing": "yes"})
    assert failing.context["cl"].result_count == 1


def test_the_admin_never_shows_the_credential(client, staff, owner):
    watch = make_watch(owner, "secret")
    client.force_login(staff)
    for url in [
        reverse("admin:clones_watch_changelist"),
        reverse("admin:clones_watch_change", args=[watch.id]),
    ]:
        page = client.get(url).content.decode()
        assert TOKEN not in page and Watch.objects.get().credential not in page
        assert "credential" not in page.lower()
    assert "Access token stored" in page


def test_staff_pause_watches_from_the_admin(client, staff, owner):
    watch = make_watch(owner, "noisy")
    client.force_login(staff)
    response = client.post(
        reverse("admin:clones_watch_changelist"),
        {"action": "pause", "_selected_action": [str(watch.id)]},
        follow=True,
    )
    assert "Paused 1 watch(es)." in response.content.decode()
    assert not Watch.objects.get(pk=watch.pk).active
    mirrors = client.get(reverse("admin:clones_mirror_changelist"))
    assert mirrors.status_code == 200


def test_a_watch_deleted_in_the_admin_leaves_its_snapshots_the_one_off_expiry(client, staff, owner):
    watch = make_watch(owner, "gone")
    kept = CloneJob.objects.create(owner=owner, url=watch.url, watch=watch, status=Status.DONE)
    client.force_login(staff)
    response = client.post(reverse("admin:clones_watch_delete", args=[watch.id]), {"post": "yes"})
    assert response.status_code == 302 and not Watch.objects.exists()
    kept.refresh_from_db()
    assert kept.watch is None and kept.expires_at is not None
