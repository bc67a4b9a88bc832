from uuid import UUID

from axes import admin as axes_admin
from axes.models import AccessAttempt
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseBase
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_safe
from django_q import admin as django_q_admin
from django_q.models import Failure, Success

from . import jobs, retention, watches
from .models import (
    ApiToken,
    CloneJob,
    KnownHost,
    Mirror,
    Profile,
    Snapshot,
    SSHKey,
    Status,
    Watch,
    WebhookDelivery,
)
from .pipeline import sshaccess
from .safety import sshkeys
from .web import apitokens, downloads


@admin.register(CloneJob)
class CloneJobAdmin(admin.ModelAdmin):
    list_display = [
        "url",
        "owner",
        "ref",
        "history",
        "archive_format",
        "status",
        "size",
        "created_at",
        "duration",
        "expires_at",
    ]
    list_filter = ["status", "history", "archive_format", "created_at"]
    search_fields = ["url", "owner__username", "owner__email"]
    date_hierarchy = "created_at"
    list_select_related = ["owner"]
    # Each action changes the jobs it acts on, so each needs the change permission: staff who
    # may only view jobs are neither shown the actions nor let through when they post one.
    actions = ["cancel", "retry", "expire_now"]
    # Jobs come from the form or the CLI, which check their input; here they are watched and
    # steered, not edited.
    readonly_fields = [
        "id",
        "owner",
        "url",
        "ref",
        "commit",
        "history",
        "depth",
        "paths",
        "submodules",
        "lfs",
        "archive_format",
        "snapshot",
        "status",
        "phase",
        "attempts",
        "created_at",
        "started_at",
        "finished_at",
        "expires_at",
        "expired_at",
        "archive_link",
        "archive_size",
        "archive_sha256",
        "webhook_url",
        "watch",
        "pinned",
        "error",
        "git_output",
    ]

    def has_add_permission(self, request) -> bool:
        return False

    def get_urls(self) -> list:
        download = path(
            "<uuid:job_id>/download/",
            self.admin_site.admin_view(require_safe(self.download)),
            name="clones_clonejob_download",
        )
        return [download, *super().get_urls()]

    def download(self, request: HttpRequest, job_id: UUID) -> HttpResponseBase:
        """Staff download any job's archive here; outside the admin, only owners can."""
        job = get_object_or_404(CloneJob, pk=job_id)
        if not self.has_view_permission(request, job):
            raise PermissionDenied
        return downloads.archive_response(request, job)

    @admin.display(description="Archive")
    def archive_link(self, job: CloneJob) -> str:
        if not job.can_download:
            return "—"
        url = reverse("admin:clones_clonejob_download", args=[job.id])
        return format_html('<a href="{}">Download {}</a>', url, job.download_filename)

    @admin.display(description="Size", ordering="archive_size")
    def size(self, job: CloneJob) -> str:
        return filesizeformat(job.archive_size) if job.archive_size is not None else "—"

    @admin.action(description="Cancel selected queued or running jobs", permissions=["change"])
    def cancel(self, request, queryset) -> None:
        by = f"staff ({request.user.get_username()})"
        cancelled = sum(jobs.cancel(job, by=by) for job in queryset)
        self.message_user(request, f"Cancelled {cancelled} job(s).", messages.INFO)

    @admin.action(description="Retry selected failed or cancelled jobs", permissions=["change"])
    def retry(self, request, queryset) -> None:
        retried = sum(jobs.requeue(job) for job in queryset)
        skipped = queryset.count() - retried
        self.message_user(
            request,
            f"Queued {retried} job(s) again; {skipped} were not failed "
            "or cancelled and were left alone.",
            messages.INFO,
        )

    @admin.action(description="Expire selected archives now", permissions=["change"])
    def expire_now(self, request, queryset) -> None:
        expired = sum(jobs.expire(job) for job in queryset.filter(status=Status.DONE))
        self.message_user(request, f"Expired {expired} archive(s).", messages.INFO)


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
    """Archives shared by identical jobs: watched here, made and deleted by the workers."""

    list_display = ["url", "commit", "ref", "history", "archive_format", "state", "expires_at"]
    list_filter = ["state", "history", "archive_format"]
    search_fields = ["url", "commit"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, snapshot=None) -> bool:
        return False


class FailingFilter(admin.SimpleListFilter):
    title = "failing"
    parameter_name = "failing"

    def lookups(self, request, model_admin) -> list[tuple[str, str]]:
        return [("yes", "Failing (active, last checks failed)")]

    def queryset(self, request, queryset):
        return queryset.failing() if self.value() == "yes" else queryset


