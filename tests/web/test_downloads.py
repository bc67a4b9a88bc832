"""Downloads as HTTP clients use them: byte ranges (resuming), conditional requests, HEAD, the
checksum file, and the hand-off to a front server. Archives are real files in the test storage."""

import hashlib
import random
import shutil
import subprocess
import sys

import pytest
from django.core.files.storage import default_storage
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from django.utils.http import http_date

from clones.models import CloneJob, Status

from ..support import PROJECT_DIR
from ..support.helpers import make_done_job

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

# Odd, and several of the view's 256 KiB chunks long.
ARCHIVE = random.Random(4).randbytes(700_001)
SIZE = len(ARCHIVE)
SHA256 = hashlib.sha256(ARCHIVE).hexdigest()
ETAG = f'"{SHA256}"'


@pytest.fixture
def done_job(owner):
    return make_done_job(owner, ARCHIVE, "download-test.tar")


def download_url(job: CloneJob) -> str:
    return reverse("clones:download", args=[job.id])


def checksum_url(job: CloneJob) -> str:
    return reverse("clones:checksum", args=[job.id])


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_the_whole_archive_with_its_validators(owner_client, done_job):
    response = owner_client.get(download_url(done_job))

    assert response.status_code == 200
    content = body(response)
    assert content == ARCHIVE and hashlib.sha256(content).hexdigest() == SHA256
    assert response["Content-Length"] == str(SIZE)
    assert response["ETag"] == ETAG
    assert response["Last-Modified"] == http_date(done_job.finished_at.timestamp())
    assert response["Accept-Ranges"] == "bytes"
    assert response["Content-Type"] == "application/x-tar"
    assert response["Content-Disposition"] == 'attachment; filename="widget-2ac8988.tar"'
    assert response["Cache-Control"] == "private"
    assert "Content-Range" not in response


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=0-99", 0, 100),  # the first bytes
        ("bytes=300000-300099", 300_000, 300_100),  # the middle, across a chunk boundary
        ("bytes=-500", SIZE - 500, SIZE),  # the last n
        ("bytes=123457-", 123_457, SIZE),  # from an offset: what `curl -C -` asks
        ("bytes=699990-9999999999", 699_990, SIZE),  # a last byte past the end: cut there
        ("bytes=-9999999", 0, SIZE),  # a suffix longer than the file: all of it
        ("bytes=0-0", 0, 1),
        (f"bytes={SIZE - 1}-", SIZE - 1, SIZE),
    ],
)
def test_one_range_gets_exactly_its_bytes(owner_client, done_job, header, start, stop):
    response = owner_client.get(download_url(done_job), headers={"Range": header})

    assert response.status_code == 206
    assert body(response) == ARCHIVE[start:stop]
    assert response["Content-Range"] == f"bytes {start}-{stop - 1}/{SIZE}"
    assert response["Content-Length"] == str(stop - start)
    assert response["ETag"] == ETAG
    assert 'filename="widget-2ac8988.tar"' in response["Content-Disposition"]


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}", "bytes=-0"])
def test_a_range_past_the_end_is_unsatisfiable(owner_client, done_job, header):
    response = owner_client.get(download_url(done_job), headers={"Range": header})

    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{SIZE}"
    assert response.content == b""


@pytest.mark.parametrize(
    "header",
    [
        "bytes=0-9,20-29",  # several ranges: RFC 9110 lets a server send it all instead
        "bytes=10-5",  # last before first: invalid, ignored
        "bytes=abc",
        "bytes=-",
        "items=0-9",
        "bytes=" + "9" * 5000 + "-",  # more digits than int() reads
    ],
)
def test_a_range_this_server_does_not_serve_gets_the_whole_archive(owner_client, done_job, header):
    response = owner_client.get(download_url(done_job), headers={"Range": header})

    assert response.status_code == 200
    assert body(response) == ARCHIVE
    assert response["Content-Length"] == str(SIZE)


def test_if_none_match_with_the_etag_is_not_modified(owner_client, done_job):
    response = owner_client.get(download_url(done_job), headers={"If-None-Match": ETAG})

    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == ETAG
    assert response["Cache-Control"] == "private"


@pytest.mark.parametrize("tag", ['"' + "0" * 64 + '"', f'W/"{SHA256[:-1]}0"'])
def test_if_none_match_with_another_etag_gets_the_archive(owner_client, done_job, tag):
    response = owner_client.get(download_url(done_job), headers={"If-None-Match": tag})

    assert response.status_code == 200
    assert body(response) == ARCHIVE


