"""The watch pages: the list, new watches (one, or a pasted list), a watch's timeline and what its
owner does there; only the owner sees them. Watches are made by watches.create and their
snapshots through the ORM (their checks and builds are other modules')."""

import re
from datetime import timedelta

import pytest
from django.template.defaultfilters import filesizeformat
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from clones import watches
from clones.models import CheckResult, CloneJob, Follow, History, RefusedSubmission, Watch
from clones.web import charts, watchviews
from clones.web.timeline import days

from ..support.helpers import make_done_job

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

URL = "https://127.0.0.1/team/widget.git"  # an address: no DNS; tests/settings allows it
EVIL = '<script>alert("owned")</script>'


@pytest.fixture
def watch(owner) -> Watch:
    return watches.create(owner, URL, credential="s3cret-token-value")


def snapshot_of(watch: Watch, hours_ago: float, commit: str, **fields) -> CloneJob:
    """A done snapshot of the watch, its archive a real file."""
    job = make_done_job(watch.owner, f"archive of {commit}".encode(), f"{commit}.tar")
    created = timezone.now() - timedelta(hours=hours_ago)
    fields = {"changes": [], "changes_total": None, **fields}
    CloneJob.objects.filter(pk=job.pk).update(
        watch=watch, url=watch.url, commit=commit * 40, created_at=created, expires_at=None,
        **fields,
    )  # fmt: skip
    job.refresh_from_db()
    return job


@pytest.fixture
def timeline(watch) -> list[CloneJob]:
    """Four snapshots, oldest first: the first, two commits, a force-push, one more commit."""
    return [
        snapshot_of(watch, 72, "a"),
        snapshot_of(watch, 48, "b", changes=[["b" * 40, "Second"], ["c" * 40, EVIL]],
                    changes_total=2),
        snapshot_of(watch, 24, "d", changes=[["d" * 40, "Rewritten"]], changes_total=None),
        snapshot_of(watch, 1, "e", changes=[["e" * 40, "Latest"]], changes_total=5),
    ]  # fmt: skip


def comparison_in(page: str) -> str:
    return page.split('id="compare-heading"')[1].split('id="charts-heading"')[0]


def page_of(client, watch: Watch, **query) -> str:
    response = client.get(reverse("clones:watch", args=[watch.id]), query)
    assert response.status_code == 200
    return response.content.decode()


# --- Who sees what -------------------------------------------------------------------------------


def test_only_the_owner_sees_a_watch_and_acts_on_it(client, owner, other_user, watch, timeline):
    page = reverse("clones:watch", args=[watch.id])
    posts = [
        reverse(name, args=[watch.id])
        for name in ["clones:watch-check", "clones:watch-pause", "clones:watch-delete"]
    ] + [reverse("clones:pin", args=[timeline[0].id])]

    assert client.get(page).status_code == 302  # anonymous: to the login page
    client.force_login(other_user)
    assert client.get(page).status_code == 404
    assert client.get(reverse("clones:watch-delete", args=[watch.id])).status_code == 404
    for url in posts:
        assert client.post(url).status_code == 404
    assert URL not in client.get(reverse("clones:watches")).content.decode()
    assert Watch.objects.filter(pk=watch.pk, active=True).exists()
    assert not CloneJob.objects.filter(pinned=True).exists()

    client.force_login(owner)
    listing = client.get(reverse("clones:watches")).content.decode()
    assert URL in listing and watch.get_absolute_url() in listing


def test_the_list_says_which_watches_fail_and_why(owner_client, owner, watch):
    Watch.objects.filter(pk=watch.pk).update(
        last_result=CheckResult.FAILED, failures=3, last_error="The repository is gone (404)."
    )
    watches.create(owner, "https://127.0.0.1/team/paused.git", follow=Follow.REFS, refs="main\nv1")
    Watch.objects.filter(url__endswith="paused.git").update(active=False)

    listing = owner_client.get(reverse("clones:watches")).content.decode()

    assert "Failed 3 times in a row: The repository is gone (404)." in listing
    assert "main, v1" in listing and "Paused" in listing


