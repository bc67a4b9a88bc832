"""Settings for the test suite: project.settings, pointed at a throwaway data directory and at
the Docker engine and stand-in git image that .ci/engine.sh starts.

Worker processes that tests start (`manage.py worker`) use this module too, and find the same
directory and database through CLONESHELF_TEST_ROOT, which they inherit.
"""

import os
import tempfile
from pathlib import Path

# pytest-xdist's workers (the README's test commands run two) inherit the controlling process's
# environment, and so its directory: each worker takes one of its own instead, with its own
# database and data directory (so its clone containers carry an installation label of their
# own), which the worker processes it starts inherit in turn.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if XDIST_WORKER and os.environ.get("CLONESHELF_TEST_ROOT_OF") != XDIST_WORKER:
    os.environ["CLONESHELF_TEST_ROOT_OF"] = XDIST_WORKER
    os.environ["CLONESHELF_TEST_ROOT"] = tempfile.mkdtemp(prefix=f"cloneshelf-test-{XDIST_WORKER}-")
    os.environ.pop("CLONES_DATA_DIR", None)  # the controlling process's, set below
os.environ.setdefault("CLONESHELF_TEST_ROOT", tempfile.mkdtemp(prefix="cloneshelf-test-"))
TEST_ROOT = Path(os.environ["CLONESHELF_TEST_ROOT"])

for name, value in {
    "DJANGO_SECRET_KEY": "only-for-tests",
    "CLONES_DATA_DIR": str(TEST_ROOT / "data"),
    "DOCKER_HOST": "unix:///run/cloneshelf-test-docker.sock",
    "CLONES_GIT_IMAGE": "cloneshelf-test/git:standin-6",
    # The test git servers listen on 127.0.0.1, which only host networking reaches; the test
    # engine has no bridge, so nothing can leave the machine either way.
    "CLONES_NETWORK": "host",
    "CLONES_EGRESS_BIND": "127.0.0.1",
    "CLONES_ALLOWED_SCHEMES": "https,http,git",
    "CLONES_ALLOW_PRIVATE_NETWORKS": "1",
    # The test servers listen on whatever port is free.
    "CLONES_ALLOWED_PORTS": "https:*,http:*,git:*",
    "CLONES_CLONE_TIMEOUT": "60",
    "CLONES_MIN_FREE_BYTES": "10m",
}.items():
    os.environ.setdefault(name, value)

from project.settings import *  # noqa: E402, F403

# One database that the test process and the workers it starts share (pytest-django would
# otherwise use an in-memory SQLite database that no other process can see): a file, or with
# CLONESHELF_TEST_DATABASE_URL (.ci/postgres.sh starts one) a PostgreSQL database named after
# this run, which pytest-django creates and drops, connected to as in production (connections
# kept, and checked before use).
POSTGRES_DATABASE_NAME = "cloneshelf_" + TEST_ROOT.name.replace("-", "_")
if os.environ.get("CLONESHELF_TEST_DATABASE_URL"):
    DATABASES["default"] = database_config(os.environ["CLONESHELF_TEST_DATABASE_URL"])  # noqa: F405
    DATABASES["default"]["NAME"] = POSTGRES_DATABASE_NAME  # noqa: F405
else:
    DATABASES["default"]["NAME"] = TEST_ROOT / "db.sqlite3"  # noqa: F405
DATABASES["default"]["TEST"] = {"NAME": DATABASES["default"]["NAME"]}  # noqa: F405
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STATIC_ROOT = TEST_ROOT / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing one
