"""Signed provenance, for real: archives built on the test engine from git servers on 127.0.0.1,
their provenance signed with the service's key, verified offline by clones/verifier.py (run as
the standalone script it is), by `manage.py verify`, and by the README's openssl command."""

import base64
import io
import json
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command
from swh.model import model as swh
from swh.model.swhids import CoreSWHID

from clones import jobs, tasks, verifier
from clones.models import CloneJob, History, Snapshot, Status
from clones.safety import signing

from .support.helpers import make_done_job
from .support.repos import ServedRepo, git

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

VERIFIER = Path(verifier.__file__)


def run(owner, url: str, **options) -> CloneJob:
    job = jobs.submit(owner, url, **options)
    tasks.run_clone_job(str(job.id))
    job.refresh_from_db()
    assert job.status == Status.DONE, job.error
    return job


@dataclass
class Built:
    repo: ServedRepo
    job: CloneJob
    archive: Path  # as downloaded
    provenance: Path
    keys: Path  # the published keys


@pytest.fixture
def built(owner, new_repo, git_daemon, client, tmp_path) -> Built:
    """A done job, its archive, its provenance and the published keys, as files."""
    repo = new_repo()
    job = run(owner, git_daemon.url(repo.name), history=History.FILES)
    client.force_login(owner)
    archive = tmp_path / job.download_filename
    archive.write_bytes(b"".join(client.get(f"/clones/{job.id}/download").streaming_content))
    provenance = tmp_path / "provenance.json"
    provenance.write_bytes(client.get(f"/clones/{job.id}/provenance.json").content)
    keys = tmp_path / "keys.json"
    keys.write_bytes(client.get("/.well-known/cloneshelf/keys").content)
    return Built(repo, job, archive, provenance, keys)


def standalone(
    archive: Path, provenance: Path, keys: Path, *options: str
) -> subprocess.CompletedProcess:
    """clones/verifier.py run on its own: no Django, nothing of this project on its path."""
    command = [sys.executable, "-I", str(VERIFIER), str(archive), str(provenance), *options]
    return subprocess.run([*command, "--keys", str(keys)], capture_output=True, text=True)