# --- The timeline --------------------------------------------------------------------------------


def test_the_timeline_lists_every_snapshot_with_its_commits_escaped(owner_client, watch, timeline):
    page = page_of(owner_client, watch)

    # Newest first, each with its date, commit, size and download.
    shown = [page.index("e" * 10), page.index("d" * 10 + "</code>"), page.index("a" * 10)]
    assert shown == sorted(shown)
    for job in timeline:
        assert reverse("clones:download", args=[job.id]) in page
        assert filesizeformat(job.archive_size) in page
    assert "The first snapshot" in page
    assert page.count("history was rewritten upstream") == 1
    assert "5 commits" in page and "and 5 in all" in page
    # The subject is text, never markup.
    assert EVIL not in page
    assert "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;" in page
    # The stored credential is never shown, only that there is one.
    assert "s3cret" not in page and "Stored, encrypted" in page


def test_comparing_two_snapshots_lists_the_commits_between(owner_client, watch, timeline):
    first, second, _rewritten, latest = timeline

    page = comparison_in(page_of(owner_client, watch, older=str(first.id), newer=str(second.id)))
    assert "2 commits listed" in page and "Second" in page and "Latest" not in page
    assert "rewritten upstream between them" not in page

    # Either order; a force-push between them is said.
    page = comparison_in(page_of(owner_client, watch, older=str(latest.id), newer=str(second.id)))
    assert "2 commits listed, 4 more not listed" in page
    assert "Latest" in page and "Rewritten" in page and "Second</li>" not in page
    assert "rewritten upstream between them" in page

    page = page_of(owner_client, watch, older=str(first.id), newer=str(first.id))
    assert "Pick two different snapshots." in page


def test_the_timeline_charts_size_and_commits(owner_client, watch, timeline):
    page = page_of(owner_client, watch)
    assert page.count('role="img"') == 2
    assert "Archive size over time" in page and "New commits per day" in page


def test_a_new_watch_has_no_snapshot_yet(owner_client, watch):
    page = page_of(owner_client, watch)
    assert "No snapshot yet." in page and 'role="img"' not in page


def test_the_last_check_s_failure_is_on_the_timeline(owner_client, watch):
    Watch.objects.filter(pk=watch.pk).update(
        last_result=CheckResult.FAILED, failures=2, last_error="Authentication failed."
    )
    page = page_of(owner_client, watch)
    assert "The last check failed</strong> (2 in a row): Authentication failed." in page


def test_pin_unpin_check_now_pause_resume_and_delete(owner_client, watch, timeline):
    job = timeline[1]
    back = watch.get_absolute_url()

    assert owner_client.post(reverse("clones:pin", args=[job.id])).url == back
    assert CloneJob.objects.get(pk=job.pk).pinned
    assert "Pinned</span>" in page_of(owner_client, watch)
    owner_client.post(reverse("clones:unpin", args=[job.id]))
    assert not CloneJob.objects.get(pk=job.pk).pinned

    later = timezone.now() + timedelta(days=1)
    Watch.objects.filter(pk=watch.pk).update(next_check_at=later)
    owner_client.post(reverse("clones:watch-check", args=[watch.id]))
    assert Watch.objects.get(pk=watch.pk).next_check_at < later

    owner_client.post(reverse("clones:watch-pause", args=[watch.id]))
    assert not Watch.objects.get(pk=watch.pk).active
    assert "Resume" in page_of(owner_client, watch)
    owner_client.post(reverse("clones:watch-resume", args=[watch.id]))
    assert Watch.objects.get(pk=watch.pk).active

    confirm = owner_client.get(reverse("clones:watch-delete", args=[watch.id]))
    assert "Stop watching widget?" in confirm.content.decode()
    assert Watch.objects.filter(pk=watch.pk).exists()  # asking deletes nothing
    response = owner_client.post(reverse("clones:watch-delete", args=[watch.id]))
    assert response.url == reverse("clones:watches")
    assert not Watch.objects.filter(pk=watch.pk).exists()
    # Its snapshots stay in the history, kept as one-off archives are.
    assert CloneJob.objects.filter(pk=job.pk, expires_at__isnull=False, watch=None).exists()


