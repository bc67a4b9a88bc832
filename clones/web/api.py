"""The JSON API under /api/ (django-ninja): submit a clone, follow it, list one's history, cancel,
download. Requests carry an API token (clones.web.apitokens) as `Authorization: Bearer …`.

Every answer is JSON, errors included: `{"code": …, "message": …}`, whatever raised them (the
form, ninja's own validation, authentication, an unknown path or method, a crash). The OpenAPI
3 schema (/api/openapi.json) and its docs page (/api/docs) are made from this module.
"""

import logging
from datetime import datetime
from functools import wraps
from urllib.parse import urlencode
from uuid import UUID

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.signals import got_request_exception
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.urls import URLPattern, re_path, reverse
from django.views.decorators.csrf import csrf_exempt
from ninja import Field, NinjaAPI, Query, Schema, Status, Swagger
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import HttpBearer

from .. import jobs, watches
from ..models import (
    ArchiveFormat,
    CheckResult,
    CloneJob,
    Follow,
    History,
    Watch,
)
from ..models import Status as JobStatus
from . import apitokens, downloads
from .forms import (
    MAX_DEPTH,
    MAX_INTERVAL_MINUTES,
    MAX_KEEP,
    CloneRequestForm,
    WatchRefused,
    add_watch,
    form_errors,
)

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100
MAX_OFFSET = 2**31 - 1  # past any history, and within every database's OFFSET

DESCRIPTION = """
Clone git repositories into archives, follow the jobs, download the archives; watch
repositories, each change of which makes a snapshot kept by the watch's retention policy.

**Authentication.** Every operation needs an API token, sent as
`Authorization: Bearer cs_…`. Make one on your profile page (`/profile/`) or with
`manage.py apitoken USERNAME`; it is shown once.

**Errors** are JSON: `{"code": "…", "message": "…"}`, the message in plain words. Invalid
input adds `fields`, each field's messages (`__all__` for those of no one field). Codes:
`invalid` (400), `unreadable` (400: the body is not JSON), `unauthorized` (401), `not_found`
(404), `method_not_allowed` (405), `ended` (409: a job that ended cannot be cancelled),
`no_archive` (409: the job has no archive to download), `paused` (409: a paused watch is not
checked), `not_a_snapshot` (409: only a watch's snapshot is pinned), `too_large` (413: the
body is over the site's upload limit), `limit_reached` (429, with `Retry-After` in seconds),
`server_error` (500).
"""


class BearerToken(HttpBearer):
    openapi_description = (
        "An API token from your profile page or `manage.py apitoken`: `Authorization: Bearer cs_…`."
    )

    def authenticate(self, request: HttpRequest, token: str):
        return apitokens.user_for(token)


api = NinjaAPI(
    title="cloneshelf API",
    version="1",
    description=DESCRIPTION,
    urls_namespace="api",
    auth=BearerToken(),
    # The docs page uses the Swagger UI files shipped in ninja's static files ("ninja" in
    # INSTALLED_APPS): no CDN. No validator badge either, which would ask swagger.io.
    docs=Swagger(settings={"validatorUrl": None}),
)


# --- Schemas -------------------------------------------------------------------------------------


class Error(Schema):
    code: str = Field(description="What went wrong, for programs: invalid, not_found, …")
    message: str = Field(description="What went wrong, in plain words.")
    fields: dict[str, list[str]] | None = Field(
        None, description="Invalid input only: each field's messages; `__all__` for the rest."
    )


class ArchiveRequest(Schema):
    """What a clone and a watch both take: the repository and the archive's options."""

    url: str = Field(
        description="The repository's URL, as on the web form.",
        examples=["https://github.com/pallets/flask.git"],
    )
    history: History | None = Field(None, description="What to keep; `full` when none.")
    depth: int | None = Field(
        None, ge=1, le=MAX_DEPTH, description="Commits to keep, for a shallow clone only."
    )
    paths: list[str] | None = Field(
        None,
        description="Only these files and folders of the repository (files, full and shallow "
        "histories): files holds just them, full and shallow check out just them.",
        examples=[["docs", "src/app/main.py"]],
    )
    submodules: bool = Field(
        False,
        description="With the repository's submodules, recursively, at the commits it records "
        "(files, full and shallow histories).",
    )
    lfs: bool = Field(
        False,
        description="With the files Git LFS keeps, in place of their pointers (files, full and "
        "shallow histories).",
    )
    archive_format: ArchiveFormat | None = Field(
        None,
        description="`tar` when none; a bundle history is always a bundle, and `bundle` is "
        "for it and the mirror history only.",
    )
    token: str | None = Field(
        None, description="An access token for a private repository (https only); never kept."
    )
    webhook_url: str | None = Field(
        None, description="Told when the job ends, by a POST signed with your webhook secret."
    )