def test_the_provenance_says_what_was_archived_from_where_and_how(built):
    result = standalone(built.archive, built.provenance, built.keys)

    assert result.returncode == 0, result.stderr
    source = f"git+{built.job.snapshot.url}"
    assert result.stdout == f"verified: {built.archive.name} is {source} at {built.repo.head}\n"
    envelope = json.loads(built.provenance.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["subject"] == [
        {"name": built.job.download_filename, "digest": {"sha256": built.job.archive_sha256}}
    ]
    definition = statement["predicate"]["buildDefinition"]
    source, image = definition["resolvedDependencies"]
    assert source["digest"] == {"gitCommit": built.repo.head}
    tree = git("rev-parse", "HEAD^{tree}", cwd=built.repo.bare)
    assert source["annotations"]["tree"] == tree
    assert image["annotations"]["gitVersion"] == git("--version", cwd=built.repo.bare).split()[-1]
    assert len(image["digest"]["sha256"]) == 64
    assert definition["externalParameters"]["history"] == "files"
    assert definition["internalParameters"] == {"fsck": "standard"}
    # Shared by whoever the snapshot serves: the snapshot's id, no job's, no owner's.
    text = built.provenance.read_text()
    assert statement["predicate"]["runDetails"]["metadata"]["invocationId"] == str(
        built.job.snapshot_id
    )
    assert str(built.job.id) not in text and built.job.owner.username not in text


def test_a_flipped_byte_anywhere_or_another_key_fails_each_with_its_own_message(built, tmp_path):
    changed = tmp_path / "changed.tar"
    data = bytearray(built.archive.read_bytes())
    data[len(data) // 2] ^= 1
    changed.write_bytes(data)
    envelope = json.loads(built.provenance.read_text())
    payload = bytearray(base64.b64decode(envelope["payload"]))
    payload[payload.index(b"files")] = ord("F")  # "Files": another history than was signed
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({**envelope, "payload": base64.b64encode(payload).decode()}))
    service_key = signing.published()["keys"][0]["keyid"]
    stranger, impostor = tmp_path / "stranger.json", tmp_path / "impostor.json"
    stranger.write_text(json.dumps(other_keys("another key id")))
    impostor.write_text(json.dumps(other_keys(service_key)))  # its id, another key

    cases = {
        (changed, built.provenance, built.keys): "The archive's sha256",
        (built.archive, forged, built.keys): "signature does not verify",
        (built.archive, built.provenance, stranger): "signed by no published key",
        (built.archive, built.provenance, impostor): "signature does not verify",
    }
    for args, message in cases.items():
        result = standalone(*args)
        assert result.returncode == 1
        assert result.stderr.startswith("NOT verified: ") and message in result.stderr


def other_keys(key_id: str) -> dict:
    """Published keys with one key that is not the service's, under `key_id`."""
    public = Ed25519PrivateKey.generate().public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {"keys": [{"keyid": key_id, "public_key": pem.decode()}]}


def test_archives_signed_before_a_rotation_still_verify(built, client, capsys):
    call_command("rotatesigningkey")

    published = client.get("/.well-known/cloneshelf/keys").json()["keys"]
    assert [key["signing"] for key in published] == [True, False]
    assert published[1] == json.loads(built.keys.read_text())["keys"][0] | {"signing": False}
    built.keys.write_text(json.dumps({"keys": published}))
    assert standalone(built.archive, built.provenance, built.keys).returncode == 0
    call_command("verify", str(built.archive))  # the provenance this service keeps
    assert capsys.readouterr().out.startswith(f"verified: {built.archive.name} is git+")


def test_manage_py_verify_says_what_failed(built, tmp_path):
    stranger = tmp_path / "stranger.tar"
    stranger.write_bytes(b"not an archive of this service")

    with pytest.raises(CommandError, match="no provenance for an archive of sha256"):
        call_command("verify", str(stranger))
    with pytest.raises(CommandError, match="NOT verified: The archive's sha256"):
        call_command("verify", str(stranger), str(built.provenance))


def test_the_readmes_openssl_command_verifies_the_signature(built):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    script = readme.split("<!-- openssl-verify -->\n```sh\n", 1)[1].split("```", 1)[0]

    result = subprocess.run(
        ["sh", "-e", "-c", script], cwd=built.archive.parent, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    assert "Signature Verified Successfully" in result.stdout
    assert f"{built.archive.name}: OK" in result.stdout


def test_the_provenance_is_its_owners_alone_and_the_keys_are_everyones(built, client, other_user):
    client.force_login(other_user)
    assert client.get(f"/clones/{built.job.id}/provenance.json").status_code == 404
    client.logout()
    assert client.get("/.well-known/cloneshelf/keys").status_code == 200


@pytest.mark.parametrize("history", [History.FULL, History.FILES])
def test_the_files_hash_to_the_commits_tree_and_one_changed_file_is_found(
    history, owner, new_repo, git_daemon, tmp_path
):
    repo = new_repo()
    job = run(owner, git_daemon.url(repo.name), history=history)
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(signing.published()))
    provenance = tmp_path / "provenance.json"
    provenance.write_text(json.dumps(job.snapshot.provenance))
    archive = Path(job.archive.path)

    verified = standalone(archive, provenance, keys, "--tree")

    tree = git("rev-parse", "HEAD^{tree}", cwd=repo.bare)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.endswith(f", tree {tree}\n")
    statement = verifier.verified_statement(
        job.snapshot.provenance, verifier.load_keys(signing.published())
    )
    changed = tmp_path / "changed.tar"
    with tarfile.open(archive) as original, tarfile.open(changed, "w") as copy:
        for member in original:
            data = original.extractfile(member) if member.isfile() else None
            if member.name.endswith("docs/guide.txt"):
                data, member.size = io.BytesIO(b"changed\n"), len(b"changed\n")
            copy.addfile(member, data)
    with pytest.raises(verifier.NotVerified, match=f"not the commit's tree {tree}"):
        verifier.check_tree(changed, statement)


def test_an_archive_is_served_by_its_sha256_for_good_to_those_it_was_made_for(
    built, client, other_user
):
    address = f"/a/{built.job.archive_sha256}"

    response = client.get(address)  # the owner's session, from the fixture

    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert body == built.archive.read_bytes()
    assert response["Cache-Control"] == "private, max-age=31536000, immutable"
    provenance = f"/clones/{built.job.id}/provenance.json"
    assert response["Link"] == f'<{provenance}>; rel="http://www.w3.org/ns/prov#has_provenance"'
    assert client.get(address.upper().replace("/A/", "/a/")).status_code == 200
    client.force_login(other_user)
    assert client.get(address).status_code == 404  # not theirs: not there, as a job of another's
    client.logout()
    assert client.get(address).status_code == 302  # to the login page


def test_an_archive_made_before_signing_links_to_no_provenance(owner, client):
    job = make_done_job(owner, b"an archive from before signing")  # no snapshot, no provenance
    client.force_login(owner)

    by_digest = client.get(f"/a/{job.archive_sha256}")
    provenance = client.get(f"/clones/{job.id}/provenance.json")

    assert by_digest.status_code == 200 and "Link" not in by_digest
    assert provenance.status_code == 404


# Software Heritage identifiers, against those swh.model computes for the same objects.


def swh_snapshot(branches: dict[str, tuple[str, str]]) -> str:
    kinds = {
        "commit": swh.SnapshotTargetType.REVISION,
        "tag": swh.SnapshotTargetType.RELEASE,
        "alias": swh.SnapshotTargetType.ALIAS,
    }
    return str(
        swh.Snapshot(
            branches={
                name.encode(): swh.SnapshotBranch(
                    target=target.encode() if kind == "alias" else bytes.fromhex(target),
                    target_type=kinds[kind],
                )
                for name, (kind, target) in branches.items()
            }
        ).swhid()
    )


@pytest.mark.parametrize("history", [History.FULL, History.MIRROR, History.FILES])
def test_the_swhids_are_git_ids_and_software_heritages_own(
    history, owner, new_repo, git_daemon, client
):
    repo = new_repo()
    git("tag", "light", "feature", cwd=repo.bare)  # a lightweight tag beside the annotated one
    # A forge's pull request: its head is kept by Software Heritage, its automatic merge is not.
    git("update-ref", "refs/pull/1/head", "feature", cwd=repo.bare)
    git("update-ref", "refs/pull/1/merge", "main", cwd=repo.bare)
    job = run(owner, git_daemon.url(repo.name), history=history)

    found = {kind: swhid for kind, swhid, _ in job.snapshot.swhids}

    tree = git("rev-parse", "HEAD^{tree}", cwd=repo.bare)
    expected = {"rev": f"swh:1:rev:{repo.head}", "dir": f"swh:1:dir:{tree}"}
    if history != History.FILES:  # every ref: the repository's snapshot, as archived
        typed = "--format=%(objecttype) %(objectname) %(refname)"
        listed = git("for-each-ref", typed, cwd=repo.bare)
        branches = {line.split()[2]: tuple(line.split()[:2]) for line in listed.splitlines()}
        del branches["refs/pull/1/merge"]  # as swh.loader.git's ignore_branch_name drops it
        branches["HEAD"] = ("alias", "refs/heads/main")
        assert {kind for kind, _ in branches.values()} == {"commit", "tag", "alias"}
        expected["snp"] = swh_snapshot(branches)
    assert found == expected
    assert str(CoreSWHID.from_string(found["rev"]).object_id.hex()) == repo.head
    client.force_login(owner)
    page = client.get(f"/clones/{job.id}/").content.decode()
    for swhid in expected.values():
        assert f'href="https://archive.softwareheritage.org/{swhid}"' in page


def test_the_keys_page_shows_every_key_to_anyone(built, client, tmp_path, settings):
    client.logout()
    page = client.get("/keys/").content.decode()
    kept = signing.published()["keys"]
    assert all(key["keyid"] in page for key in kept) and "Signing now" in page
    # Keys given in a file of one's own sign instead, and rotate there.
    settings.CLONES_SIGNING_KEYS_FILE = str(tmp_path / "given_keys")
    call_command("rotatesigningkey")
    given = {key["keyid"] for key in signing.published()["keys"]}
    assert len(given) == 1 and not given & {key["keyid"] for key in kept}
    assert (tmp_path / "given_keys").stat().st_mode & 0o077 == 0  # this user's alone


def test_the_tree_check_says_so_when_git_is_not_there(built, monkeypatch):
    statement = verifier.verified_statement(
        built.job.snapshot.provenance, verifier.load_keys(signing.published())
    )
    monkeypatch.setenv("PATH", "/nonexistent")

    with pytest.raises(verifier.NotVerified, match="--tree needs `git`, which is not installed"):
        verifier.check_tree(built.archive, statement)


@pytest.mark.parametrize("history", [History.FULL, History.FILES])
def test_a_zip_archive_unpacks_to_the_commits_tree_too(history, owner, new_repo, git_daemon):
    repo = new_repo()  # an executable and symlinks, which only unzip restores
    job = run(owner, git_daemon.url(repo.name), history=history, archive_format="zip")
    statement = verifier.verified_statement(
        job.snapshot.provenance, verifier.load_keys(signing.published())
    )

    tree = verifier.check_tree(Path(job.archive.path), statement)

    assert tree == git("rev-parse", "HEAD^{tree}", cwd=repo.bare)


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "cannot be read"),  # given in settings, and not there: no key is made
        ("", "must hold one or more unencrypted Ed25519 keys"),
        ("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n", "cannot be read"),
    ],
)
def test_a_key_that_cannot_sign_fails_the_job_before_its_clone_saying_why(
    content, reason, owner, new_repo, git_daemon, settings, tmp_path, client
):
    given = tmp_path / "keys.pem"
    if content is not None:
        given.write_text(content)
    settings.CLONES_SIGNING_KEYS_FILE = str(given)
    repo = new_repo()

    job = jobs.submit(owner, git_daemon.url(repo.name))
    tasks.run_clone_job(str(job.id))
    job.refresh_from_db()

    assert job.status == Status.FAILED
    assert job.error.startswith(f"The signing keys in {given}") or str(given) in job.error
    assert reason in job.error
    assert not Snapshot.objects.filter(archive_sha256__gt="").exists()  # nothing stored
    assert client.get("/.well-known/cloneshelf/keys").status_code == 503