def test_the_history_links_a_snapshot_to_its_watch(owner_client, watch, timeline):
    history = owner_client.get(reverse("clones:history")).content.decode()
    assert history.count(f'href="{watch.get_absolute_url()}"') == len(timeline)
    assert reverse("clones:watches") in history
    job_page = owner_client.get(timeline[0].get_absolute_url()).content.decode()
    assert watch.get_absolute_url() in job_page


def test_the_history_says_how_ones_watches_are_doing(owner_client, owner, other_user, watch):
    history = lambda: owner_client.get(reverse("clones:history")).content.decode()  # noqa: E731
    assert "You watch" in history() and "1 repository" in history()
    Watch.objects.filter(pk=watch.pk).update(
        next_check_at=timezone.now() - timedelta(hours=1), failures=2
    )
    watches.create(other_user, "https://example.org/theirs.git")  # not counted
    page = history()
    assert "1 repository</a>: 1 due for a check (1 overdue), 1 failing." in page
    Watch.objects.all().delete()
    assert reverse("clones:watch-new") in history()


# --- New watches ---------------------------------------------------------------------------------


def new_watch(client, **fields):
    return client.post(reverse("clones:watch-new"), {"urls": URL, **fields})


def test_one_url_makes_one_watch_and_shows_it(owner_client, owner):
    response = new_watch(
        owner_client, follow="refs", refs="main\n\n v2.0 ", interval_minutes="30",
        keep_last="3", token="ghp_secret", archive_format="tar.gz",
    )  # fmt: skip
    watch = Watch.objects.get(owner=owner)
    assert response.url == watch.get_absolute_url()
    assert (watch.follow, watch.followed_refs, watch.interval_minutes) == (
        "refs",
        ["main", "v2.0"],
        30,
    )
    assert (watch.keep_last, watch.keep_daily, watch.archive_format) == (3, 7, "tar.gz")
    assert watch.credential and "ghp_secret" not in watch.credential  # sealed


def test_following_everything_makes_mirrors(owner_client, owner):
    new_watch(owner_client, follow="everything", history="full")
    assert Watch.objects.get(owner=owner).history == History.MIRROR


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"interval_minutes": "1"}, "interval_minutes", "at most every 5 minutes"),
        ({"cron": "* * * * *"}, "cron", "That checks every 1 minute(s)"),
        ({"cron": "0 3 * *"}, "cron", "is not a cron expression of five fields"),
        ({"cron": "0 0 31 2 *"}, "cron", "names no date that exists"),
        ({"follow": "refs", "refs": "\n".join(f"b{n}" for n in range(51))}, "refs", "at most 50"),
        ({"follow": "refs", "refs": ""}, "refs", "Name at least one branch or tag"),
        ({"follow": "refs", "refs": "main\nbad..name"}, "refs", "Line 2: 'bad..name'"),
        ({"follow": "refs", "refs": "A" * 40}, "refs", "Line 1: " + "a" * 40 + " is a commit"),
        ({"keep_last": "-1"}, "keep_last", "greater than or equal to 0"),
    ],
)
def test_options_are_checked_with_clear_messages(owner_client, owner, fields, field, message):
    response = new_watch(owner_client, **fields)
    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors[field])
    assert not Watch.objects.exists()


def test_a_cron_expression_replaces_the_interval(owner_client, owner):
    new_watch(owner_client, cron=" 0  3 * * * ")
    assert Watch.objects.get(owner=owner).cron == "0 3 * * *"


def test_the_credential_is_never_sent_back(owner_client):
    response = new_watch(owner_client, token="ghp_secret", interval_minutes="1")
    assert "ghp_secret" not in response.content.decode()