class CloneRequest(ArchiveRequest):
    ref: str | None = Field(
        None,
        description="Branch, tag or full commit SHA; none: the default branch.",
        examples=["3.0.0"],
    )


class JobLinks(Schema):
    self: str = Field(description="This job in the API.")
    download: str | None = Field(description="Its archive, while there is one.")
    provenance: str | None = Field(description="The archive's signed provenance, with it.")
    page: str = Field(description="Its page on the site.")


class Job(Schema):
    id: UUID
    url: str
    ref: str
    commit: str = Field(description="The commit cloned; empty until known.")
    history: History
    depth: int | None
    paths: list[str] = Field(description="The paths it is limited to; empty: everything.")
    submodules: bool = Field(description="With the repository's submodules.")
    lfs: bool = Field(description="With the files Git LFS keeps.")
    archive_format: ArchiveFormat
    status: JobStatus
    phase: str = Field(description="What the worker is doing now.")
    progress: int | None = Field(description="Percent of the phase done, when it can be told.")
    error: str = Field(description="Why it failed or was cancelled.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None = Field(description="When the archive will be deleted.")
    archive_size: int | None = Field(description="Bytes.")
    archive_sha256: str
    webhook_url: str
    watch: UUID | None = Field(description="The watch this job is a snapshot of, if any.")
    pinned: bool = Field(description="A watch's snapshot kept whatever its retention says.")
    links: JobLinks

    @staticmethod
    def resolve_watch(job: CloneJob) -> UUID | None:
        return job.watch_id

    @staticmethod
    def resolve_links(job: CloneJob) -> dict:
        return {
            "self": _job_path(job.id),
            "download": reverse("api:download_clone", args=[job.id]) if job.can_download else None,
            "provenance": (
                reverse("api:clone_provenance", args=[job.id]) if job.is_signed else None
            ),
            "page": job.get_absolute_url(),
        }


class JobPage(Schema):
    count: int = Field(description="Jobs in the whole list, all pages.")
    next: str | None = Field(description="The next (older) page, if any.")
    previous: str | None = Field(description="The previous (newer) page, if any.")
    items: list[Job]


def _job_path(job_id: UUID) -> str:
    return reverse("api:get_clone", args=[job_id])


class WatchRequest(ArchiveRequest):
    follow: Follow | None = Field(
        None, description="`default` (the default branch) when none; `everything` makes mirrors."
    )
    refs: list[str] | None = Field(
        None,
        description="The branches and tags to follow, for `follow: refs`.",
        examples=[["main"]],
    )
    interval_minutes: int | None = Field(
        None, ge=1, le=MAX_INTERVAL_MINUTES, description="How often to check; 60 when none."
    )
    cron: str | None = Field(
        None, description="A cron expression (UTC) saying when to check, instead of an interval."
    )
    keep_last: int | None = Field(
        None, ge=0, le=MAX_KEEP, description="Snapshots kept: the last N."
    )
    keep_hourly: int | None = Field(None, ge=0, le=MAX_KEEP, description="The last of N hours.")
    keep_daily: int | None = Field(None, ge=0, le=MAX_KEEP, description="The last of N days.")
    keep_weekly: int | None = Field(None, ge=0, le=MAX_KEEP, description="The last of N weeks.")
    keep_monthly: int | None = Field(None, ge=0, le=MAX_KEEP, description="The last of N months.")
    keep_yearly: int | None = Field(None, ge=0, le=MAX_KEEP, description="The last of N years.")
    token: str | None = Field(
        None,
        description="An access token for a private repository (https only): stored encrypted, "
        "never returned.",
    )
    webhook_url: str | None = Field(
        None, description="Told of new snapshots and of repeated failures, signed as a clone's."
    )

    def form_data(self) -> dict:
        data = self.model_dump(mode="json", exclude_none=True)
        if "refs" in data:
            data["refs"] = "\n".join(data["refs"])
        return data


class WatchLinks(Schema):
    self: str = Field(description="This watch in the API.")
    page: str = Field(description="Its timeline on the site.")


class WatchOut(Schema):
    id: UUID
    url: str
    follow: Follow
    refs: list[str]
    history: History
    depth: int | None
    paths: list[str]
    submodules: bool
    lfs: bool
    archive_format: ArchiveFormat
    interval_minutes: int
    cron: str
    keep_last: int
    keep_hourly: int
    keep_daily: int
    keep_weekly: int
    keep_monthly: int
    keep_yearly: int
    has_token: bool = Field(description="An access token is stored (it is never returned).")
    webhook_url: str
    active: bool = Field(description="False while paused.")
    created_at: datetime
    next_check_at: datetime
    last_checked_at: datetime | None
    last_changed_at: datetime | None
    last_result: CheckResult | None = Field(description="How the last check ended.")
    last_error: str = Field(description="Why the last check failed.")
    failures: int = Field(description="Checks (or snapshots) failed in a row.")
    links: WatchLinks

    @staticmethod
    def resolve_refs(watch: Watch) -> list[str]:
        return watch.followed_refs

    @staticmethod
    def resolve_has_token(watch: Watch) -> bool:
        return bool(watch.credential)

    @staticmethod
    def resolve_last_result(watch: Watch) -> str | None:
        return watch.last_result or None

    @staticmethod
    def resolve_links(watch: Watch) -> dict:
        return {"self": _watch_path(watch.id), "page": watch.get_absolute_url()}


class Commit(Schema):
    sha: str
    subject: str = Field(description="As the repository says it: untrusted text.")


class Snapshot(Job):
    changes: list[Commit] = Field(
        description="The commits since the previous snapshot, newest first (at most a few)."
    )
    changes_total: int | None = Field(
        description="How many there were; none when the history was rewritten (a force-push)."
    )

    @staticmethod
    def resolve_changes(job: CloneJob) -> list[dict]:
        return [{"sha": sha, "subject": subject} for sha, subject in job.changes]


class WatchDetail(WatchOut):
    snapshot_count: int = Field(description="Its snapshots, all of them.")
    snapshots: list[Snapshot] = Field(description=f"The newest {MAX_PAGE_SIZE}, newest first.")

    @staticmethod
    def resolve_snapshot_count(watch: Watch) -> int:
        return watch.snapshots.count()

    @staticmethod
    def resolve_snapshots(watch: Watch) -> list[CloneJob]:
        return list(watch.snapshots.order_by("-created_at", "-id")[:MAX_PAGE_SIZE])


class WatchResult(Schema):
    url: str = Field(description="The item's URL, as sent.")
    watch: WatchOut | None = Field(description="The watch made, if it was.")
    error: Error | None = Field(description="Why it was not.")


class WatchResults(Schema):
    results: list[WatchResult] = Field(description="One per item sent, in their order.")


class WatchPage(Schema):
    count: int = Field(description="Watches in the whole list, all pages.")
    next: str | None = Field(description="The next page, if any.")
    previous: str | None = Field(description="The previous page, if any.")
    items: list[WatchOut]


class PageQuery(Schema):
    limit: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Items per page.")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Items to skip.")