def test_if_modified_since_its_finish_is_not_modified(owner_client, done_job):
    since = http_date(done_job.finished_at.timestamp())
    response = owner_client.get(download_url(done_job), headers={"If-Modified-Since": since})
    assert response.status_code == 304


@pytest.mark.parametrize("validator", [ETAG, "last-modified"])
def test_if_range_naming_this_archive_gets_the_range(owner_client, done_job, validator):
    if validator == "last-modified":
        validator = http_date(done_job.finished_at.timestamp())
    response = owner_client.get(
        download_url(done_job), headers={"Range": "bytes=100-199", "If-Range": validator}
    )

    assert response.status_code == 206
    assert body(response) == ARCHIVE[100:200]


@pytest.mark.parametrize(
    "validator",
    ['"' + "0" * 64 + '"', f"W/{ETAG}", "Thu, 01 Jan 2015 00:00:00 GMT", "not a validator"],
)
def test_if_range_naming_another_file_gets_the_whole_archive(owner_client, done_job, validator):
    response = owner_client.get(
        download_url(done_job), headers={"Range": "bytes=100-199", "If-Range": validator}
    )

    assert response.status_code == 200
    assert body(response) == ARCHIVE
    assert response["Content-Length"] == str(SIZE)


def test_head_has_the_headers_of_get_and_no_body(owner_client, done_job):
    get = owner_client.get(download_url(done_job))
    head = owner_client.head(download_url(done_job))

    assert body(get) == ARCHIVE
    assert head.status_code == 200
    assert head.content == b""
    for header in [
        "Content-Length",
        "Content-Type",
        "Content-Disposition",
        "ETag",
        "Last-Modified",
        "Accept-Ranges",
    ]:
        assert head[header] == get[header], header


def test_head_describes_the_whole_archive_even_with_a_range(owner_client, done_job):
    # RFC 9110 14.2: Range is defined for GET only.
    head = owner_client.head(download_url(done_job), headers={"Range": "bytes=0-9"})
    assert head.status_code == 200
    assert head["Content-Length"] == str(SIZE)


def test_other_methods_are_not_allowed(owner_client, done_job):
    assert owner_client.post(download_url(done_job)).status_code == 405
    assert owner_client.post(checksum_url(done_job)).status_code == 405