def test_a_pasted_list_accepts_and_refuses_each_line_on_its_own(owner_client, owner):
    pasted = "\n".join(
        [
            "https://127.0.0.1/team/one.git",
            "",
            "file:///etc/passwd",
            "https://127.0.0.1/team/two.git",
            "not a url at all",
        ]
    )
    response = owner_client.post(reverse("clones:watch-new"), {"urls": pasted, "keep_last": "4"})

    assert response.status_code == 200
    assert sorted(Watch.objects.values_list("url", "keep_last")) == [
        ("https://127.0.0.1/team/one.git", 4),
        ("https://127.0.0.1/team/two.git", 4),
    ]
    page = response.content.decode()
    assert "4 lines: 2 refused" in page
    assert re.search(r"Refused</span> line 3: file:///etc/passwd: <span class=\"error\">\S", page)
    assert "Refused</span> line 5: not a url at all" in page
    assert "Watching</span> line 4:" in page
    # The refused lines are left in the box, to be corrected.
    box = response.context["form"]["urls"].value()
    assert box == "file:///etc/passwd\nnot a url at all"
    # Each refused URL counts, as a refused clone does.
    assert RefusedSubmission.objects.filter(owner=owner).count() == 2


@override_settings(CLONES_MAX_REFUSED_PER_HOUR=2)
def test_a_pasted_list_stops_checking_urls_past_the_refusal_limit(owner_client, owner):
    pasted = "file:///a\nfile:///b\nhttps://127.0.0.1/team/ok.git"
    response = owner_client.post(reverse("clones:watch-new"), {"urls": pasted})
    page = response.content.decode()
    assert "Refused</span> line 3: https://127.0.0.1/team/ok.git" in page
    assert "submissions were refused in the last hour" in page
    assert not Watch.objects.exists()


@override_settings(CLONES_MAX_WATCHES_PER_USER=1)
def test_the_watch_cap_refuses_the_lines_past_it(owner_client, owner):
    pasted = "https://127.0.0.1/team/one.git\nhttps://127.0.0.1/team/two.git"
    page = owner_client.post(reverse("clones:watch-new"), {"urls": pasted}).content.decode()
    assert "line 2: https://127.0.0.1/team/two.git" in page
    assert "You watch 1 repositories, the most allowed" in page
    assert Watch.objects.count() == 1


def test_a_single_refused_url_is_said_on_the_form(owner_client):
    response = owner_client.post(reverse("clones:watch-new"), {"urls": "file:///etc/passwd"})
    assert response.status_code == 200
    assert "1 line: 1 refused" in response.content.decode()
    assert not Watch.objects.exists()


@pytest.mark.parametrize(
    ("largest", "name", "scale"),
    [(10, "bytes", 1), (4096, "kibibytes", 1024), (3 * 2**20, "mebibytes", 2**20),
     (5 * 2**30, "gibibytes", 2**30)],
)  # fmt: skip
def test_the_size_chart_s_unit_keeps_its_numbers_short(largest, name, scale):
    unit = charts.size_unit(largest)
    assert (unit.name, unit.scale) == (name, scale)


def test_the_timeline_and_the_list_come_in_pages(owner_client, owner, watch, timeline, monkeypatch):
    monkeypatch.setattr(watchviews, "SNAPSHOTS_PAGE_SIZE", 3)
    monkeypatch.setattr(watchviews, "WATCHES_PAGE_SIZE", 1)
    watches.create(owner, "https://127.0.0.1/team/second.git")

    first = page_of(owner_client, watch)
    assert "Page 1 of 2" in first and ">Older</a>" in first and "a" * 10 + "</code>" not in first
    second = page_of(owner_client, watch, page="2")
    assert ">Newer</a>" in second and "a" * 10 + "</code>" in second
    listing = owner_client.get(reverse("clones:watches"), {"page": "2"}).content.decode()
    assert ">Previous</a>" in listing and URL in listing and "second.git" not in listing  # by URL


def test_the_charts_count_each_snapshot_s_commits_listed_or_counted(watch, timeline):
    span = days(watch)
    # The first snapshot has none; after the force-push only the one it listed counts.
    assert sum(day.commits or 0 for day in span) == 0 + 2 + 1 + 5
    assert span[-1].size == timeline[-1].archive_size
    assert len(span) >= 3
