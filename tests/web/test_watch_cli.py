"""`manage.py watch`: add (checked as the web form checks), list, remove, check now."""

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from clones import watches
from clones.models import Follow, Watch

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

URL = "https://127.0.0.1/team/repo.git"  # an address: no DNS; tests/settings allows it


def watch_command(*args) -> str:
    out = io.StringIO()
    call_command("watch", *args, stdout=out)
    return out.getvalue()


def test_add_with_options_and_a_token_from_the_environment(owner, monkeypatch):
    monkeypatch.setenv("WATCH_TOKEN", "ghp_fromenv")
    out = watch_command(
        "add", URL, "--user", "owner", "--ref", "main", "--ref", "v1", "--interval", "30",
        "--keep-last", "3", "--format", "zip", "--token-from-env", "WATCH_TOKEN",
    )  # fmt: skip
    watch = Watch.objects.get(owner=owner)
    assert out.startswith(f"watching {watch.id} {URL}")
    assert (watch.follow, watch.followed_refs) == (Follow.REFS, ["main", "v1"])
    assert (watch.interval_minutes, watch.keep_last, watch.archive_format) == (30, 3, "zip")
    assert watch.credential and "ghp_fromenv" not in watch.credential


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["file:///etc/passwd"], "url: "),
        ([URL, "--interval", "1"], "interval_minutes: That checks every 1 minute(s)"),
        ([URL, "--cron", "61 * * * *"], "cron: '61 * * * *' is not a cron expression"),
        ([URL, "--token-from-env", "NO_SUCH_VARIABLE_HERE"], "NO_SUCH_VARIABLE_HERE is empty"),
    ],
)
def test_bad_input_is_refused_with_the_form_s_message(owner, args, message):
    with pytest.raises(CommandError) as refused:
        watch_command("add", *args, "--user", "owner")
    assert message in str(refused.value)
    assert not Watch.objects.exists()


def test_list_check_and_remove(owner, other_user):
    mine = watches.create(owner, URL)
    theirs = watches.create(other_user, "https://127.0.0.1/team/other.git")
    Watch.objects.filter(pk=mine.pk).update(failures=2, last_error="Gone.", last_result="failed")

    listed = watch_command("list")
    assert f"{mine.id} owner {URL} (the default branch; active; last: Failed, failed 2" in listed
    assert str(theirs.id) in listed
    assert str(theirs.id) not in watch_command("list", "--user", "owner")

    Watch.objects.filter(pk=mine.pk).update(next_check_at=timezone.now() + timedelta(days=1))
    assert watch_command("check", str(mine.id)) == f"due now {mine.id}\n"
    assert Watch.objects.get(pk=mine.pk).next_check_at <= timezone.now()
    watches.set_active(mine, False)
    with pytest.raises(CommandError, match="is paused"):
        watch_command("check", str(mine.id))

    assert watch_command("remove", str(mine.id)) == f"deleted {mine.id}\n"
    assert not Watch.objects.filter(pk=mine.pk).exists()
    with pytest.raises(CommandError, match="There is no watch 'nonsense'"):
        watch_command("remove", "nonsense")