class HistoryQuery(PageQuery):
    status: JobStatus | None = Field(None, description="Only jobs with this status.")


def _watch_path(watch_id: UUID) -> str:
    return reverse("api:get_watch", args=[watch_id])


UNAUTHORIZED = {401: Error}
NOT_FOUND = {404: Error}


# --- Errors --------------------------------------------------------------------------------------


class ApiError(Exception):
    """An answer other than the one asked for, with its status, code, message and headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None, **more):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.more = more


def error_response(request: HttpRequest, error: ApiError) -> HttpResponse:
    body = {"code": error.code, "message": error.message, **error.more}
    response = api.create_response(request, body, status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, error: ApiError) -> HttpResponse:
    return error_response(request, error)


@api.exception_handler(ValidationError)
def _invalid_input(request: HttpRequest, error: ValidationError) -> HttpResponse:
    """ninja's checks of the schemas above (types, choices, ranges), in the form's format."""
    fields: dict[str, list[str]] = {}
    for problem in error.errors:
        name = _field_name(problem["loc"])
        fields.setdefault(name, []).append(_in_words(name, problem))
    name, messages = next(iter(fields.items()))
    message = messages[0] if name == "__all__" else f"{name}: {messages[0]}"
    return error_response(request, ApiError(400, "invalid", message, fields=fields))


def _field_name(location: tuple) -> str:
    # ("body", "payload", "depth") or ("query", "limit"); ("body", "payload") is the body itself.
    names = [str(part) for part in location[1:] if part != "payload"]
    return names[0] if names else "__all__"


def _in_words(name: str, problem: dict) -> str:
    if name == "__all__":
        return "Send a JSON object with the clone's options (at least its url)."
    if problem["type"] == "missing":
        return "This field is required."
    return f"{problem['msg']}."


@api.exception_handler(AuthenticationError)
def _unauthorized(request: HttpRequest, error: AuthenticationError) -> HttpResponse:
    if "Authorization" in request.headers:
        message = "This API token is not valid: it is unknown, or it was revoked."
        challenge = 'Bearer error="invalid_token"'
    else:
        message = "Send an API token: Authorization: Bearer <token> (see your profile page)."
        challenge = "Bearer"
    return error_response(
        request, ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})
    )


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, error: HttpError) -> HttpResponse:
    # ninja raises it itself for one reason only: a body it cannot parse.
    if error.status_code == 400:
        return error_response(
            request, ApiError(400, "unreadable", "The request body is not valid JSON.")
        )
    return error_response(request, ApiError(error.status_code, "error", str(error)))


@api.exception_handler(RequestDataTooBig)
def _too_large(request: HttpRequest, error: RequestDataTooBig) -> HttpResponse:
    """Django refuses to read a body over DATA_UPLOAD_MAX_MEMORY_SIZE: the sender's to fix."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    message = f"The request body is larger than {limit} bytes, the most accepted."
    return error_response(request, ApiError(413, "too_large", message))


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, error: Http404) -> HttpResponse:
    return error_response(request, ApiError(404, "not_found", str(error) or "Nothing is here."))


