"""Archives with the repository's submodules, for real: nested submodules (a relative URL and an
absolute one) fetched through the egress proxy by the test engine's git, from git servers on
127.0.0.1, and the proxy refusing what the URL policy forbids (the worker's task runs in this
process, and so does its proxy)."""

import socket
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.utils import timezone

from clones import jobs, tasks, watches
from clones.models import CloneJob, History, Status
from clones.pipeline import gitwords, refs, snapshots
from clones.safety import urlpolicy

from ..support.gitservers import CanaryServer, GitHTTPServer, RecordingGitHTTPServer
from ..support.helpers import assert_left_nothing_behind, run_job, unpacked
from ..support.repos import add_submodule, git
from ..test_watches import check, run_snapshots

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)


def commit_all(work: Path, message: str) -> str:
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "-m", message, cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def served(work: Path, served_root: Path) -> None:
    git("clone", "--quiet", "--bare", str(work), str(served_root / f"{work.name}.git"), cwd=work)


@dataclass
class Nested:
    url: str  # the superproject's
    expected: dict[str, str]  # path in the archive -> content
    leaf: Path  # vendor/b, as served
    middle: Path  # libs/a's work tree


@pytest.fixture
def nested(served_root, git_http, request):
    """super -> libs/a (relative URL) -> vendor/b (absolute URL), each recorded at a commit
    that is not its branch's tip."""
    number = request.node.nodeid.__hash__() & 0xFFFFFF
    root = served_root.parent / "work" / f"nested-{number}"
    names = {part: f"{part}-{number}" for part in ("super", "a", "b")}
    b, a, top = (root / names[part] for part in ("b", "a", "super"))
    for work in (b, a, top):
        work.mkdir(parents=True)
        git("init", "--quiet", "--initial-branch=main", cwd=work)

    (b / "b.txt").write_text("b as recorded\n")
    b_recorded = commit_all(b, "b1")
    (b / "b.txt").write_text("b later, not recorded\n")
    commit_all(b, "b2")
    served(b, served_root)

    (a / "a.txt").write_text("a as recorded\n")
    b_url = git_http.url(f"{names['b']}.git")
    add_submodule(a, b_url, "vendor/b", b, b_recorded)
    a_recorded = commit_all(a, "a1")
    (a / "a.txt").write_text("a later\n")
    commit_all(a, "a2")
    served(a, served_root)

    (top / "top.txt").write_text("the superproject\n")
    add_submodule(top, f"../{names['a']}.git", "libs/a", a, a_recorded)
    commit_all(top, "super")
    served(top, served_root)
    expected = {
        "top.txt": "the superproject\n",
        "libs/a/a.txt": "a as recorded\n",
        "libs/a/vendor/b/b.txt": "b as recorded\n",
    }
    leaf = served_root / f"{names['b']}.git"
    return Nested(git_http.url(f"{names['super']}.git"), expected, leaf, a)


def run(owner, url: str, ref: str = "", **options) -> CloneJob:
    return run_job(owner, url, ref, submodules=True, **options)


def files_in(top: Path) -> dict[str, str]:
    return {
        str(path.relative_to(top)): path.read_text()
        for path in top.rglob("*.txt")
        if ".git" not in path.relative_to(top).parts
    }


@pytest.mark.parametrize(
    "history, mirror",
    [
        (History.FULL, True),  # a full clone always comes from the mirror
        (History.SHALLOW, False),
        (History.FILES, False),
        (History.FILES, True),
    ],
    ids=["full", "shallow", "files", "files from the mirror"],
)
def test_nested_submodules_are_in_the_archive_at_the_commits_recorded(
    history, mirror, owner, nested, tmp_path
):
    url, expected = nested.url, nested.expected
    depth = 1 if history == History.SHALLOW else None
    if mirror:  # a job without submodules makes the repository's mirror
        tasks.run_clone_job(str(jobs.submit(owner, url).id))

    job = run(owner, url, history=history, depth=depth)

    assert job.status == Status.DONE, job.error
    top = unpacked(job, tmp_path)
    assert files_in(top) == expected
    if history == History.FILES:
        assert not [path for path in top.rglob(".git")]
    else:  # a checkout whose submodules are whole repositories, and clean
        status = git("submodule", "status", "--recursive", cwd=top)
        lines = status.splitlines()  # "-": not checked out, "+": not at the recorded commit
        assert len(lines) == 2 and not [line for line in lines if line[0] in "-+U"], status
        assert git("status", "--porcelain", "--ignore-submodules=none", cwd=top) == ""
        git("fsck", "--strict", cwd=top / "libs" / "a")
    assert_left_nothing_behind(job)


