"""clones.pipeline.refs: which commit a ref names, asked of real git servers on 127.0.0.1 before any
clone runs, under the URL policy and its pinned addresses.

The resolver is stubbed wherever a host name appears, so no test resolves a real name; every
server listens on 127.0.0.1.
"""

import ipaddress
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from clones.pipeline import gitwords, refs
from clones.pipeline.gitwords import CloneFailed
from clones.safety import urlpolicy

from ..support import corpus
from ..support.gitservers import (
    CanaryServer,
    EndlessRefsServer,
    GitDaemon,
    GitHTTPServer,
    GitHTTPSServer,
    RecordingGitHTTPServer,
    RedirectServer,
    StallingServer,
    free_port,
)
from ..support.repos import git

SHA1 = "0123456789abcdef0123456789abcdef01234567"
SHA256 = "0123456789abcdef" * 4


@dataclass
class Remote:
    server: GitHTTPServer | GitDaemon
    protocol: int  # the one refs speaks to it

    def url(self, name: str) -> str:
        return self.server.url(name)


REMOTES = [("http", 2), ("http", 0), ("git", 2), ("git", 0)]


@pytest.fixture(params=REMOTES, ids=[f"{scheme}-v{protocol}" for scheme, protocol in REMOTES])
def remote(request, monkeypatch, git_http, git_daemon) -> Remote:
    """Smart HTTP and git daemon, each spoken to in protocol v2 and in git's first protocol,
    as a server without v2 answers."""
    scheme, protocol = request.param
    monkeypatch.setattr(refs, "PROTOCOL_VERSION", protocol)
    return Remote(git_http if scheme == "http" else git_daemon, protocol)