@api.exception_handler(Exception)
def _crashed(request: HttpRequest, error: Exception) -> HttpResponse:
    # What Django does with an exception a view lets through: log it with its traceback, and
    # tell whoever listens (the test client re-raises it).
    logger.error("The API failed on %s %s", request.method, request.path, exc_info=error)
    got_request_exception.send(sender=None, request=request)
    message = "Something went wrong on our side; it was logged. Try again later."
    return error_response(request, ApiError(500, "server_error", message))


# --- Operations ----------------------------------------------------------------------------------


def _own_job(request: HttpRequest, job_id: UUID) -> CloneJob:
    """The job if it is the requester's; 404 otherwise, so ids of others' jobs reveal nothing."""
    job = CloneJob.objects.for_user(request.auth).filter(pk=job_id).first()
    if job is None:
        raise ApiError(404, "not_found", "You have no clone job with this id.")
    return job


@api.post(
    "/clones",
    operation_id="create_clone",
    summary="Ask for a clone",
    description="Checked as the web form checks it; the job is queued and its JSON returned "
    "(202, with `Location`). Over a limit: 429 with `Retry-After`.",
    response={202: Job, 400: Error, 413: Error, 429: Error, **UNAUTHORIZED},
)
def create_clone(request: HttpRequest, payload: CloneRequest, response: HttpResponse):
    form = CloneRequestForm(payload.model_dump(mode="json", exclude_none=True))
    try:
        if not form.is_valid_for(request.auth):
            fields = form_errors(form)
            first_message = next(iter(fields.values()))[0]  # the form's own words say which field
            raise ApiError(400, "invalid", first_message, fields=fields)
        job = jobs.submit(request.auth, **form.cleaned_data)
    except jobs.Refused as refused:
        retry = {"Retry-After": str(refused.retry_after)}
        raise ApiError(429, "limit_reached", str(refused), headers=retry) from None
    response["Location"] = _job_path(job.id)
    return Status(202, job)


@api.get(
    "/clones",
    operation_id="list_clones",
    summary="Your clones, newest first",
    description="Paginated by `limit` and `offset`; `next` and `previous` link the pages.",
    response={200: JobPage, 400: Error, **UNAUTHORIZED},
)
def list_clones(request: HttpRequest, query: Query[HistoryQuery]):
    mine = CloneJob.objects.for_user(request.auth)
    if query.status:
        mine = mine.filter(status=query.status)
        return _page(request, query, mine, status=query.status)
    return _page(request, query, mine)


