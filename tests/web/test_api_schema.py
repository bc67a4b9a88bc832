"""The JSON API against its own OpenAPI schema (/api/openapi.json), with schemathesis: requests
made from the schema, valid and invalid, sent with a real token of a real user through the
Django app's WSGI handler in this process, and each answer checked: no server error, a status
code, content type and body the schema describes.

Nothing leaves the process: the WSGI client calls the app directly, the resolver is stubbed (the
`dns` fixture: generated host names are simply not found), and no worker runs, so a clone that
passes the checks stays a queued row in the test database.
"""

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from clones import watches
from clones.models import CloneJob
from clones.web import apitokens

from ..support.helpers import make_done_job

# Django's WSGI handler closes the connection after each request, which would end the
# transaction of a plain `db` test: these tests commit (transactional_db) instead.
pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

schema = schemathesis.openapi.from_wsgi("/api/openapi.json", get_wsgi_application())
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


@pytest.fixture
def real_user(transactional_db, django_user_model, dns):
    """A user with a token and a done job whose archive is a real file."""
    dns["github.com"] = ["8.8.8.8"]  # the schema's example URL is accepted; nothing connects
    user = django_user_model.objects.create_user("schemathesis", password="pw-schema-123")
    job = make_done_job(user, bytes(range(256)) * 8)
    watch = watches.create(user, "https://github.com/pallets/flask.git")
    CloneJob.objects.filter(pk=job.pk).update(watch=watch)  # a snapshot, to pin
    return {
        "token": apitokens.make(user, "schemathesis")[1],
        "job_id": str(job.id),
        "watch_id": str(watch.id),
    }


@schema.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_answers_as_its_schema_says(case, real_user):
    for name in ["job_id", "watch_id"]:
        if case.path_parameters and _heads(case.path_parameters.get(name)):
            # Half of the generated ids name the user's real job (or watch), so that
            # cancelling, pinning and downloading (with generated Range and conditional
            # headers) meet a real archive.
            case.path_parameters[name] = real_user[name]
    case.call_and_validate(headers={"Authorization": f"Bearer {real_user['token']}"}, checks=CHECKS)


def _heads(value) -> bool:
    """A coin toss that Hypothesis drew itself (so that it replays and shrinks): the first
    character of a generated id."""
    return isinstance(value, str) and value[:1] in set("01234567")
