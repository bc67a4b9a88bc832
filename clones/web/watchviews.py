"""A person's watches: the list (/watches/), new ones (one or a pasted list), each one's timeline
of snapshots, and what its owner does with it (check now, pause, resume, pin, delete). Only the
owner sees a watch: anyone else gets the 404 of one that does not exist."""

from uuid import UUID

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from .. import jobs, watches
from ..models import CloneJob, Watch
from . import timeline
from .forms import PastedWatchesForm

WATCHES_PAGE_SIZE = 50
SNAPSHOTS_PAGE_SIZE = 25  # as the history page


def _own_watch(request: HttpRequest, watch_id: UUID) -> Watch:
    return get_object_or_404(Watch.objects.for_user(request.user), pk=watch_id)


@login_required
def watch_list(request: HttpRequest) -> HttpResponse:
    mine = Watch.objects.for_user(request.user)
    page = Paginator(mine, WATCHES_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "clones/watches.html", {"page": page})


@login_required
@sensitive_post_parameters("token")
def new_watch(request: HttpRequest) -> HttpResponse:
    form = PastedWatchesForm(request.POST or None)
    if request.method != "POST":
        return _render_form(request, form)
    try:
        valid = form.is_valid_for(request.user)
    except jobs.Refused as refused:
        form.refuse(str(refused))
        response = _render_form(request, form, status=429)
        response["Retry-After"] = str(refused.retry_after)
        return response
    if not valid:
        return _render_form(request, form)
    lines = form.add_all(request.user)
    if len(lines) == 1 and lines[0].watch:
        return redirect(lines[0].watch)
    refused = [line for line in lines if not line.watch]
    # The refused lines stay in the box, to be corrected; the options as they were, but the
    # token, which is never sent back.
    kept = {name: value for name, value in form.cleaned_data.items() if name != "token"}
    again = PastedWatchesForm(initial={**kept, "urls": "\n".join(line.url for line in refused)})
    return _render_form(request, again, lines=lines, refused=len(refused))


def _render_form(request: HttpRequest, form, status: int = 200, **more) -> HttpResponse:
    return render(request, "clones/watch_new.html", {"form": form, **more}, status=status)


@login_required
def watch_page(request: HttpRequest, watch_id: UUID) -> HttpResponse:
    """The timeline: every snapshot, newest first, what changed in each, the commits between
    two, and the charts."""
    watch = _own_watch(request, watch_id)
    snapshots = watch.snapshots.order_by("-created_at", "-id")
    page = Paginator(snapshots, SNAPSHOTS_PAGE_SIZE).get_page(request.GET.get("page"))
    shown = list(page.object_list)
    compare = timeline.CompareForm(watch, shown, request.GET if "older" in request.GET else None)
    span = timeline.days(watch)
    for job in shown:
        job.commit_count = timeline.commits_of(job)
    context = {
        "watch": watch,
        "page": page,
        "snapshots": shown,
        "made": timeline.MADE,
        "first_snapshot_id": snapshots.values_list("id", flat=True).last(),
        "compare": compare,
        "comparison": compare.comparison() if compare.is_bound and compare.is_valid() else None,
        "span": span,
        "size_chart": timeline.size_chart(span) if span else None,
        "commits_chart": timeline.commits_chart(span) if span else None,
    }
    return render(request, "clones/watch.html", context)


@login_required
@require_POST
def check_now(request: HttpRequest, watch_id: UUID) -> HttpResponse:
    watch = _own_watch(request, watch_id)
    watches.check_now(watch)  # paused or being checked: the page says which
    return redirect(watch)


@login_required
@require_POST
def set_active(request: HttpRequest, watch_id: UUID, active: bool) -> HttpResponse:
    """Pause (active False) or resume (True): the URL says which."""
    watch = _own_watch(request, watch_id)
    watches.set_active(watch, active)
    return redirect(watch)


@login_required
def delete(request: HttpRequest, watch_id: UUID) -> HttpResponse:
    """GET asks to confirm; POST deletes."""
    watch = _own_watch(request, watch_id)
    if request.method != "POST":
        return render(request, "clones/watch_delete.html", {"watch": watch})
    watches.delete(watch)
    return redirect("clones:watches")


@login_required
@require_POST
def pin(request: HttpRequest, job_id: UUID) -> HttpResponse:
    return _pin(request, job_id, True)


@login_required
@require_POST
def unpin(request: HttpRequest, job_id: UUID) -> HttpResponse:
    return _pin(request, job_id, False)


def _pin(request: HttpRequest, job_id: UUID, pinned: bool) -> HttpResponse:
    job = get_object_or_404(CloneJob.objects.for_user(request.user), pk=job_id)
    watches.pin(job, pinned)  # a one-off job is kept by its time, not pinned
    return redirect(job.watch or job)