@pytest.fixture
def lookups(monkeypatch):
    """Every host socket.getaddrinfo is asked about from now on; a name (not an address) fails
    the test at once: after pin, nothing may look a name up again."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        asked.append(host)
        ipaddress.ip_address(host.strip("[]") if isinstance(host, str) else host.decode())
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def resolve(url: str, ref: str = "", **options) -> refs.Resolved:
    """As a job looks its ref up: the URL pinned (checked, resolved) first."""
    return refs.resolve(url, gitwords.pinned(url), ref, **options)


def failure(url: str, ref: str = "", **options) -> str:
    with pytest.raises(CloneFailed) as failed:
        resolve(url, ref, **options)
    return str(failed.value)


def rev_parse(repo, what: str) -> str:
    return git("rev-parse", what, cwd=repo.bare)


# What each ref names.


def test_no_ref_is_the_branch_the_servers_head_names(remote, served_root):
    repo = corpus.unusual_default_branch(served_root, f"trunk-{remote.protocol}")

    resolved = resolve(remote.url(repo.name))

    assert resolved == refs.Resolved(repo.head, "refs/heads/trunk")
    assert rev_parse(repo, "main") != repo.head  # main and master exist, but are not HEAD


def test_a_branch(remote, new_repo):
    repo = new_repo()

    resolved = resolve(remote.url(repo.name), "feature")

    assert resolved == refs.Resolved(repo.refs["feature"], "refs/heads/feature")


def test_a_lightweight_tag(remote, new_repo):
    repo = new_repo()
    git("tag", "light", repo.refs["feature"], cwd=repo.bare)

    assert resolve(remote.url(repo.name), "light") == refs.Resolved(
        repo.refs["feature"], "refs/tags/light"
    )


def test_an_annotated_tag_is_the_commit_it_points_at(remote, new_repo):
    repo = new_repo()
    assert rev_parse(repo, "refs/tags/v1.0") != repo.refs["v1.0"]  # the tag object

    resolved = resolve(remote.url(repo.name), "v1.0")

    assert resolved == refs.Resolved(repo.refs["v1.0"], "refs/tags/v1.0")


def test_a_tag_of_a_tag_is_the_commit_at_the_end(remote, new_repo):
    repo = new_repo()
    git("tag", "-a", "nested", "-m", "a tag of v1.0", "refs/tags/v1.0", cwd=repo.bare)
    assert "\ntype tag\n" in git("cat-file", "-p", "refs/tags/nested", cwd=repo.bare)

    resolved = resolve(remote.url(repo.name), "nested")

    assert resolved == refs.Resolved(repo.refs["v1.0"], "refs/tags/nested")


def test_a_branch_comes_before_a_tag_of_the_same_name(remote, new_repo):
    repo = new_repo()
    git("tag", "feature", repo.refs["v1.0"], cwd=repo.bare)
    git("branch", "v1.0", repo.refs["feature"], cwd=repo.bare)

    url = remote.url(repo.name)

    assert resolve(url, "feature") == refs.Resolved(repo.refs["feature"], "refs/heads/feature")
    assert resolve(url, "v1.0") == refs.Resolved(repo.refs["feature"], "refs/heads/v1.0")


def test_a_ref_that_is_not_there(remote, new_repo):
    repo = new_repo()
    url = remote.url(repo.name)

    assert failure(url, "nope") == "The repository has no branch or tag 'nope'."
    # ls-refs asks for names starting with the ref: a longer one is not it.
    assert failure(url, "feat") == "The repository has no branch or tag 'feat'."


def test_an_empty_repository(remote, served_root):
    repo = corpus.empty(served_root, f"empty-{remote.protocol}")

    assert failure(remote.url(repo.name)) == gitwords.EMPTY_REPOSITORY
    assert failure(remote.url(repo.name), "main") == "The repository has no branch or tag 'main'."


def test_head_naming_a_deleted_branch(remote, served_root):
    repo = corpus.default_branch_deleted(served_root, f"deleted-{remote.protocol}")

    message = failure(remote.url(repo.name))

    if remote.protocol == 2:  # ls-refs lists the unborn HEAD with its branch
        assert message == gitwords.DEFAULT_BRANCH_MISSING.format(branch="main")
        assert message == (
            "The repository's default branch, 'main', does not exist; give one of its branches "
            "or tags."
        )
    else:  # git's first protocol leaves an unborn HEAD out
        assert message == refs.NO_DEFAULT_BRANCH
    assert resolve(remote.url(repo.name), "release").ref == "refs/heads/release"


def test_a_detached_head_is_its_commit_and_no_ref(remote, new_repo):
    repo = new_repo()
    git("update-ref", "--no-deref", "HEAD", repo.refs["feature"], cwd=repo.bare)

    assert resolve(remote.url(repo.name)) == refs.Resolved(repo.refs["feature"], "")


def test_a_sha256_repository(remote, served_root):
    repo = corpus.sha256_objects(served_root, f"sha256-{remote.protocol}")
    tagged = rev_parse(repo, "v1^{commit}")

    assert len(repo.head) == 64
    assert resolve(remote.url(repo.name)) == refs.Resolved(repo.head, "refs/heads/main")
    assert resolve(remote.url(repo.name), "v1") == refs.Resolved(tagged, "refs/tags/v1")


def test_no_repository_at_the_path(remote):
    url = remote.url("not-there.git")

    assert failure(url) == f"There is no git repository at {url}."


@pytest.fixture(scope="module")
def many_refs(served_root):
    return corpus.many_refs(served_root, "many-refs")


def test_ten_thousand_tags_are_still_quick(remote, many_refs):
    repo = many_refs
    url = remote.url(repo.name)
    started = time.monotonic()

    assert resolve(url).commit == repo.head
    assert resolve(url, "nightly-09999").ref == "refs/tags/nightly-09999"
    assert resolve(url, "v199.0").commit == rev_parse(repo, "v199.0^{commit}")
    assert resolve(url, "branch-299").ref == "refs/heads/branch-299"

    assert time.monotonic() - started < 2


# A full SHA: taken as it is, once the server has said the repository may be read.


@pytest.mark.parametrize("sha", [SHA1, SHA1.upper(), SHA256])
def test_a_full_sha_is_taken_as_it_is(sha, remote, new_repo):
    assert resolve(remote.url(new_repo().name), sha) == refs.Resolved(sha.lower(), "")


def test_a_full_sha_of_a_private_repository_still_needs_its_token(private, new_repo):
    repo = new_repo()
    url = private.url(repo.name)

    assert failure(url, ref=repo.head) == (
        "This repository needs authentication; give an access token that can read it."
    )
    assert resolve(url, repo.head, token="s3cret-token").commit == repo.head


# The URL policy and its pinned addresses.


def test_a_url_the_policy_refuses_is_not_connected_to(production_policy):
    canary = CanaryServer()
    try:
        message = failure(canary.url("repo.git"))
        assert canary.requests == []
    finally:
        canary.stop()
    assert message == (
        "127.0.0.1 is a private or reserved address; only public git servers can be cloned."
    )


def test_pin_says_where_a_client_may_connect(dns):
    dns["bücher.example.test"] = dns["xn--bcher-kva.example.test"] = ["127.0.0.1", "127.0.0.9"]
    address, other = (ipaddress.ip_address(a) for a in ["127.0.0.1", "127.0.0.9"])

    https = urlpolicy.pin("https://Bücher.example.test:8443/repo.git")
    daemon = urlpolicy.pin("git://bücher.example.test/repo.git")

    assert (https.scheme, https.host, https.port) == ("https", "xn--bcher-kva.example.test", 8443)
    assert https.addresses == (address, other)
    assert (daemon.scheme, daemon.port, daemon.addresses) == ("git", 9418, (address,))
    assert daemon.url == "git://127.0.0.1/repo.git"  # git goes to the first address only


def test_a_host_that_cannot_be_found(dns):
    assert failure("https://nowhere.example.test/repo.git") == (
        "The host nowhere.example.test could not be found."
    )


def test_http_goes_to_the_checked_address_with_the_host_name(dns, lookups, served_root, new_repo):
    server = RecordingGitHTTPServer(served_root)
    repo = new_repo()
    dns["git.example.test"] = ["127.0.0.1"]
    try:
        resolved = resolve(f"http://git.example.test:{server.port}/{repo.name}", "feature")
    finally:
        server.stop()

    assert resolved.commit == repo.refs["feature"]
    assert server.requests  # it reached the server listening on 127.0.0.1
    assert {headers["Host"] for _, _, headers in server.requests} == {
        f"git.example.test:{server.port}"
    }
    assert set(lookups) == {"127.0.0.1"}  # and no name was looked up after pin


def test_git_daemon_is_reached_at_the_checked_address(dns, lookups, git_daemon, new_repo):
    repo = new_repo()
    dns["git.example.test"] = ["127.0.0.1"]

    resolved = resolve(f"git://git.example.test:{git_daemon.port}/{repo.name}")

    assert resolved.commit == repo.head
    assert set(lookups) == {"127.0.0.1"}


def test_only_the_urls_own_host_is_ever_connected_to(dns):
    dns["git.example.test"] = ["127.0.0.1"]
    pinned = urlpolicy.pin("https://git.example.test/repo.git")
    with refs._PinnedPoolManager(pinned, refs._Budget(5)) as pool:
        for url in ["https://elsewhere.example/x", "http://git.example.test/x"]:
            with pytest.raises(ValueError, match="is not the URL's host"):
                pool.request("GET", url)


# TLS: connected to the checked address, verified for the host name.


@pytest.fixture(scope="session")
def certificates(tmp_path_factory) -> Path:
    """A test CA (ca.pem) and, signed by it, git.example.test.pem and other.example.test.pem
    (certificate and key)."""
    where = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    # keyUsage: Python 3.13 verifies strictly (VERIFY_X509_STRICT), as public CAs are made.
    ca_usage = ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    openssl(
        "req",
        "-x509",
        *key,
        *ca_usage,
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    for name in ["git.example.test", "other.example.test"]:
        openssl("req", *key, "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", "req.csr")
        (where / "ext.cnf").write_text(
            f"subjectAltName=DNS:{name}\nauthorityKeyIdentifier=keyid\nbasicConstraints=CA:FALSE\n"
        )
        openssl(
            "x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", f"{name}.crt",
        )  # fmt: skip
        pem = (where / f"{name}.crt").read_text() + (where / f"{name}.key").read_text()
        (where / f"{name}.pem").write_text(pem)
    return where


@pytest.fixture
def https(certificates, served_root, dns):
    """start(certificate name) -> a GitHTTPSServer that git.example.test resolves to."""
    dns["git.example.test"] = ["127.0.0.1"]
    servers = []

    def start(name: str = "git.example.test") -> GitHTTPSServer:
        servers.append(GitHTTPSServer(served_root, certificates / f"{name}.pem"))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_https_is_verified_for_the_host_name_at_the_checked_address(
    https, certificates, monkeypatch, lookups, new_repo
):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates / "ca.pem"))  # trust the test CA
    server = https()
    repo = new_repo()

    resolved = resolve(server.url(repo.name, host="git.example.test"), "v1.0")

    assert resolved == refs.Resolved(repo.refs["v1.0"], "refs/tags/v1.0")
    assert {headers["Host"] for _, _, headers in server.requests} == {
        f"git.example.test:{server.port}"
    }
    assert set(lookups) == {"127.0.0.1"}


def test_a_certificate_for_another_name_is_refused(https, certificates, monkeypatch, new_repo):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates / "ca.pem"))
    server = https("other.example.test")
    url = server.url(new_repo().name, host="git.example.test")

    message = failure(url)

    assert message == f"git.example.test:{server.port}'s TLS certificate could not be verified."
    assert server.requests == []


def test_a_certificate_from_an_unknown_authority_is_refused(https, monkeypatch, new_repo):
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent")
    server = https()
    url = server.url(new_repo().name, host="git.example.test")

    message = failure(url)

    assert message == f"git.example.test:{server.port}'s TLS certificate could not be verified."
    assert server.requests == []


# Servers that misbehave.


def test_a_redirect_is_not_followed(new_repo):
    canary = CanaryServer()
    redirect = RedirectServer(f"http://127.0.0.1:{canary.port}")
    try:
        message = failure(redirect.url(new_repo().name))
        assert canary.requests == []
    finally:
        redirect.stop()
        canary.stop()
    assert message == (
        "The server redirected the clone to another address. Redirects are not followed: give "
        "the repository's final URL."
    )


def test_a_web_server_with_no_repository():
    canary = CanaryServer()
    try:
        url = canary.url("team/repo.git")
        assert failure(url) == f"There is no git repository at {url}."
    finally:
        canary.stop()


@pytest.mark.parametrize("scheme", ["git", "http"])
def test_a_server_that_never_answers_times_out(scheme):
    server = StallingServer(advertise=False)
    started = time.monotonic()
    try:
        message = failure(f"{scheme}://127.0.0.1:{server.port}/stall.git", timeout=1)
    finally:
        server.stop()

    assert message == f"127.0.0.1:{server.port} did not answer within 1 s."
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("scheme", ["git", "http"])
def test_a_server_that_answers_a_little_at_a_time_is_cut_at_the_timeout(scheme):
    # Each read returns well within the timeout: only a deadline for the whole stops it.
    server = EndlessRefsServer(delay=0.2, batch=1)
    started = time.monotonic()
    try:
        message = failure(server.url(scheme), timeout=1)
    finally:
        server.stop()

    assert message == f"127.0.0.1:{server.port} did not answer within 1 s."
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("scheme", ["git", "http"])
def test_endless_refs_are_cut_at_the_size_limit(scheme, monkeypatch):
    monkeypatch.setattr(refs, "MAX_ADVERTISEMENT_BYTES", 1024 * 1024)
    server = EndlessRefsServer()
    try:
        message = failure(server.url(scheme), timeout=10)
    finally:
        server.stop()

    assert message == (
        f"127.0.0.1:{server.port} sent more than 1 MiB of branches and tags, more than is read "
        "here."
    )


@pytest.mark.parametrize("scheme", ["git", "http"])
def test_nothing_listening(scheme):
    port = free_port()

    assert (
        failure(f"{scheme}://127.0.0.1:{port}/repo.git")
        == f"Could not connect to 127.0.0.1:{port}."
    )


# Access tokens.


@pytest.fixture
def private(served_root):
    server = GitHTTPServer(served_root, auth="x-access-token:s3cret-token")
    yield server
    server.stop()


def test_a_private_repository_without_a_token(private, new_repo):
    assert failure(private.url(new_repo().name)) == (
        "This repository needs authentication; give an access token that can read it."
    )


def test_a_private_repository_with_a_wrong_token(private, new_repo):
    assert failure(private.url(new_repo().name), token="wrong") == (
        "This repository needs authentication; the access token given was not accepted."
    )


@pytest.mark.parametrize("protocol", [2, 0])
def test_a_private_repository_with_its_token(protocol, private, new_repo, monkeypatch):
    monkeypatch.setattr(refs, "PROTOCOL_VERSION", protocol)
    repo = new_repo()

    resolved = resolve(private.url(repo.name), "feature", token="s3cret-token")

    assert resolved == refs.Resolved(repo.refs["feature"], "refs/heads/feature")
