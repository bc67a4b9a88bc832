"""An archive over HTTP: whole or one byte range (so an interrupted download resumes), with
conditional requests, or handed to a front server that sends the file itself.

The archive of a job never changes (a new clone is a new job, a new file), so its sha256 is a
strong ETag and the time it was finished its Last-Modified. Only Django's storage API reads the
file, so this keeps working on storages other than the file system (not the `apache` hand-off,
which needs a local path).
"""

import logging
import re
from urllib.parse import quote

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    JsonResponse,
)
from django.urls import reverse
from django.utils.cache import get_conditional_response
from django.utils.http import (
    content_disposition_header,
    http_date,
    parse_http_date_safe,
    quote_etag,
)

from ..models import ArchiveFormat, CloneJob
from ..safety import signing

logger = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
# One range only, in bytes. Numbers longer than any file size (and than int() reads at all,
# past 4,300 digits) do not match: the header is then ignored and the whole file sent.
ONE_BYTE_RANGE = re.compile(r"bytes=\s*(\d{0,19})\s*-\s*(\d{0,19})\s*", re.IGNORECASE)


class _Unsatisfiable(Exception):
    """The range starts past the end of the file (or asks for no bytes at all)."""


def archive_response(request: HttpRequest, job: CloneJob) -> HttpResponseBase:
    """The job's archive for GET or HEAD; 404 once it has expired (or was never made)."""
    if not job.can_download:
        raise Http404("This job has no archive to download.")
    etag = quote_etag(job.archive_sha256) if job.archive_sha256 else None
    modified = int(job.finished_at.timestamp()) if job.finished_at else None
    cache_headers = _cache_headers(etag, modified)
    # If-None-Match or If-Modified-Since answered with a 304, a failed If-Match with a 412.
    conditional = get_conditional_response(request, etag=etag, last_modified=modified)
    if conditional is not None:
        return _with_headers(conditional, cache_headers)
    headers = {**cache_headers, **_file_headers(job)}
    if settings.CLONES_S3_BUCKET:
        return _presigned_redirect(job)
    if settings.CLONES_SENDFILE:
        # The front server answers Range requests itself, and says so (Accept-Ranges).
        return _with_headers(_handed_to_front_server(job.archive.name), headers)
    return _served(request, job.archive.name, {**headers, "Accept-Ranges": "bytes"}, etag, modified)


def _served(
    request: HttpRequest, name: str, headers: dict[str, str], etag: str | None, modified: int | None
) -> HttpResponseBase:
    """The file itself (200), the one range asked for (206), or why that range cannot be (416)."""
    try:
        size = default_storage.size(name)
        span = _requested_span(request, size, etag, modified)
        if span is None:
            return _with_headers(_content(request, name, range(size), size, 200), headers)
        response = _content(request, name, span, size, 206)
    except FileNotFoundError:  # lost, or expired since the job was read
        raise Http404("The archive file is missing.") from None
    except _Unsatisfiable:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return response
    response["Content-Range"] = f"bytes {span.start}-{span.stop - 1}/{size}"
    return _with_headers(response, headers)


def _presigned_redirect(job: CloneJob) -> HttpResponseBase:
    """To the object itself, by a URL that works for CLONES_S3_URL_SECONDS: the bytes go from
    the bucket to the client, which asks it for ranges, resumes and all. The URL names the
    download and its type, which the bucket then sends."""
    headers = _file_headers(job)
    url = default_storage.url(
        job.archive.name,
        parameters={
            "ResponseContentDisposition": headers["Content-Disposition"],
            "ResponseContentType": headers["Content-Type"],
        },
    )
    response = HttpResponseRedirect(url)
    response["Cache-Control"] = "private, no-store"  # the URL expires; never keep the redirect
    return response


def checksum_response(job: CloneJob) -> HttpResponse:
    """The archive's sha256 as `sha256sum` writes it, so `sha256sum -c` checks a download."""
    if not job.can_download or not job.archive_sha256:
        raise Http404("This job has no archive to download.")
    line = f"{job.archive_sha256}  {job.download_filename}\n"
    response = HttpResponse(line, content_type="text/plain; charset=utf-8")
    # Shown in the browser, but saved (or `curl -OJ`) under the name sha256sum users expect.
    response["Content-Disposition"] = content_disposition_header(
        False, f"{job.download_filename}.sha256"
    )
    return response


# A year: the most HTTP caches are asked to keep anything. What a digest names never changes.
IMMUTABLE = f"private, max-age={365 * 24 * 3600}, immutable"
# The relation PROV-AQ (W3C) gives a resource's provenance.
HAS_PROVENANCE = "http://www.w3.org/ns/prov#has_provenance"


def by_digest_response(request: HttpRequest, job: CloneJob) -> HttpResponseBase:
    """The archive of `job` at its content address, /a/<sha256>: cacheable for good (its bytes
    are its name), with its provenance linked (RFC 8288 Link) if it has one."""
    response = archive_response(request, job)
    if response.status_code in (200, 206, 304):
        response["Cache-Control"] = IMMUTABLE
        if job.is_signed:  # one made before signing has none to link to
            provenance = reverse("clones:provenance", args=[job.id])
            response["Link"] = f'<{provenance}>; rel="{HAS_PROVENANCE}"'
    return response


UNSIGNED = "This archive was made before archives were signed: clone it again for one that is."


