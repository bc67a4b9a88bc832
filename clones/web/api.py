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
from django.forms import Form
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.urls import URLPattern, re_path, reverse
from django.views.decorators.csrf import csrf_exempt
from ninja import Field, NinjaAPI, Query, Schema, Status, Swagger
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import HttpBearer

from .. import jobs
from ..models import ArchiveFormat, CloneJob, History
from ..models import Status as JobStatus
from . import apitokens, downloads
from .forms import MAX_DEPTH, CloneRequestForm

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100
MAX_OFFSET = 2**31 - 1  # past any history, and within every database's OFFSET

DESCRIPTION = """
Clone git repositories into archives, follow the jobs, download the archives.

**Authentication.** Every operation needs an API token, sent as
`Authorization: Bearer cs_…`. Make one on your profile page (`/profile/`) or with
`manage.py apitoken USERNAME`; it is shown once.

**Errors** are JSON: `{"code": "…", "message": "…"}`, the message in plain words. Invalid
input adds `fields`, each field's messages (`__all__` for those of no one field). Codes:
`invalid` (400), `unreadable` (400: the body is not JSON), `unauthorized` (401), `not_found`
(404), `method_not_allowed` (405), `ended` (409: a job that ended cannot be cancelled),
`no_archive` (409: the job has no archive to download), `too_large` (413: the body is over
the site's upload limit), `limit_reached` (429, with
`Retry-After` in seconds), `server_error` (500).
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


class CloneRequest(Schema):
    url: str = Field(
        description="The repository's URL, as on the web form.",
        examples=["https://github.com/pallets/flask.git"],
    )
    ref: str | None = Field(
        None,
        description="Branch, tag or full commit SHA; none: the default branch.",
        examples=["3.0.0"],
    )
    history: History | None = Field(None, description="What to keep; `full` when none.")
    depth: int | None = Field(
        None, ge=1, le=MAX_DEPTH, description="Commits to keep, for a shallow clone only."
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


class JobLinks(Schema):
    self: str = Field(description="This job in the API.")
    download: str | None = Field(description="Its archive, while there is one.")
    page: str = Field(description="Its page on the site.")


class Job(Schema):
    id: UUID
    url: str
    ref: str
    commit: str = Field(description="The commit cloned; empty until known.")
    history: History
    depth: int | None
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
    links: JobLinks

    @staticmethod
    def resolve_links(job: CloneJob) -> dict:
        return {
            "self": _job_path(job.id),
            "download": reverse("api:download_clone", args=[job.id]) if job.can_download else None,
            "page": job.get_absolute_url(),
        }


class JobPage(Schema):
    count: int = Field(description="Jobs in the whole list, all pages.")
    next: str | None = Field(description="The next (older) page, if any.")
    previous: str | None = Field(description="The previous (newer) page, if any.")
    items: list[Job]


class HistoryQuery(Schema):
    status: JobStatus | None = Field(None, description="Only jobs with this status.")
    limit: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Jobs per page.")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Jobs to skip, newest first.")


def _job_path(job_id: UUID) -> str:
    return reverse("api:get_clone", args=[job_id])


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
            fields = _form_errors(form)
            first_message = next(iter(fields.values()))[0]  # the form's own words say which field
            raise ApiError(400, "invalid", first_message, fields=fields)
        job = jobs.submit(request.auth, **form.cleaned_data)
    except jobs.Refused as refused:
        retry = {"Retry-After": str(refused.retry_after)}
        raise ApiError(429, "limit_reached", str(refused), headers=retry) from None
    response["Location"] = _job_path(job.id)
    return Status(202, job)


def _form_errors(form: Form) -> dict[str, list[str]]:
    return {name: [str(message) for message in errors] for name, errors in form.errors.items()}


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
    count = mine.count()
    end = query.offset + query.limit
    previous = max(query.offset - query.limit, 0)
    return {
        "count": count,
        "next": _page_link(request, query, end) if end < count else None,
        "previous": _page_link(request, query, previous) if query.offset else None,
        "items": list(mine[query.offset : end]),
    }


def _page_link(request: HttpRequest, query: HistoryQuery, offset: int) -> str:
    params = {"limit": query.limit, "offset": offset}
    if query.status:
        params["status"] = query.status
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