@pytest.mark.parametrize("history", [History.FULL, History.FILES])
def test_the_same_commit_with_submodules_is_archived_byte_for_byte_alike(owner, nested, history):
    url = nested.url
    first = run(owner, url, history=history)
    assert first.status == Status.DONE, first.error
    # As the expiry sweep would once its time has come: the next job builds afresh.
    CloneJob.objects.filter(pk=first.pk).update(expires_at=timezone.now())
    tasks.expire_archives()

    second = run(owner, url, history=history)

    assert second.status == Status.DONE, second.error
    assert second.snapshot_id == first.snapshot_id  # the same key, built again
    assert second.archive_sha256 == first.archive_sha256


def test_a_job_with_submodules_is_its_own_snapshot(owner, nested):
    url = nested.url
    without = jobs.submit(owner, url)
    tasks.run_clone_job(str(without.id))
    with_them = run(owner, url)
    without.refresh_from_db()

    assert without.status == with_them.status == Status.DONE
    assert without.snapshot_id != with_them.snapshot_id
    assert without.archive_sha256 != with_them.archive_sha256


@pytest.fixture
def only_the_git_server(settings):
    """The URL policy as in production, but for the test git servers' address: 127.0.0.1 is
    allowed, any other private address (127.0.0.2, where the canary listens) is not."""
    settings.CLONES_ALLOW_PRIVATE_NETWORKS = False
    settings.CLONES_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]


def hostile(served_root, git_http, name: str, submodule_url: str) -> str:
    """A served repository whose one submodule's URL is `submodule_url`; its URL."""
    work = served_root.parent / "work" / name
    leaf = served_root.parent / "work" / f"{name}-leaf"
    for repository in (work, leaf):
        repository.mkdir(parents=True)
        git("init", "--quiet", "--initial-branch=main", cwd=repository)
    (leaf / "leaf.txt").write_text("leaf\n")
    add_submodule(work, submodule_url, "libs/evil", leaf, commit_all(leaf, "leaf"))
    commit_all(work, "hostile")
    served(work, served_root)
    return git_http.url(f"{name}.git")


def test_a_submodule_at_a_private_address_is_refused_naming_it_and_nothing_reaches_it(
    only_the_git_server, owner, served_root, git_http, request
):
    canary = CanaryServer(host="127.0.0.2")
    request.addfinalizer(canary.stop)
    url = hostile(served_root, git_http, "private-submodule", canary.url("evil.git"))

    job = run(owner, url)

    assert job.status == Status.FAILED
    assert job.error == (
        f"The submodule at 'libs/evil' ({canary.url('evil.git')}) cannot be fetched: "
        f"127.0.0.2:{canary.port} was refused: 127.0.0.2 is a private or reserved address; "
        "only public git servers can be cloned."
    )
    assert canary.requests == []
    assert_left_nothing_behind(job)


def test_a_host_that_rebinds_is_checked_at_every_connection_and_never_reached(
    only_the_git_server, owner, served_root, git_http, request, monkeypatch
):
    """A name that resolves to an allowed address once, then to a forbidden one: each
    connection the proxy makes is to the address it checked for that connection."""
    # Where the git server listens, but on the forbidden address: a proxy that connected
    # anywhere but where it checked would reach it.
    canary = CanaryServer(host="127.0.0.2", port=git_http.port)
    request.addfinalizer(canary.stop)
    leaf_url = f"http://rebind.example:{git_http.port}/rebind-leaf.git"
    url = hostile(served_root, git_http, "rebind", leaf_url)
    real_resolve = urlpolicy.resolve
    answers = iter([[urlpolicy.ipaddress.ip_address("127.0.0.1")]])

    def rebinding(host, port):
        if host != "rebind.example":
            return real_resolve(host, port)
        return next(answers, [urlpolicy.ipaddress.ip_address("127.0.0.2")])

    monkeypatch.setattr(urlpolicy, "resolve", rebinding)

    job = run(owner, url)

    assert job.status == Status.FAILED
    assert "rebind.example resolves to 127.0.0.2, a private or reserved address" in job.error
    assert canary.requests == []