def provenance_response(job: CloneJob) -> HttpResponse:
    """The archive's signed provenance (a DSSE envelope), saved as `<archive>.provenance.json`."""
    body = provenance_bytes(job)
    if body is None:
        raise Http404(UNSIGNED if job.can_download else "This job has no archive.")
    response = HttpResponse(body, content_type="application/json")
    response["Content-Disposition"] = content_disposition_header(
        False, f"{job.download_filename}.provenance.json"
    )
    return response


def provenance_bytes(job: CloneJob) -> bytes | None:
    """The provenance as it is served, in one spelling of its JSON (signing.canonical_json),
    whose sha256 a webhook names (provenance_sha256)."""
    return signing.canonical_json(job.snapshot.provenance) if job.is_signed else None


def keys_response(request: HttpRequest) -> HttpResponse:
    """The service's public signing keys, for anyone to verify a provenance with."""
    try:
        response = JsonResponse(signing.published())
    except signing.Unusable:
        logger.exception("the signing keys cannot be published")
        return JsonResponse({"error": "The signing keys cannot be read just now."}, status=503)
    response["Cache-Control"] = "public, max-age=300"  # a rotation shows within minutes
    response["Access-Control-Allow-Origin"] = "*"
    return response


def _cache_headers(etag: str | None, modified: int | None) -> dict[str, str]:
    # Someone's own archive: a browser may keep it, a shared cache on the way must not.
    headers = {"Cache-Control": "private"}
    if etag:
        headers["ETag"] = etag
    if modified is not None:
        headers["Last-Modified"] = http_date(modified)
    return headers


CONTENT_TYPES = {
    ArchiveFormat.TAR: "application/x-tar",
    # The bytes as stored: a .tar.gz is not a tar sent with Content-Encoding, which a browser
    # would unpack on the way.
    ArchiveFormat.TAR_GZ: "application/gzip",
    ArchiveFormat.ZIP: "application/zip",
    ArchiveFormat.BUNDLE: "application/octet-stream",  # no type is registered for it
}


def _file_headers(job: CloneJob) -> dict[str, str]:
    return {
        "Content-Type": CONTENT_TYPES[job.archive_format],
        "Content-Disposition": content_disposition_header(True, job.download_filename),
    }


def _with_headers(response: HttpResponseBase, headers: dict[str, str]) -> HttpResponseBase:
    for name, value in headers.items():
        response[name] = value
    return response


def _handed_to_front_server(name: str) -> HttpResponse:
    """An empty response that tells nginx or Apache which file to send in its place. They then
    answer Range and conditional requests themselves."""
    response = HttpResponse()
    # Both unescape the header (nginx always, mod_xsendfile by default).
    if settings.CLONES_SENDFILE == "nginx":
        response["X-Accel-Redirect"] = settings.CLONES_SENDFILE_PREFIX + quote(name)
    else:
        response["X-Sendfile"] = quote(default_storage.path(name))
    return response


def _requested_span(
    request: HttpRequest, size: int, etag: str | None, modified: int | None
) -> range | None:
    """The bytes asked for by a Range header, or None for the whole file (no Range, one this
    server ignores, or an If-Range that no longer names this file)."""
    # RFC 9110 14.2: range handling is defined for GET only, and a server MUST ignore Range on
    # other methods; HEAD therefore describes the whole file.
    header = request.headers.get("Range")
    if request.method != "GET" or header is None or not _if_range_holds(request, etag, modified):
        return None
    # Several ranges, another unit, or bad syntax: RFC 9110 14.2 lets a server ignore the header
    # and send the whole file with 200, which every client takes. Multiple ranges would need a
    # multipart/byteranges body that no downloader asks for.
    match = ONE_BYTE_RANGE.fullmatch(header.strip())
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if not first:  # "-n": the last n bytes
        span = range(max(size - int(last), 0), size)
    elif last and int(last) < int(first):  # invalid: ignored like bad syntax
        return None
    else:  # "a-b" (cut at the end of the file) or "a-"
        span = range(int(first), min(int(last) + 1, size) if last else size)
    if not span:
        raise _Unsatisfiable
    return span


def _if_range_holds(request: HttpRequest, etag: str | None, modified: int | None) -> bool:
    """No If-Range, or one naming this very file: the range may be sent (RFC 9110 13.1.5).

    A client resuming a download sends the validator it was given; if the file had changed
    under it, it gets the whole new file instead of a piece of it to splice onto the old.
    """
    if_range = request.headers.get("If-Range")
    if if_range is None:
        return True
    if etag is not None and if_range.strip() == etag:  # strong comparison: W/"…" never matches
        return True
    return modified is not None and parse_http_date_safe(if_range) == modified


def _content(
    request: HttpRequest, name: str, span: range, size: int, status: int
) -> HttpResponseBase:
    """The bytes of `span` from the file in storage, streamed, never read whole; for HEAD,
    only their length."""
    if request.method == "HEAD":
        response = HttpResponse(status=status)
    else:
        response = FileResponse(_opened_at(name, span, size), status=status)
        response.block_size = CHUNK_BYTES
    response["Content-Length"] = len(span)
    return response


def _opened_at(name: str, span: range, size: int):
    file = default_storage.open(name, "rb")
    file.seek(span.start)
    # A span that runs to the end is the open file itself: FileResponse reads it to its end, and
    # a WSGI server's file_wrapper (gunicorn's) may hand it to sendfile(2). One that stops short
    # needs a reader that stops with it.
    return file if span.stop == size else _Slice(file, len(span))


class _Slice:
    """The next `length` bytes of an open file, as a file FileResponse can stream and close."""

    def __init__(self, file, length: int):
        self.file = file
        self.left = length

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(self.left if size < 0 else min(size, self.left))
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.file.close()