def _page(request: HttpRequest, query: PageQuery, rows, **kept) -> dict:
    """One page of `rows`, with the links to the next and previous, which keep `kept`."""
    count = rows.count()
    end = query.offset + query.limit
    previous = max(query.offset - query.limit, 0)
    return {
        "count": count,
        "next": _page_link(request, query, end, kept) if end < count else None,
        "previous": _page_link(request, query, previous, kept) if query.offset else None,
        "items": list(rows[query.offset : end]),
    }


def _page_link(request: HttpRequest, query: PageQuery, offset: int, kept: dict) -> str:
    params = {"limit": query.limit, "offset": offset, **kept}
    return f"{request.path}?{urlencode(params)}"


@api.get(
    "/clones/{uuid:job_id}",
    url_name="get_clone",
    operation_id="get_clone",
    summary="One of your clones",
    response={200: Job, **UNAUTHORIZED, **NOT_FOUND},
)
def get_clone(request: HttpRequest, job_id: UUID):
    return _own_job(request, job_id)


@api.post(
    "/clones/{uuid:job_id}/cancel",
    url_name="cancel_clone",
    operation_id="cancel_clone",
    summary="Stop a queued or running clone",
    description="200 with the job once it is cancelled (also if it was already); 409 `ended` "
    "if it had ended otherwise (done, failed, expired), which it stays.",
    response={200: Job, 409: Error, **UNAUTHORIZED, **NOT_FOUND},
)
def cancel_clone(request: HttpRequest, job_id: UUID):
    job = _own_job(request, job_id)
    jobs.cancel(job, by=request.auth.get_username())
    job.refresh_from_db()
    if job.status != JobStatus.CANCELLED:
        raise ApiError(
            409,
            "ended",
            f"This clone has already ended ({job.get_status_display().lower()}); "
            "there is nothing to cancel.",
        )
    return job


ARCHIVE_CONTENT = {
    content_type: {"schema": {"type": "string", "format": "binary"}}
    for content_type in sorted(set(downloads.CONTENT_TYPES.values()))
}
DOWNLOAD_DOCS = {
    "parameters": [
        {
            "in": "header",
            "name": "Range",
            "required": False,
            "schema": {"type": "string"},
            "description": "One byte range (`bytes=100-`), to resume; others are ignored.",
        },
        {
            "in": "header",
            "name": "If-Range",
            "required": False,
            "schema": {"type": "string"},
            "description": "The ETag or Last-Modified you have: the range only if it holds.",
        },
        {
            "in": "header",
            "name": "If-None-Match",
            "required": False,
            "schema": {"type": "string"},
            "description": "The ETag (the sha256) you have: 304 if it is this archive.",
        },
    ],
    "responses": {
        "200": {"description": "The archive.", "content": ARCHIVE_CONTENT},
        "206": {"description": "The byte range asked for.", "content": ARCHIVE_CONTENT},
        "302": {"description": "To the archive in the S3 bucket, by a short-lived URL."},
        "304": {"description": "You have this archive already (If-None-Match)."},
        "412": {"description": "A precondition (If-Match, If-Unmodified-Since) failed."},
        "416": {"description": "The range starts past the end of the archive."},
    },
}
NO_ARCHIVE = {
    JobStatus.QUEUED: "The clone has not started yet; its archive can be downloaded once done.",
    JobStatus.RUNNING: "The clone is still running; its archive can be downloaded once done.",
    JobStatus.FAILED: "The clone failed, so there is no archive.",
    JobStatus.CANCELLED: "The clone was cancelled, so there is no archive.",
    JobStatus.EXPIRED: "The archive has expired and was deleted; clone the repository again.",
}


def _archive_response(request: HttpRequest, job_id: UUID) -> HttpResponseBase:
    """As the site's download: ranges, ETag, S3 redirects (clones.web.downloads)."""
    job = _own_job(request, job_id)
    if not job.can_download:
        message = NO_ARCHIVE.get(job.status, "This clone has no archive to download.")
        raise ApiError(409, "no_archive", message)
    return downloads.archive_response(request, job)


DOWNLOAD_ERRORS = {409: Error, **UNAUTHORIZED, **NOT_FOUND}