def test_a_git_url_submodule_is_refused_as_it_cannot_go_through_the_proxy(
    owner, served_root, git_http, git_daemon
):
    url = hostile(served_root, git_http, "git-protocol", git_daemon.url("anything.git"))

    job = run(owner, url)

    assert job.status == Status.FAILED
    assert job.error.startswith("The submodule at 'libs/evil' (git://127.0.0.1:")
    assert job.error.endswith(
        "could not be cloned: submodules are fetched over https:// and http:// only, not git."
    )


def test_submodules_nesting_past_the_cap_fail_saying_where(owner, nested, settings):
    settings.CLONES_SUBMODULE_LEVELS = 1
    url = nested.url

    job = run(owner, url)

    assert job.status == Status.FAILED
    assert job.error == (
        "Submodules nest more than 1 level deep, the most this service fetches (below 'libs/a')."
    )


def test_a_recorded_commit_the_submodule_lacks_fails_naming_both(owner, served_root, git_http):
    leaf_name = "lacking-leaf"
    url = hostile(served_root, git_http, "lacking", git_http.url(f"{leaf_name}.git"))
    # The served leaf is another repository, without the commit recorded.
    other = served_root.parent / "work" / "lacking-other"
    other.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=other)
    (other / "x.txt").write_text("x\n")
    commit_all(other, "other")
    subprocess.run(
        ["git", "clone", "--quiet", "--bare", str(other), str(served_root / f"{leaf_name}.git")],
        check=True,
    )

    job = run(owner, url)

    assert job.status == Status.FAILED
    assert job.error.startswith("The submodule at 'libs/evil' has no commit ")
    assert job.error.endswith(", which the repository records for it.")


def test_an_egress_proxy_that_cannot_start_fails_the_job_saying_so(owner, nested, settings):
    settings.CLONES_EGRESS_BIND = "192.0.2.1"  # no address of this machine: bind() fails
    url = nested.url

    job = run(owner, url)

    assert job.status == Status.FAILED
    assert job.error == (
        "The egress proxy could not start: [Errno 99] Cannot assign requested address"
    )
    assert_left_nothing_behind(job)


def test_a_watch_with_submodules_snapshots_them(owner, nested, tmp_path):
    url, expected = nested.url, nested.expected
    watch = watches.create(owner, url, history=History.FILES, submodules=True)
    check(watch)

    [snapshot] = run_snapshots(watch)

    assert snapshot.status == Status.DONE, snapshot.error
    assert snapshot.submodules and snapshot.snapshot.submodules
    assert files_in(unpacked(snapshot, tmp_path)) == expected


def test_a_commit_a_nested_submodule_lacks_is_named_by_its_whole_path(owner, nested, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=other)
    (other / "x.txt").write_text("x\n")
    commit_all(other, "other")
    subprocess.run(["rm", "-rf", str(nested.leaf)], check=True)
    git("clone", "--quiet", "--bare", str(other), str(nested.leaf), cwd=tmp_path)

    job = run(owner, nested.url)

    assert job.status == Status.FAILED
    assert job.error.startswith("The submodule at 'libs/a/vendor/b' has no commit ")


def test_a_submodule_marked_update_none_is_left_out_as_git_leaves_it(
    owner, served_root, git_http, nested, tmp_path
):
    """Below the top too: the depth check counts what is left, not what git skipped."""
    git("config", "-f", ".gitmodules", "submodule.vendor/b.update", "none", cwd=nested.middle)
    commit_all(nested.middle, "vendor/b: update none")
    middle = served_root / f"{nested.middle.name}.git"
    git("push", "--quiet", str(middle), "HEAD:refs/heads/none", cwd=nested.middle)
    # The superproject records libs/a at that commit.
    top = nested.middle.parent / nested.middle.name.replace("a-", "super-", 1)
    git("-C", "libs/a", "fetch", "--quiet", "origin", "main", cwd=top)
    git("-C", "libs/a", "checkout", "--quiet", "FETCH_HEAD", cwd=top)
    commit_all(top, "libs/a with vendor/b left out")
    git("push", "--quiet", str(served_root / f"{top.name}.git"), "HEAD:main", cwd=top)

    job = run(owner, nested.url, history=History.FILES)

    assert job.status == Status.DONE, job.error
    # libs/a now at its branch's tip ("a later"), vendor/b not fetched.
    expected = {"top.txt": "the superproject\n", "libs/a/a.txt": "a later\n"}
    assert files_in(unpacked(job, tmp_path)) == expected


