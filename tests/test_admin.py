"""The admin (/admin/): columns, filters, search, and the retry / expire-now actions."""

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils import timezone
from django_q.models import Failure, OrmQ

from clones.models import ApiToken, CloneJob, Status
from clones.web import apitokens

from .support.helpers import wait_for_job

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

CHANGELIST = reverse("admin:clones_clonejob_changelist")


def make_job(owner, **fields) -> CloneJob:
    return CloneJob.objects.create(owner=owner, url="https://example.com/team/app.git", **fields)


# Every page of the admin: cloneshelf's own, and those of django-q2, django-axes and auth.
MODEL_ADMINS = list(admin.site._registry.values())


@pytest.fixture
def viewer(django_user_model):
    """Staff who may view everything in the admin and change nothing."""
    user = django_user_model.objects.create_user("viewer", password="pw-viewer-123", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    return user


def test_staff_see_every_job_with_its_columns(client, staff, owner, other_user):
    make_job(owner, status=Status.DONE, archive_size=2048)
    make_job(other_user, status=Status.FAILED, error="nope")
    client.force_login(staff)

    page = client.get(CHANGELIST).content.decode()

    for column in ["Owner", "Url", "Ref", "Status", "Size", "Created at", "Duration", "Expires at"]:
        assert column in page
    assert "owner" in page and "other" in page and "2.0\xa0KB" in page


def test_staff_filter_by_status_and_search_by_owner(client, staff, owner, other_user):
    make_job(owner, status=Status.DONE)
    make_job(other_user, status=Status.FAILED)
    client.force_login(staff)

    assert client.get(CHANGELIST, {"status__exact": "failed"}).context["cl"].result_count == 1
    assert client.get(CHANGELIST, {"q": "other"}).context["cl"].result_count == 1


def test_system_written_fields_are_read_only(client, staff, owner):
    job = make_job(owner)
    client.force_login(staff)
    form = client.get(reverse("admin:clones_clonejob_change", args=[job.id])).context["adminform"]
    assert {"status", "commit", "archive_sha256", "error", "git_output"} <= set(
        form.readonly_fields
    )


def test_users_who_are_not_staff_are_kept_out(client, owner):
    client.force_login(owner)
    assert client.get(CHANGELIST).status_code == 302


@pytest.mark.parametrize("model_admin", MODEL_ADMINS, ids=lambda m: str(m.model._meta))
def test_staff_who_may_only_view_are_offered_no_action(rf, viewer, model_admin):
    request = rf.get("/")
    request.user = viewer
    assert model_admin.has_view_permission(request)
    assert model_admin.get_actions(request) == {}


def test_staff_who_may_only_view_are_refused_every_action_they_post(client, viewer, owner):
    queued = make_job(owner)
    failed = make_job(owner, status=Status.FAILED, error="engine was down")
    name = default_storage.save("keep-me.tar", ContentFile(b"x"))
    done = make_job(owner, status=Status.DONE, archive=name, expires_at=timezone.now())
    token = apitokens.make(owner, "laptop")[0]
    client.force_login(viewer)

    for action in ["cancel", "retry", "expire_now", "delete_selected"]:
        jobs = [queued.id, failed.id, done.id]
        response = client.post(CHANGELIST, {"action": action, "_selected_action": jobs})
        assert response.status_code == 200  # the list again, with nothing done
    tokens = reverse("admin:clones_apitoken_changelist")
    client.post(tokens, {"action": "revoke", "_selected_action": [token.pk]})

    statuses = {job.pk: job.status for job in CloneJob.objects.all()}
    assert statuses == {queued.pk: Status.QUEUED, failed.pk: Status.FAILED, done.pk: Status.DONE}
    assert default_storage.exists(name)
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None


def test_staff_with_the_change_permission_may_act(client, viewer, owner):
    viewer.user_permissions.add(Permission.objects.get(codename="change_clonejob"))
    queued = make_job(owner)
    client.force_login(viewer)

    client.post(CHANGELIST, {"action": "cancel", "_selected_action": [queued.id]})

    queued.refresh_from_db()
    assert queued.status == Status.CANCELLED


def test_resubmitting_the_queues_tasks_needs_the_change_permission(client, viewer):
    failed = Failure.objects.create(
        id="f" * 32, name="lost", func="math.floor", started=timezone.now(),
        stopped=timezone.now(), success=False,
    )  # fmt: skip
    failures = reverse("admin:django_q_failure_changelist")
    client.force_login(viewer)

    client.post(failures, {"action": "resubmit_tasks", "_selected_action": [failed.pk]})
    assert Failure.objects.filter(pk=failed.pk).exists()  # not resubmitted (which deletes it)

    viewer.user_permissions.add(Permission.objects.get(codename="change_failure"))
    client.post(failures, {"action": "resubmit_tasks", "_selected_action": [failed.pk]})
    assert not Failure.objects.filter(pk=failed.pk).exists()
    assert OrmQ.objects.count() == 1  # queued again


def test_django_q_pages_are_in_the_admin(client, staff):
    client.force_login(staff)
    assert client.get(reverse("admin:django_q_schedule_changelist")).status_code == 200


def test_expire_now_deletes_the_archive_and_keeps_the_row(client, staff, owner):
    name = default_storage.save("expire-me.tar", ContentFile(b"x"))
    job = make_job(owner, status=Status.DONE, archive=name, expires_at=timezone.now())
    client.force_login(staff)

    client.post(CHANGELIST, {"action": "expire_now", "_selected_action": [job.id]})

    job.refresh_from_db()
    assert job.status == Status.EXPIRED and job.expired_at
    assert not default_storage.exists(name)


def test_retry_runs_a_failed_job_again(client, staff, owner, start_worker, new_repo, git_daemon):
    repo = new_repo()
    job = make_job(owner, status=Status.FAILED, error="engine was down", attempts=2)
    CloneJob.objects.filter(pk=job.pk).update(url=git_daemon.url(repo.name))
    start_worker()
    client.force_login(staff)

    client.post(CHANGELIST, {"action": "retry", "_selected_action": [job.id]})

    job = wait_for_job(job)
    assert job.status == Status.DONE and job.commit == repo.head
    assert job.error == "" and job.attempts == 1  # a retry starts afresh


def test_staff_download_any_archive_from_the_admin_and_others_cannot(client, staff, owner):
    name = default_storage.save("admin.tar", ContentFile(b"archive bytes"))
    job = make_job(owner, status=Status.DONE, archive=name, commit="abc1234" + "0" * 33)
    download = reverse("admin:clones_clonejob_download", args=[job.id])
    client.force_login(staff)

    page = client.get(reverse("admin:clones_clonejob_change", args=[job.id])).content.decode()
    response = client.get(download)

    assert f'href="{download}"' in page and "Download app-abc1234.tar" in page
    assert b"".join(response.streaming_content) == b"archive bytes"
    client.force_login(owner)  # the owner downloads from their own pages, not the admin
    assert client.get(download).status_code == 302


def test_staff_cancel_queued_and_running_jobs_and_leave_finished_ones(client, staff, owner):
    queued = make_job(owner)
    running = make_job(owner, status=Status.RUNNING, started_at=timezone.now())
    done = make_job(owner, status=Status.DONE)
    client.force_login(staff)

    client.post(
        CHANGELIST,
        {"action": "cancel", "_selected_action": [queued.id, running.id, done.id]},
    )

    for job in (queued, running):
        job.refresh_from_db()
        assert job.status == Status.CANCELLED and job.error == "Cancelled by staff (staff)."
    done.refresh_from_db()
    assert done.status == Status.DONE