@admin.register(Watch)
class WatchAdmin(admin.ModelAdmin):
    """Watches are made and steered by their owners (pages, API, `manage.py watch`); staff see
    them and may pause them. The stored credential is in no form and no list: `has_token` only
    says whether there is one."""

    list_display = [
        "url", "owner", "follow", "active", "next_check_at", "last_result", "failures",
    ]  # fmt: skip
    list_filter = [FailingFilter, "active", "follow", "last_result"]
    search_fields = ["url", "owner__username"]
    list_select_related = ["owner"]
    fields = readonly_fields = [
        "id", "owner", "url", "follow", "refs", "history", "depth", "paths", "submodules", "lfs",
        "archive_format", "interval_minutes", "cron", "keep_last", "keep_hourly", "keep_daily",
        "keep_weekly", "keep_monthly", "keep_yearly", "has_token", "webhook_url", "active",
        "created_at", "next_check_at", "checking_since", "last_checked_at", "last_changed_at",
        "last_result", "last_error", "failures", "last_lag_seconds",
    ]  # fmt: skip
    actions = ["pause"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(boolean=True, description="Access token stored")
    def has_token(self, watch: Watch) -> bool:
        return bool(watch.credential)

    @admin.action(description="Pause selected watches", permissions=["change"])
    def pause(self, request, queryset) -> None:
        active = list(queryset.filter(active=True))
        for watch in active:
            watches.set_active(watch, False)
        self.message_user(request, f"Paused {len(active)} watch(es).", messages.INFO)

    # Deleted as its owner deletes one: its snapshots on their way cancelled, the done ones
    # given the one-off expiry (a bare Watch.delete would keep them for ever).
    def delete_model(self, request, watch: Watch) -> None:
        watches.delete(watch)

    def delete_queryset(self, request, queryset) -> None:
        for watch in queryset:
            watches.delete(watch)


@admin.register(Mirror)
class MirrorAdmin(admin.ModelAdmin):
    """The mirror cache on the data volume: watched here, kept by the workers."""

    list_display = ["url", "state", "size", "hits", "misses", "fetched_at", "last_used_at"]
    list_filter = ["state"]
    search_fields = ["url"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, mirror=None) -> bool:
        return False

    @admin.display(description="Size", ordering="size_bytes")
    def size(self, mirror: Mirror) -> str:
        return filesizeformat(mirror.size_bytes)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """API tokens are made by their owners (profile page, `manage.py apitoken`) and shown to
    them once; staff see them and can revoke them, nothing more."""

    list_display = ["owner", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["owner__username", "name", "prefix"]
    list_select_related = ["owner"]
    fields = ["owner", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Revoke selected API tokens", permissions=["change"])
    def revoke(self, request, queryset) -> None:
        revoked = apitokens.revoke_all(queryset)
        self.message_user(request, f"Revoked {revoked} API token(s).", messages.INFO)


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    """Where staff give a person a quota of their own (clones.retention: empty for
    CLONES_USER_QUOTA_BYTES, 0 for none). The webhook signing secret is its owner's, not shown."""

    list_display = ["user", "quota_bytes", "archives_kept"]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user"]
    fields = ["user", "quota_bytes", "archives_kept"]

    def get_readonly_fields(self, request, profile=None) -> list[str]:
        return ["user", "archives_kept"] if profile else ["archives_kept"]

    @admin.display(description="archives kept")
    def archives_kept(self, profile: Profile) -> str:
        return filesizeformat(retention.usage(profile.user_id)) if profile.pk else "—"


@admin.register(SSHKey)
class SSHKeyAdmin(admin.ModelAdmin):
    """SSH keys are made by their owners (profile page); staff see whose they are and can delete
    one that must stop being used. The private half is never shown."""

    list_display = ["owner", "fingerprint", "created_at"]
    search_fields = ["owner__username", "fingerprint"]
    list_select_related = ["owner"]
    fields = ["owner", "public_line", "fingerprint", "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, key=None) -> bool:
        return False  # nothing of a key is edited: it is replaced by its owner, or deleted


class KnownHostForm(forms.ModelForm):
    """A host key is added as one line of `ssh-keyscan` output (or of a known_hosts file), after
    checking it against the fingerprint the host's operators publish."""

    line = forms.CharField(
        label="Host key line",
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One line as `ssh-keyscan -p PORT HOST` prints it: “host ssh-ed25519 AAAA…”, "
        "or “[host]:port ssh-ed25519 AAAA…” for a port other than 22. Compare its fingerprint, "
        "shown once it is added, with the one the host publishes.",
    )

    class Meta:
        model = KnownHost
        fields = []

    def clean_line(self) -> sshkeys.KnownHost:
        return sshkeys.parse_known_host(self.cleaned_data["line"])

    def clean(self) -> dict:
        cleaned = super().clean()
        seen = cleaned.get("line")
        if seen is None:  # the line itself was refused, saying why
            return cleaned
        # One key of each type per host, as a host has: a second would be a changed key.
        if KnownHost.objects.filter(pattern=seen.pattern, key_type=seen.key_type).exists():
            raise forms.ValidationError(
                f"{seen.pattern} has a {seen.key_type} key here already: delete it first to "
                "replace it."
            )
        for name, value in sshaccess.known_host_fields(seen).items():
            setattr(self.instance, name, value)
        return cleaned


@admin.register(KnownHost)
class KnownHostAdmin(admin.ModelAdmin):
    """The host keys SSH clones accept. Added here, one line each; recorded by a first clone
    when CLONES_SSH_TRUST_ON_FIRST_USE is on, marked so until someone confirms it. A host that
    changed its key is refused until its old key here is replaced (deleted, the new one added)."""

    list_display = [
        "pattern",
        "key_type",
        "fingerprint",
        "trusted_on_first_use",
        "added_by",
        "added_at",
    ]
    list_filter = ["trusted_on_first_use", "key_type"]
    search_fields = ["pattern", "fingerprint"]
    list_select_related = ["added_by"]
    readonly_fields = [*list_display, "key_base64"]
    actions = ["confirm"]

    def get_form(self, request, known_host=None, **kwargs):
        if known_host is None:
            kwargs["form"] = KnownHostForm
        return super().get_form(request, known_host, **kwargs)

    def get_fields(self, request, known_host=None) -> list[str]:
        return self.readonly_fields if known_host else ["line"]

    def get_readonly_fields(self, request, known_host=None) -> list[str]:
        return self.readonly_fields if known_host else []

    def save_model(self, request, known_host, form, change) -> None:
        if not change:
            known_host.added_by = request.user
        super().save_model(request, known_host, form, change)

    def changelist_view(self, request, extra_context=None):
        if request.method == "GET":  # once, not again on the page an action redirects to
            self.message_user(request, _trust_on_first_use())
        return super().changelist_view(request, extra_context)

    @admin.action(
        description="Confirm selected keys (checked against what the host publishes)",
        permissions=["change"],
    )
    def confirm(self, request, queryset) -> None:
        confirmed = queryset.filter(trusted_on_first_use=True).update(trusted_on_first_use=False)
        self.message_user(request, f"Confirmed {confirmed} host key(s).", messages.INFO)


def _trust_on_first_use() -> str:
    if settings.CLONES_SSH_TRUST_ON_FIRST_USE:
        return (
            "Trust on first use is on (CLONES_SSH_TRUST_ON_FIRST_USE): a host with no key here "
            "has the key it first offers recorded and trusted."
        )
    return (
        "Trust on first use is off (CLONES_SSH_TRUST_ON_FIRST_USE): a host with no key here is "
        "refused until its key is added."
    )


DELIVERY_FIELDS = [
    "job",
    "watch",
    "event",
    "url",
    "state",
    "attempts",
    "response_status",
    "error",
    "created_at",
    "next_attempt_at",
    "delivered_at",
]


class WebhookDeliveryInline(admin.StackedInline):
    """A job's webhook delivery, on the job's page: watched, never edited."""

    model = WebhookDelivery
    fields = readonly_fields = DELIVERY_FIELDS[2:]
    can_delete = False

    def has_add_permission(self, request, job=None) -> bool:
        return False

    def has_change_permission(self, request, job=None) -> bool:
        return False


# Here rather than in CloneJobAdmin itself: the inline is defined after it.
CloneJobAdmin.inlines = [WebhookDeliveryInline]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """Webhooks sent when jobs ended (clones.notify.webhooks): their state, attempts and last
    error."""

    list_display = [
        "job",
        "event",
        "url",
        "state",
        "attempts",
        "response_status",
        "next_attempt_at",
    ]
    list_filter = ["state", "event"]
    search_fields = ["url", "job__url", "job__owner__username"]
    list_select_related = ["job"]
    fields = readonly_fields = DELIVERY_FIELDS

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, delivery=None) -> bool:
        return False


# The actions django-q2 and django-axes add to the admin ask for no permission: a staff user who
# may only view the queue's tasks could run them again, or one who may only view login failures
# delete some. Here each needs the permission of what it does.
@admin.action(description="Resubmit selected tasks to queue", permissions=["change"])
def resubmit_tasks(model_admin, request, queryset) -> None:
    django_q_admin.resubmit_task(model_admin, request, queryset)


class AccessAttemptAdmin(axes_admin.AccessAttemptAdmin):
    @admin.action(description="Clean up expired attempts", permissions=["delete"])
    def cleanup_expired_attempts(self, request, queryset) -> None:
        super().cleanup_expired_attempts(request, queryset)


for model, model_admin in [
    (Success, type("TaskAdmin", (django_q_admin.TaskAdmin,), {"actions": [resubmit_tasks]})),
    (Failure, type("FailAdmin", (django_q_admin.FailAdmin,), {"actions": [resubmit_tasks]})),
    (AccessAttempt, AccessAttemptAdmin),
]:
    admin.site.unregister(model)
    admin.site.register(model, model_admin)