@pytest.mark.parametrize("option", ["submodules", "lfs"])
def test_with_a_token_an_archive_fetched_beyond_the_repository_is_its_owners_alone(
    option, owner, django_user_model
):
    """Her token may open other repositories on its host (a private submodule, an LFS store)
    that the next person, who can read this one, cannot: such a snapshot is not shared."""
    other = django_user_model.objects.create_user("other", password="pw-other-123")
    resolved = refs.Resolved("a" * 40, "refs/heads/main")

    def snapshot_of(person, token: bool, **options):
        job = CloneJob.objects.create(
            owner=person, url="https://example.com/team/app.git", used_token=token, **options
        )
        return snapshots.take(job, resolved)[0]

    with_token = snapshot_of(owner, True, **{option: True})
    assert snapshot_of(other, True, **{option: True}) != with_token
    assert snapshot_of(owner, True, **{option: True}) == with_token  # hers, again
    without = snapshot_of(owner, False, **{option: True})
    assert snapshot_of(other, False, **{option: True}) == without
    assert snapshot_of(other, True) == snapshot_of(owner, True)  # neither option: shared


def test_an_access_token_goes_to_the_repositorys_host_and_not_to_a_submodules(
    owner, served_root, request
):
    """The superproject's server wants the token; the submodule is on another host (another
    port), which must never see it (git's credential store is by host)."""
    token = "submodule-s3cret"
    private = GitHTTPServer(served_root, auth=f"{gitwords.TOKEN_USER}:{token}")
    elsewhere = RecordingGitHTTPServer(served_root)
    for server in (private, elsewhere):
        request.addfinalizer(server.stop)
    url = hostile(served_root, private, "credentials", elsewhere.url("credentials-leaf.git"))
    served(served_root.parent / "work" / "credentials-leaf", served_root)

    job = run(owner, url, token=token)

    assert job.status == Status.DONE, job.error
    assert elsewhere.requests
    assert not [headers for _m, _p, headers in elsewhere.requests if "Authorization" in headers]


def test_a_files_zip_with_submodules_holds_them_without_any_git(owner, nested, tmp_path):
    job = run(owner, nested.url, history=History.FILES, archive_format="zip")

    assert job.status == Status.DONE, job.error
    with zipfile.ZipFile(job.archive.path) as archive:
        names = archive.namelist()
        contents = {
            name.removeprefix(f"{job.top_level}/"): archive.read(name).decode()
            for name in names
            if name.endswith(".txt")
        }
    assert contents == nested.expected
    assert not [name for name in names if name.endswith("/.git") or "/.git/" in name]


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, not listening, for the test's time)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    closed_port.held = sock  # kept open, so no one else takes the port
    return sock.getsockname()[1]


@pytest.mark.parametrize(
    "where, error",
    [
        ("missing", "could not be cloned: there is no repository at that URL."),
        ("down", "could not be fetched: nothing answered there."),
    ],
)
def test_a_submodule_that_cannot_be_cloned_says_why(where, error, owner, served_root, git_http):
    url_of = {
        "missing": git_http.url("nowhere.git"),
        "down": f"http://127.0.0.1:{closed_port()}/x.git",
    }
    url = hostile(served_root, git_http, f"cannot-{where}", url_of[where])

    job = run(owner, url)

    assert job.status == Status.FAILED
    assert job.error == f"The submodule at 'libs/evil' ({url_of[where]}) {error}"


def test_a_submodule_without_a_url_in_gitmodules_is_named(owner, served_root, git_http):
    url = hostile(served_root, git_http, "no-url", git_http.url("anything.git"))
    work = served_root.parent / "work" / "no-url"
    git("config", "-f", ".gitmodules", "--remove-section", "submodule.libs/evil", cwd=work)
    commit_all(work, "the gitlink alone")
    git("push", "--quiet", str(served_root / "no-url.git"), "HEAD:main", cwd=work)

    job = run(owner, url)

    assert job.status == Status.FAILED
    assert job.error == (
        "The repository has a submodule at 'libs/evil' that .gitmodules gives no URL for."
    )
