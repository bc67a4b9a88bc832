"""Archives in an S3-compatible bucket (CLONES_S3_BUCKET), with real workers. The server is moto's
standalone S3 *emulator* (from PyPI), on 127.0.0.1: it does not check signatures, so what is
tested here is our side (streamed upload, presigned download, ranges, expiry, errors), not AWS."""

import hashlib
import urllib.request

import pytest
from django.core.files.storage import default_storage
from django.urls import reverse

from clones import tasks
from clones.models import CloneJob, Status

from .support.helpers import submit, wait_for_job
from .support.services import BUCKET, s3_worker_env

pytestmark = pytest.mark.database


def fetch(url: str, headers: dict[str, str] | None = None):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as response:
        return response.status, dict(response.headers), response.read()


def test_an_archive_goes_to_the_bucket_and_downloads_by_a_presigned_url(
    bucket, s3_endpoint, owner_client, start_worker, new_repo, git_http
):
    repo = new_repo(extra_bytes=6 * 2**20)  # past boto3's 8 MiB multipart threshold as a tar
    start_worker(env=s3_worker_env(s3_endpoint))

    job = wait_for_job(submit(owner_client, git_http.url(repo.name)))

    assert job.status == Status.DONE, job.error
    stored = bucket.head_object(Bucket=BUCKET, Key=job.archive.name)
    assert stored["ContentLength"] == job.archive_size
    redirect = owner_client.get(reverse("clones:download", args=[job.id]))
    assert redirect.status_code == 302 and redirect["Cache-Control"] == "private, no-store"
    status, headers, body = fetch(redirect["Location"])
    assert status == 200 and hashlib.sha256(body).hexdigest() == job.archive_sha256
    assert job.download_filename in headers["Content-Disposition"]
    # A resumed download asks the bucket for the rest: a range through the presigned URL.
    status, headers, part = fetch(redirect["Location"], {"Range": "bytes=1000-1999"})
    assert status == 206 and part == body[1000:2000]


def test_expiry_deletes_the_object(
    bucket, s3_endpoint, owner_client, start_worker, new_repo, git_http
):
    repo = new_repo()
    start_worker(env=s3_worker_env(s3_endpoint))
    job = wait_for_job(submit(owner_client, git_http.url(repo.name)))
    assert default_storage.exists(job.archive.name)
    CloneJob.objects.filter(pk=job.pk).update(expires_at=job.finished_at)

    tasks.expire_archives()

    assert bucket.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    assert CloneJob.objects.get(pk=job.pk).status == Status.EXPIRED


def test_a_bucket_that_refuses_the_archive_fails_the_job_saying_so(
    bucket, s3_endpoint, owner_client, start_worker, new_repo, git_http
):
    repo = new_repo()
    env = s3_worker_env(s3_endpoint) | {"CLONES_S3_BUCKET": "no-such-bucket"}
    start_worker(env=env)

    job = wait_for_job(submit(owner_client, git_http.url(repo.name)))

    assert job.status == Status.FAILED
    assert (
        job.error
        == "The archive could not be stored: the storage service refused it (NoSuchBucket)."
    )
