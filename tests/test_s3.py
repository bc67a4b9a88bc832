"""Archives in an S3-compatible bucket (CLONES_S3_BUCKET), with real workers. The server is moto's
standalone S3 *emulator* (from PyPI), on 127.0.0.1: it does not check signatures, so what is
tested here is our side (streamed upload, presigned download, ranges, expiry, errors), not AWS."""

import hashlib
import subprocess
import sys
import urllib.request

import boto3
import pytest
from django.core.files.storage import default_storage
from django.urls import reverse

from clones import tasks
from clones.models import CloneJob, Status

from .gitservers import free_port
from .helpers import submit, wait_for_job, wait_until

pytestmark = pytest.mark.database

BUCKET = "cloneshelf-archives"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_endpoint():
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return urllib.request.urlopen(endpoint, timeout=1).status == 200
        except OSError:
            return False

    wait_until(answers, timeout=30, interval=0.1, what="the S3 emulator to answer")
    yield endpoint
    server.terminate()
    server.wait()


@pytest.fixture
def bucket(s3_endpoint, settings, monkeypatch):
    """A fresh bucket, and this test process and its workers storing archives in it."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    settings.CLONES_S3_BUCKET = BUCKET
    settings.CLONES_S3_ENDPOINT_URL = s3_endpoint
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {"bucket_name": BUCKET, "endpoint_url": s3_endpoint},
        },
    }
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def s3_worker_env(endpoint: str) -> dict[str, str]:
    return {"CLONES_S3_BUCKET": BUCKET, "CLONES_S3_ENDPOINT_URL": endpoint, **CREDENTIALS}


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
