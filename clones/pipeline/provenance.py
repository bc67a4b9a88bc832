"""What an archive is, where it came from and how it was made, signed: an in-toto Statement v1
whose subject is the archive's name and sha256, with a SLSA Provenance v1 predicate, in a DSSE
envelope signed with the service's key (clones.safety.signing). Made once per snapshot, by its
build, and shared by every job the snapshot serves, so it holds nothing of one person's: the
repository as the archive names it (never a credential), the part of the ref the archive's
bytes depend on, the snapshot's id (not a job's).

clones/verifier.py checks it, offline and without this project.
"""

import tomllib
from datetime import datetime

from django.conf import settings

from ..models import CloneJob, Snapshot
from ..safety import urlpolicy
from . import cloning, swhids

PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
# What `buildDefinition` means (README, "Verifiable archives"): a URI of our own, as SLSA asks.
BUILD_TYPE = "urn:cloneshelf:archive:v1"


def _version() -> str:
    pyproject = settings.BASE_DIR / "pyproject.toml"
    try:
        return tomllib.loads(pyproject.read_text())["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


VERSION = _version()


def statement(
    job: CloneJob,
    snapshot: Snapshot,
    built: cloning.Built,
    sha256: str,
    started: datetime,
    finished: datetime,
) -> dict:
    """The in-toto Statement of `snapshot`'s archive (`sha256`), which `job` built (`built`)
    between `started` and `finished`; clones.safety.signing.envelope signs it."""
    url = cloning.url_in_archive(job.history, job.url)
    source = {
        "uri": f"git+{urlpolicy.ssh_uri(url)}",
        "digest": {"gitCommit": snapshot.commit},
        "annotations": {
            "tree": built.tree,
            "ref": snapshot.ref,
            "swhids": swhids.of(snapshot.commit, built.tree, built.branches),
        },
    }
    image = {
        "uri": f"docker-image:{settings.CLONES_GIT_IMAGE}",
        "digest": {"sha256": built.image.removeprefix("sha256:")},
        "annotations": {"gitVersion": built.git_version},
    }
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": job.download_filename, "digest": {"sha256": sha256}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "repository": url,
                    "ref": snapshot.ref,
                    "history": job.history,
                    "depth": job.depth,
                    "paths": job.paths,
                    "submodules": job.submodules,
                    "lfs": job.lfs,
                    "archiveFormat": job.archive_format,
                },
                "internalParameters": {"fsck": settings.CLONES_FSCK},
                "resolvedDependencies": [source, image],
            },
            "runDetails": {
                "builder": {
                    "id": settings.CLONES_SITE_URL or "urn:cloneshelf:unnamed-site",
                    "version": {"cloneshelf": VERSION},
                },
                "metadata": {
                    "invocationId": str(snapshot.id),
                    "startedOn": _timestamp(started),
                    "finishedOn": _timestamp(finished),
                },
            },
        },
    }


def _timestamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