@api.get(
    "/clones/{uuid:job_id}/download",
    url_name="download_clone",
    operation_id="download_clone",
    summary="Download a clone's archive",
    description="404 for a job that is not yours, 409 `no_archive` while there is no archive "
    "(not done yet, failed, cancelled or expired).",
    response=DOWNLOAD_ERRORS,
    openapi_extra=DOWNLOAD_DOCS,
)
def download_clone(request: HttpRequest, job_id: UUID):
    return _archive_response(request, job_id)


@api.api_operation(
    ["HEAD"],
    "/clones/{uuid:job_id}/download",
    operation_id="download_clone_head",
    summary="A clone's archive, headers only",
    response=DOWNLOAD_ERRORS,
    openapi_extra=DOWNLOAD_DOCS,
)
def download_clone_head(request: HttpRequest, job_id: UUID):
    return _archive_response(request, job_id)


@api.get(
    "/clones/{uuid:job_id}/provenance",
    url_name="clone_provenance",
    operation_id="clone_provenance",
    summary="A clone's signed provenance",
    description="A DSSE envelope around an in-toto Statement v1 (SLSA Provenance v1) whose "
    "subject is the archive's sha256, signed with a key from /.well-known/cloneshelf/keys. "
    "404 for a job that is not yours, 409 `no_archive` while there is no archive.",
    response={200: dict, **DOWNLOAD_ERRORS},
)
def clone_provenance(request: HttpRequest, job_id: UUID):
    job = _own_job(request, job_id)
    body = downloads.provenance_bytes(job)
    if body is None and job.can_download:
        raise ApiError(409, "no_archive", downloads.UNSIGNED)
    if body is None:
        message = NO_ARCHIVE.get(job.status, "This clone has no archive, so no provenance.")
        raise ApiError(409, "no_archive", message)
    return HttpResponse(body, content_type="application/json")


# --- Watches -------------------------------------------------------------------------------------


def _own_watch(request: HttpRequest, watch_id: UUID) -> Watch:
    watch = Watch.objects.for_user(request.auth).filter(pk=watch_id).first()
    if watch is None:
        raise ApiError(404, "not_found", "You have no watch with this id.")
    return watch


@api.post(
    "/watches",
    operation_id="create_watches",
    summary="Watch a repository, or many",
    description="One object: checked as the web form checks it, the watch made and returned "
    "(201, with `Location`); invalid: 400; over a limit: 429. A list of objects: each is made "
    "or refused on its own, and the answer (200) has one result per item, in their order: its "
    "watch or its error.",
    response={200: WatchResults, 201: WatchOut, 400: Error, 413: Error, 429: Error, **UNAUTHORIZED},
)
def create_watches(
    request: HttpRequest, payload: WatchRequest | list[WatchRequest], response: HttpResponse
):
    if isinstance(payload, list):
        _check_length(payload)
        return Status(200, {"results": [_watch_result(request, item) for item in payload]})
    try:
        watch = add_watch(request.auth, payload.form_data())
    except WatchRefused as refused:
        raise _api_error_for(refused) from None
    response["Location"] = _watch_path(watch.id)
    return Status(201, watch)


def _check_length(items: list) -> None:
    """A list longer than anyone may have watches is refused whole, before any of its URLs
    is looked up."""
    most = settings.CLONES_MAX_WATCHES_PER_USER
    if len(items) > most:
        message = f"That is {len(items)} watches; you may have {most} at most: send fewer."
        raise ApiError(400, "invalid", message)


def _watch_result(request: HttpRequest, item: WatchRequest) -> dict:
    try:
        return {"url": item.url, "watch": add_watch(request.auth, item.form_data()), "error": None}
    except WatchRefused as refused:
        error = {"code": refused.code, "message": refused.message, "fields": refused.fields}
        return {"url": item.url, "watch": None, "error": error}


def _api_error_for(refused: WatchRefused) -> ApiError:
    if refused.code == "invalid":
        return ApiError(400, "invalid", refused.message, fields=refused.fields)
    retry = {"Retry-After": str(refused.retry_after)} if refused.retry_after else {}
    return ApiError(429, refused.code, refused.message, headers=retry)


@api.get(
    "/watches",
    operation_id="list_watches",
    summary="Your watches",
    description="By URL; paginated by `limit` and `offset`.",
    response={200: WatchPage, 400: Error, **UNAUTHORIZED},
)
def list_watches(request: HttpRequest, query: Query[PageQuery]):
    return _page(request, query, Watch.objects.for_user(request.auth))


