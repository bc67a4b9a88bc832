from uuid import UUID

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST, require_safe

from .. import jobs
from ..models import CloneJob, Status, Watch
from ..safety import signing
from . import downloads, figures
from .forms import CloneRequestForm
from .history import HistoryFilter

HISTORY_PAGE_SIZE = 25


def _own_job(request: HttpRequest, job_id: UUID) -> CloneJob:
    """The job if it is the requester's; 404 otherwise, so ids of others' jobs reveal nothing."""
    return get_object_or_404(CloneJob.objects.for_user(request.user), pk=job_id)


@login_required
@sensitive_post_parameters("token")
def new_clone(request: HttpRequest) -> HttpResponse:
    form = CloneRequestForm(request.POST or None)
    if request.method != "POST":
        return _render_form(request, form)
    try:
        valid = form.is_valid_for(request.user)
    except jobs.Refused as refused:
        return _refused(request, form, refused)
    return _submit(request, form) if valid else _render_form(request, form)


def _submit(request: HttpRequest, form: CloneRequestForm) -> HttpResponse:
    try:
        job = jobs.submit(request.user, **form.cleaned_data)
    except jobs.Refused as refused:
        return _refused(request, form, refused)
    return redirect(job)


def _refused(request: HttpRequest, form: CloneRequestForm, refused: jobs.Refused) -> HttpResponse:
    form.refuse(str(refused))
    response = _render_form(request, form, status=429)
    response["Retry-After"] = str(refused.retry_after)
    return response


def _render_form(request: HttpRequest, form: CloneRequestForm, status: int = 200) -> HttpResponse:
    recent = CloneJob.objects.for_user(request.user)[:5]
    return render(request, "clones/new.html", {"form": form, "recent": recent}, status=status)


@login_required
def history(request: HttpRequest) -> HttpResponse:
    mine = CloneJob.objects.for_user(request.user)
    filters = HistoryFilter(mine, request.GET or None)
    page = Paginator(filters.apply(mine), HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    # The page links keep the filters.
    kept = request.GET.copy()
    kept.pop("page", None)
    context = {
        "page": page,
        "filters": filters,
        "kept_query": kept.urlencode(),
        # Someone with no clones yet needs a first step, not filters.
        "show_filters": filters.is_filtering or page.paginator.count > 0,
        "watches": figures.watch_counts(Watch.objects.filter(owner=request.user)),
    }
    return render(request, "clones/history.html", context)


@login_required
def detail(request: HttpRequest, job_id: UUID) -> HttpResponse:
    return render(request, "clones/detail.html", {"job": _own_job(request, job_id)})


@login_required
def panel(request: HttpRequest, job_id: UUID) -> HttpResponse:
    """The job page's panel alone, for job.js to put in place while the job runs."""
    response = render(request, "clones/_job.html", {"job": _own_job(request, job_id)})
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_safe
def download(request: HttpRequest, job_id: UUID) -> HttpResponseBase:
    return downloads.archive_response(request, _own_job(request, job_id))


@login_required
@require_safe
def checksum(request: HttpRequest, job_id: UUID) -> HttpResponse:
    return downloads.checksum_response(_own_job(request, job_id))


@login_required
@require_safe
def provenance(request: HttpRequest, job_id: UUID) -> HttpResponse:
    return downloads.provenance_response(_own_job(request, job_id))


@login_required
@require_safe
def by_digest(request: HttpRequest, sha256: str) -> HttpResponseBase:
    """An archive by its sha256, to whoever has a job that delivers it (shared snapshots
    included): the newest such job of theirs. 404 for anyone else, as for a job of another's."""
    delivering = CloneJob.objects.for_user(request.user).filter(
        status=Status.DONE, archive_sha256=sha256.lower()
    )
    job = next((job for job in delivering if job.can_download), None)
    if job is None:
        raise Http404("You have no archive with this sha256.")
    return downloads.by_digest_response(request, job)


@require_safe
def signing_keys(request: HttpRequest) -> HttpResponse:
    return downloads.keys_response(request)


@require_safe
def signing_keys_page(request: HttpRequest) -> HttpResponse:
    """The same keys, for people: anyone may see them, logged in or not."""
    return render(request, "clones/keys.html", {"keys": signing.published()["keys"]})


@login_required
@require_POST
def clone_again(request: HttpRequest, job_id: UUID) -> HttpResponse:
    previous = _own_job(request, job_id)
    # The URL passed once, but the policy may have changed since: check it again.
    form = CloneRequestForm(
        {
            "url": previous.url,
            "ref": previous.ref,
            "history": previous.history,
            "depth": previous.depth,
            "paths": previous.paths,
            "submodules": previous.submodules,
            "lfs": previous.lfs,
            "archive_format": previous.archive_format,
            "webhook_url": previous.webhook_url,
        }
    )
    if not (form.is_valid() and form.has_what_it_needs(request.user)):
        return _render_form(request, form, status=400)
    if previous.used_token:
        # The token was deleted after its clone: ask for it again, URL and ref filled in.
        form = CloneRequestForm(initial=form.cleaned_data)
        form.fields["token"].help_text = "Enter the access token again: tokens are never kept."
        return _render_form(request, form)
    return _submit(request, form)


@login_required
@require_POST
def cancel(request: HttpRequest, job_id: UUID) -> HttpResponse:
    job = _own_job(request, job_id)
    jobs.cancel(job, by=request.user.get_username())  # a finished job stays as it was
    return redirect(job)


def client_address(request: HttpRequest) -> str:
    """Who is logging in, for the login lockout (AXES_CLIENT_IP_CALLABLE). Behind the TLS proxy
    (DJANGO_BEHIND_TLS_PROXY), the address that proxy appended last to X-Forwarded-For: the
    client as the proxy saw it (whatever comes before it is the client's own say); otherwise,
    or without that header, the connection's."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if settings.BEHIND_TLS_PROXY and forwarded.strip():
        return forwarded.rsplit(",", 1)[-1].strip()
    return request.META.get("REMOTE_ADDR", "")


def locked_out(request: HttpRequest, *_: object) -> HttpResponse:
    """django-axes' answer to a login locked out after too many failures (AXES_LOCKOUT_CALLABLE,
    which also gets the response it replaces and the credentials: not needed here)."""
    minutes = settings.CLONES_LOGIN_LOCKOUT_MINUTES
    context = {"failures": settings.CLONES_LOGIN_FAILURES, "minutes": minutes}
    response = render(request, "registration/locked_out.html", context, status=429)
    response["Retry-After"] = str(minutes * 60)
    return response