def test_an_interrupted_download_resumes_where_it_stopped(owner_client, done_job):
    """What `curl -C -` does: ask for the bytes after those it has, and append them."""
    first = owner_client.get(download_url(done_job))
    received = body(first)[: SIZE // 2]  # the connection dropped half-way

    rest = owner_client.get(
        download_url(done_job),
        headers={"Range": f"bytes={len(received)}-", "If-Range": first["ETag"]},
    )

    assert rest.status_code == 206
    assert rest["Content-Range"] == f"bytes {SIZE // 2}-{SIZE - 1}/{SIZE}"
    assert hashlib.sha256(received + body(rest)).hexdigest() == SHA256


def test_the_checksum_file_is_what_sha256sum_writes_and_checks(owner_client, done_job, tmp_path):
    response = owner_client.get(checksum_url(done_job))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content.decode() == f"{SHA256}  widget-2ac8988.tar\n"
    assert 'filename="widget-2ac8988.tar.sha256"' in response["Content-Disposition"]
    (tmp_path / "widget-2ac8988.tar").write_bytes(body(owner_client.get(download_url(done_job))))
    (tmp_path / "widget-2ac8988.tar.sha256").write_bytes(response.content)
    check = subprocess.run(
        ["sha256sum", "-c", "widget-2ac8988.tar.sha256"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0 and check.stdout == "widget-2ac8988.tar: OK\n", check.stdout


def test_the_job_page_links_its_checksum_file(owner_client, done_job):
    page = owner_client.get(done_job.get_absolute_url()).content.decode()
    assert SHA256 in page
    assert f'href="{checksum_url(done_job)}"' in page


REQUESTS = {
    "get": lambda client, job: client.get(download_url(job)),
    "range": lambda client, job: client.get(download_url(job), headers={"Range": "bytes=0-9"}),
    "if-none-match": lambda client, job: client.get(
        download_url(job), headers={"If-None-Match": ETAG}
    ),
    "head": lambda client, job: client.head(download_url(job)),
    "checksum": lambda client, job: client.get(checksum_url(job)),
}


@pytest.mark.parametrize("request_name", REQUESTS)
def test_another_user_gets_404_whatever_they_ask(client, other_user, done_job, request_name):
    client.force_login(other_user)
    response = REQUESTS[request_name](client, done_job)
    assert response.status_code == 404
    assert SHA256.encode() not in response.content


@pytest.mark.parametrize("request_name", REQUESTS)
def test_an_expired_archive_is_gone_whatever_is_asked(owner_client, done_job, request_name):
    done_job.status, done_job.archive, done_job.expired_at = Status.EXPIRED, "", timezone.now()
    done_job.save()
    assert REQUESTS[request_name](owner_client, done_job).status_code == 404


def test_a_missing_archive_file_is_404(owner_client, done_job):
    default_storage.delete(done_job.archive.name)
    assert owner_client.get(download_url(done_job)).status_code == 404
    assert owner_client.head(download_url(done_job)).status_code == 404


def test_staff_resume_from_the_admin_too(client, staff, done_job):
    client.force_login(staff)
    url = reverse("admin:clones_clonejob_download", args=[done_job.id])

    response = client.get(url, headers={"Range": "bytes=-100", "If-Range": ETAG})

    assert response.status_code == 206
    assert body(response) == ARCHIVE[-100:]
    assert client.head(url)["Content-Length"] == str(SIZE)


@override_settings(CLONES_SENDFILE="nginx", CLONES_SENDFILE_PREFIX="/internal/archives/")
def test_nginx_is_told_which_file_to_send(owner_client, done_job):
    response = owner_client.get(download_url(done_job), headers={"Range": "bytes=0-9"})

    # The range is nginx's to serve: it sends the file in this response's place.
    assert response.status_code == 200
    assert response["X-Accel-Redirect"] == f"/internal/archives/{done_job.archive.name}"
    assert response.content == b""
    assert response["ETag"] == ETAG
    assert response["Content-Disposition"] == 'attachment; filename="widget-2ac8988.tar"'
    assert response["Content-Type"] == "application/x-tar"
    assert "X-Sendfile" not in response


@override_settings(CLONES_SENDFILE="apache")
def test_apache_is_told_the_files_path(owner_client, done_job):
    response = owner_client.get(download_url(done_job))

    assert response.status_code == 200
    assert response["X-Sendfile"] == default_storage.path(done_job.archive.name)
    assert response["X-Sendfile"].startswith("/")
    assert response.content == b""
    assert response["ETag"] == ETAG
    assert 'filename="widget-2ac8988.tar"' in response["Content-Disposition"]
    assert "X-Accel-Redirect" not in response


@override_settings(CLONES_SENDFILE="nginx")
def test_with_a_front_server_the_etag_still_gets_304_and_others_404(
    client, owner, other_user, done_job
):
    client.force_login(owner)
    assert client.get(download_url(done_job), headers={"If-None-Match": ETAG}).status_code == 304
    client.force_login(other_user)
    response = client.get(download_url(done_job))
    assert response.status_code == 404 and "X-Accel-Redirect" not in response


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CLONES_SENDFILE": "lighttpd"}, "CLONES_SENDFILE='lighttpd' is not nginx, apache"),
        ({"CLONES_SENDFILE_PREFIX": "protected"}, "CLONES_SENDFILE_PREFIX='protected' is not"),
    ],
)
def test_a_bad_sendfile_setting_stops_the_start(tmp_path, env, message):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=PROJECT_DIR,
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DJANGO_SECRET_KEY": "only-for-tests",
            "CLONES_DATA_DIR": str(tmp_path),
            **env,
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl binary")
def test_curl_resumes_a_download_with_dash_c(live_server, client, owner, done_job, tmp_path):
    client.force_login(owner)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    url = live_server.url + download_url(done_job)
    partial = tmp_path / "widget-2ac8988.tar"
    partial.write_bytes(ARCHIVE[: SIZE // 3])  # what an interrupted download left

    curl = ["curl", "--silent", "--show-error", "--fail", "--write-out", "%{http_code}"]
    result = subprocess.run(
        [*curl, "--cookie", cookie, "--continue-at", "-", "--output", partial, url],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "206"
    assert hashlib.sha256(partial.read_bytes()).hexdigest() == SHA256