@api.get(
    "/watches/{uuid:watch_id}",
    url_name="get_watch",
    operation_id="get_watch",
    summary="One of your watches, with its snapshots",
    response={200: WatchDetail, **UNAUTHORIZED, **NOT_FOUND},
)
def get_watch(request: HttpRequest, watch_id: UUID):
    return _own_watch(request, watch_id)


@api.delete(
    "/watches/{uuid:watch_id}",
    operation_id="delete_watch",
    summary="Stop watching a repository",
    description="The watch and its stored token are deleted (204); its snapshots stay in your "
    "history and expire as one-off archives do.",
    response={204: None, **UNAUTHORIZED, **NOT_FOUND},
)
def delete_watch(request: HttpRequest, watch_id: UUID):
    watches.delete(_own_watch(request, watch_id))
    return Status(204, None)


@api.post(
    "/watches/{uuid:watch_id}/check",
    operation_id="check_watch",
    summary="Check a watch now",
    description="Makes the watch due at once (202, with the watch); 409 `paused` if it is "
    "paused. A check already under way is not doubled.",
    response={202: WatchOut, 409: Error, **UNAUTHORIZED, **NOT_FOUND},
)
def check_watch(request: HttpRequest, watch_id: UUID):
    watch = _own_watch(request, watch_id)
    if not watch.active:
        raise ApiError(409, "paused", "This watch is paused; resume it on its page first.")
    watches.check_now(watch)
    watch.refresh_from_db()
    return Status(202, watch)


PIN_DOCS = {
    "description": "A watch's snapshot only (409 `not_a_snapshot` otherwise); 200 with the job.",
    "response": {200: Job, 409: Error, **UNAUTHORIZED, **NOT_FOUND},
}


@api.post(
    "/clones/{uuid:job_id}/pin", operation_id="pin_clone", summary="Pin a snapshot", **PIN_DOCS
)
def pin_clone(request: HttpRequest, job_id: UUID):
    return _pin(request, job_id, True)


@api.post(
    "/clones/{uuid:job_id}/unpin",
    operation_id="unpin_clone",
    summary="Unpin a snapshot",
    **PIN_DOCS,
)
def unpin_clone(request: HttpRequest, job_id: UUID):
    return _pin(request, job_id, False)


def _pin(request: HttpRequest, job_id: UUID, pinned: bool) -> CloneJob:
    job = _own_job(request, job_id)
    if not watches.pin(job, pinned):
        message = "This clone is not a watch's snapshot: it is kept for its time, not pinned."
        raise ApiError(409, "not_a_snapshot", message)
    job.refresh_from_db()
    return job


# --- URLs ----------------------------------------------------------------------------------------


def urls() -> tuple[list, str, str]:
    """The API's URL patterns for project/urls.py: ninja's, answering in JSON where ninja would
    not (a method an operation does not take, the API's root), then a JSON 404 for any other
    path under /api/."""
    patterns, app_name, namespace = api.urls
    answering = [
        URLPattern(pattern.pattern, _in_json(pattern.callback), pattern.default_args, pattern.name)
        for pattern in patterns
    ]
    return [*answering, re_path(r"^", _unknown_path)], app_name, namespace


def _in_json(view):
    @wraps(view)  # keeps ninja's csrf_exempt: a Bearer token is no cookie to forge requests with
    def answering_in_json(request: HttpRequest, *args, **kwargs) -> HttpResponseBase:
        try:
            response = view(request, *args, **kwargs)
        except Http404:
            return _unknown_path(request)
        if response.status_code == 405 and not response.get("Content-Type", "").endswith("json"):
            return _method_not_allowed(request, response)
        return response

    return answering_in_json


def _method_not_allowed(request: HttpRequest, refusal: HttpResponseBase) -> HttpResponse:
    allowed = ", ".join(sorted(method.strip() for method in refusal["Allow"].split(",")))
    message = f"{request.method} is not allowed here, only {allowed}."
    error = ApiError(405, "method_not_allowed", message, headers={"Allow": allowed})
    return error_response(request, error)


@csrf_exempt
def _unknown_path(request: HttpRequest) -> HttpResponse:
    docs = reverse("api:openapi-view")
    message = f"There is nothing at this address; {docs} lists what there is."
    return error_response(request, ApiError(404, "not_found", message))
