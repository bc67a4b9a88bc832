"""Clones of SSH URLs, for real: Debian's sshd on 127.0.0.1 with git-shell, the worker's ref
lookup running OpenSSH's client, and the clone in the test engine's container with the owner's
key, the known host keys and HostKeyAlias. The URL names a host (git.example.test, resolved by
the stubbed DNS to 127.0.0.1): the known host key is matched under that name, whatever address
ssh connects to."""

import socket
import tarfile

import pytest

from clones import watches
from clones.models import KnownHost, Status
from clones.pipeline import gitwords, refs, sshaccess
from clones.safety import sshkeys

from ..support.helpers import assert_left_nothing_behind, run_job, unpacked
from ..support.repos import add_submodule, git, make_tiny_repo
from ..support.sshserver import SSH_HOST, make_key
from ..test_watches import check, run_snapshots

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_tiny_repo(tmp_path_factory.mktemp("served"), "over-ssh")


@pytest.fixture
def url(sshd, repo, ssh_allowed):
    return f"ssh://{sshd.user}@{SSH_HOST}:{sshd.port}{repo.bare.resolve()}"


@pytest.fixture
def authorized_owner(owner, sshd):
    """The owner, with a key made by the service that the server accepts."""
    sshd.authorize(sshaccess.make_key(owner).public_line)
    return owner


def know_host(sshd, key_line: str | None = None) -> KnownHost:
    """The server's host key (or `key_line`'s) known under the URL's host and port, as an admin
    adds it."""
    seen = sshkeys.parse_known_host(key_line or sshd.known_hosts_line(f"[{SSH_HOST}]:{sshd.port}"))
    return KnownHost.objects.create(
        **sshaccess.known_host_fields(seen),
    )


def another_host_key(sshd, tmp_path) -> str:
    make_key(tmp_path / "impostor")
    key_type, key_base64 = (tmp_path / "impostor.pub").read_text().split()[:2]
    return f"[{SSH_HOST}]:{sshd.port} {key_type} {key_base64}"


def server_fingerprint(sshd) -> str:
    return sshkeys.parse_known_host(sshd.known_hosts_line()).fingerprint


def test_a_known_host_is_cloned_with_the_owners_key(sshd, repo, url, authorized_owner, tmp_path):
    know_host(sshd)
    job = run_job(authorized_owner, url)
    assert job.status == Status.DONE, job.error
    assert job.commit == repo.head
    assert (unpacked(job, tmp_path) / "README.md").read_text() == "# over-ssh\n"
    with tarfile.open(job.archive.path) as tar:  # nothing of the key's went into the archive
        names = {name.rsplit("/", 1)[-1] for name in tar.getnames()}
    assert not names & {sshaccess.KEY_FILE, sshaccess.KNOWN_HOSTS_FILE, sshaccess.PASSWD_FILE}
    assert_left_nothing_behind(job)


def test_a_full_history_and_a_mirror_cache_work_over_ssh(
    sshd, repo, url, authorized_owner, tmp_path
):
    know_host(sshd)
    full = run_job(authorized_owner, url, history="full")  # the mirror is cloned over ssh
    bundle = run_job(authorized_owner, url, history="bundle")  # and fetched into over ssh
    for job in (full, bundle):
        assert job.status == Status.DONE, job.error
        assert job.commit == repo.head
    checkout = unpacked(full, tmp_path)
    # Its origin as the person gave it (their login, the host's name), not the pinned address.
    assert git("config", "remote.origin.url", cwd=checkout) == url


def test_an_unknown_host_is_refused_before_any_connection(sshd, url, authorized_owner):
    before = sshd.log.read_text()
    job = run_job(authorized_owner, url)
    assert job.status == Status.FAILED
    assert job.error == sshaccess.UNKNOWN_HOST.format(host=f"{SSH_HOST}:{sshd.port}")
    assert sshd.log.read_text() == before  # the server never heard of it


def test_a_changed_host_key_is_refused_naming_what_was_offered(
    sshd, url, authorized_owner, tmp_path
):
    know_host(sshd, another_host_key(sshd, tmp_path))
    logged = len(sshd.log.read_text())
    job = run_job(authorized_owner, url)
    assert job.status == Status.FAILED
    assert job.error == sshaccess.CHANGED_HOST.format(
        host=f"{SSH_HOST}:{sshd.port}", fingerprint=server_fingerprint(sshd)
    )
    assert "publickey" not in sshd.log.read_text()[logged:]  # no key was offered to it


def test_the_container_checks_the_host_key_too(sshd, url, authorized_owner, tmp_path, monkeypatch):
    """A host whose key changes between the worker's lookup and the clone (someone in between
    for the second connection only) is refused by the container's ssh as well."""
    known = know_host(sshd)
    resolve = refs.resolve

    def then_the_key_changes(*args, **kwargs):
        resolved = resolve(*args, **kwargs)
        impostor = sshkeys.parse_known_host(another_host_key(sshd, tmp_path))
        KnownHost.objects.filter(pk=known.pk).update(key_base64=impostor.key_base64)
        return resolved

    monkeypatch.setattr(refs, "resolve", then_the_key_changes)
    job = run_job(authorized_owner, url)
    assert job.status == Status.FAILED
    assert job.error == sshaccess.CHANGED_HOST.format(
        host=f"{SSH_HOST}:{sshd.port}", fingerprint=server_fingerprint(sshd)
    )
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in job.git_output
    assert_left_nothing_behind(job)


def test_a_key_the_server_does_not_accept(sshd, url, owner):
    know_host(sshd)
    key = sshaccess.make_key(owner)  # never authorized on the server
    job = run_job(owner, url)
    assert job.status == Status.FAILED
    assert job.error == sshaccess.KEY_REFUSED.format(
        host=f"{SSH_HOST}:{sshd.port}", fingerprint=key.fingerprint
    )
    assert f"Failed publickey for {sshd.user}" in sshd.log.read_text()


def test_a_person_without_a_key_is_told_to_make_one(sshd, url, owner):
    know_host(sshd)
    job = run_job(owner, url)
    assert job.status == Status.FAILED
    assert job.error == sshaccess.NO_KEY


def test_trust_on_first_use_records_the_key_and_holds_to_it(
    sshd, repo, url, authorized_owner, settings
):
    settings.CLONES_SSH_TRUST_ON_FIRST_USE = True
    job = run_job(authorized_owner, url)
    assert job.status == Status.DONE, job.error
    recorded = KnownHost.objects.get()
    assert recorded.pattern == f"[{SSH_HOST}]:{sshd.port}"
    assert recorded.fingerprint == server_fingerprint(sshd)
    assert recorded.trusted_on_first_use
    assert recorded.added_by == authorized_owner

    KnownHost.objects.update(
        key_base64=sshkeys.parse_known_host(another_host_key(sshd, sshd.directory)).key_base64
    )
    later = run_job(authorized_owner, url, ref="main")
    assert later.status == Status.FAILED  # once known, a key that differs is refused
    assert later.error.startswith(f"{SSH_HOST}:{sshd.port} offered an SSH host key")


def test_a_missing_repository_over_ssh(sshd, url, authorized_owner):
    know_host(sshd)
    missing = url.rsplit("/", 1)[0] + "/missing.git"
    job = run_job(authorized_owner, missing)
    assert job.status == Status.FAILED
    assert job.error == f"There is no git repository at {missing}."


def test_a_colleague_whose_key_the_server_refuses_gets_no_shared_snapshot(
    sshd, url, authorized_owner, other_user
):
    """The first person's snapshot is ready; the second asks for the same commit with a key the
    server does not accept, and is told so instead of being handed the archive."""
    know_host(sshd)
    first = run_job(authorized_owner, url)
    assert first.status == Status.DONE, first.error
    sshaccess.make_key(other_user)  # never authorized on the server

    second = run_job(other_user, url)

    assert second.status == Status.FAILED
    assert second.error.startswith(f"{SSH_HOST}:{sshd.port} did not accept your SSH key")
    assert second.snapshot_id is None


def test_a_watch_of_an_ssh_url_checks_and_snapshots_with_its_owners_key(
    sshd, repo, url, authorized_owner
):
    know_host(sshd)
    watch = watches.create(authorized_owner, url)
    check(watch)
    [snapshot] = run_snapshots(watch)
    assert snapshot.commit == repo.head


def test_a_server_that_says_nothing_is_given_up_on_in_the_lookups_time(url, authorized_owner, sshd):
    """A port that accepts and never speaks: ssh waits for its banner, the lookup does not."""
    know_host(sshd)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        quiet_url = url.replace(f":{sshd.port}/", f":{port}/")
        KnownHost.objects.update(pattern=f"[{SSH_HOST}]:{port}")
        pinned = gitwords.pinned(quiet_url)
        ssh = sshaccess.for_owner(authorized_owner.pk, pinned)
        with pytest.raises(gitwords.CloneFailed) as failed:
            refs.resolve(quiet_url, pinned, "", timeout=2, ssh=ssh)
    assert str(failed.value) == f"{SSH_HOST}:{port} did not answer within 2 s."


def test_an_ssh_repositorys_relative_submodule_is_refused_naming_it(
    sshd, repo, authorized_owner, ssh_allowed, tmp_path
):
    """Submodules are fetched through the egress proxy, over http(s) only: one beside an SSH
    repository (an ssh URL, then) is refused with a message that says so."""
    know_host(sshd)
    served = make_tiny_repo(tmp_path, "with-submodule")
    work = tmp_path / "work"
    git("clone", "--quiet", str(served.bare), str(work), cwd=tmp_path)
    add_submodule(work, "../other.git", "lib", repo.bare)
    git("commit", "--quiet", "-m", "lib", cwd=work)
    git("push", "--quiet", "origin", "HEAD:main", cwd=work)
    url = f"ssh://{sshd.user}@{SSH_HOST}:{sshd.port}{served.bare.resolve()}"

    job = run_job(authorized_owner, url, submodules=True)

    assert job.status == Status.FAILED
    assert job.error.startswith("The submodule at 'lib' (ssh://")
    assert job.error.endswith("submodules are fetched over https:// and http:// only, not ssh.")


def test_a_port_where_nothing_listens_is_said_to_be_unreachable(url, authorized_owner, sshd):
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    KnownHost.objects.create(pattern=f"[{SSH_HOST}]:{port}", key_type="ssh-ed25519", key_base64="x")
    job = run_job(authorized_owner, url.replace(f":{sshd.port}/", f":{port}/"))
    assert job.status == Status.FAILED
    assert job.error == f"Could not connect to {SSH_HOST}:{port}."
