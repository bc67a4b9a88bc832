"""The incremental mirror cache: one bare mirror of each repository under
CLONES_DATA_DIR/mirrors/, fetched (`git fetch --prune`, every ref) into by the job's own clone
container before the job is built from it, so that a repository that moved by a few commits
costs a fetch of those commits, not a cold clone.

- One writer at a time: a job holds the mirror's lock file (flock, let go by the kernel if the
  worker is killed) from before it looks at the mirror until its container has finished.
- Never served half-made or damaged: a marker beside the mirror is written before each fetch and
  removed once the fetch is over, so a marker found means a writer died mid-fetch; every pack's
  and index's checksums and every loose object are verified before each use; a fetch that fails
  (fsck included) discards the mirror. A discarded mirror is removed and made afresh.
- Shared between people by the snapshots' rule: every job's ref lookup, with its own token, has
  succeeded before its build (clones.tasks) reaches the mirror.
- Bounded by CLONES_MIRROR_MAX_BYTES: the least recently used are evicted past it.
"""

import hashlib
import logging
import os
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db.models import F, Sum
from django.utils import timezone

from ..models import CloneJob, History, Mirror, MirrorState, storable
from ..safety import urlpolicy
from . import engine, gitwords, paths

MOUNT_POINT = "/mirror"  # in the clone container, beside engine.MOUNT_POINT
# In the job directory: each of the mirror's refs (its object's type, its object, its name),
# written once its fetch is over.
FETCHED = "mirror-refs"
TIPS_BEFORE = "mirror-tips"  # in the job directory: the objects its refs named before the fetch
HEAD = "mirror-head"  # in the job directory: the branch the mirror's HEAD names
CHANGES = "changes"  # in the job directory: `git log` of a watch's new commits
CHANGES_TOTAL = "changes-total"
MAX_CHANGES = 100
MAX_SUBJECT = 200
# Kept in the foreground, under the lock: an automatic gc left in the background would be
# killed with the container, half-way.
FETCH_CONFIG = ["-c", "gc.autoDetach=false", "-c", "maintenance.autoDetach=false"]
READ_CHUNK = 1024 * 1024

logger = logging.getLogger(__name__)


class Corrupt(Exception):
    """The mirror on disk is not what git wrote."""


def root() -> Path:
    return settings.CLONES_DATA_DIR / "mirrors"


def key(url: str) -> str:
    return hashlib.sha256(urlpolicy.normalized_url(url).encode()).hexdigest()


def _directory(mirror_key: str) -> Path:
    return root() / mirror_key


def _lock(mirror_key: str) -> Path:
    return root() / f"{mirror_key}.lock"


def _marker(mirror_key: str) -> Path:
    return root() / f"{mirror_key}.fetching"


def serves(job: CloneJob) -> bool:
    """Whether `job` is built from its repository's mirror. Histories that need every object
    (full, bundle, mirror) always are, a cold repository getting its mirror first; so are a
    watch's snapshots, which come back. A files or shallow job only uses a mirror that is
    already there: made for it, a mirror would fetch the whole history for a depth-1 request."""
    if job.history in (History.FULL, History.BUNDLE, History.MIRROR) or job.watch_id:
        return True
    return Mirror.objects.filter(key=key(job.url), state=MirrorState.READY).exists()


@dataclass
class Lease:
    """A mirror held by one job: `fresh` if it is an empty directory to clone into. The holder
    sets `fetched` once its fetch is over; otherwise the mirror is discarded at the end."""

    key: str
    path: Path
    fresh: bool
    fetched: bool = False


@contextmanager
def lease(url: str) -> Iterator[Lease]:
    """The mirror of `url`, held for as long as the block runs: the one on disk if it can be
    trusted, or else a fresh empty directory."""
    mirror_key = key(url)
    with paths.lock_file(_lock(mirror_key)):
        if _marker(mirror_key).exists():
            # A worker killed mid-fetch leaves its container running: it must not write on.
            # (Without a marker no container can be: it is written before one starts and
            # removed after it is gone.)
            engine.remove_mirror_containers(mirror_key)
        fresh = not _trusted(mirror_key)
        if fresh:
            _discard(mirror_key)
            _make(mirror_key)
        _marker(mirror_key).touch()
        held = Lease(mirror_key, _directory(mirror_key), fresh)
        try:
            yield held
        finally:
            if held.fetched:
                _marker(mirror_key).unlink()
                _record_use(mirror_key, url, fresh)
            else:
                _discard(mirror_key)
    evict(in_use=mirror_key)


@contextmanager
def reading(url: str) -> Iterator[Lease | None]:
    """The mirror of `url`, held for reading only (nothing is fetched into it) for as long as
    the block runs; None if there is none that can be trusted (left for the next writer to
    make afresh)."""
    mirror_key = key(url)
    with paths.lock_file(_lock(mirror_key)):
        trusted = _trusted(mirror_key)
        yield Lease(mirror_key, _directory(mirror_key), fresh=False) if trusted else None


def _trusted(mirror_key: str) -> bool:
    if not Mirror.objects.filter(key=mirror_key, state=MirrorState.READY).exists():
        return False
    if not _directory(mirror_key).is_dir():
        return False
    if _marker(mirror_key).exists():
        logger.warning("mirror %s: a fetch into it was interrupted; made afresh", mirror_key)
        return False
    try:
        verify(_directory(mirror_key))
    except (Corrupt, OSError) as exc:
        logger.warning("mirror %s is damaged (%s); made afresh", mirror_key, exc)
        return False
    return True


def _make(mirror_key: str) -> None:
    path = _directory(mirror_key)
    path.mkdir(parents=True, mode=0o700)
    owner = engine.container_user()
    if (os.getuid(), os.getgid()) != owner:
        os.chown(path, *owner)  # only root gets here, as for a job directory


def _discard(mirror_key: str) -> None:
    """Take the mirror out of service and off the disk; its counts stay."""
    Mirror.objects.filter(key=mirror_key).update(state=MirrorState.DISCARDED, size_bytes=0)
    paths.remove(_directory(mirror_key))
    _marker(mirror_key).unlink(missing_ok=True)


def _record_use(mirror_key: str, url: str, fresh: bool) -> None:
    now = timezone.now()
    fields = {
        "url": urlpolicy.normalized_url(url),
        "state": MirrorState.READY,
        "size_bytes": paths.usage(_directory(mirror_key))[0],
        "fetched_at": now,
        "last_used_at": now,
        **({"created_at": now} if fresh else {}),
    }
    count = {"misses": F("misses") + 1} if fresh else {"hits": F("hits") + 1}
    # One writer per key (the lock): no one creates the row between these two.
    if not Mirror.objects.filter(key=mirror_key).update(**fields, **count):
        Mirror.objects.create(key=mirror_key, misses=1, **fields)


def evict(in_use: str = "") -> int:
    """Discard the least recently used mirrors, never one in use, until the cache is within
    CLONES_MIRROR_MAX_BYTES; how many were."""
    ready = Mirror.objects.filter(state=MirrorState.READY)
    total = ready.aggregate(total=Sum("size_bytes"))["total"] or 0
    evicted = 0
    for mirror in ready.exclude(key=in_use).order_by("last_used_at"):
        if total <= settings.CLONES_MIRROR_MAX_BYTES:
            break
        try:
            with paths.lock_file(_lock(mirror.key), wait=False):
                _discard(mirror.key)
        except paths.Busy:
            continue  # a job is fetching into it: it is not the least recently used any more
        total -= mirror.size_bytes
        evicted += 1
    return evicted


def reap() -> int:
    """Remove mirror directories without a ready row that no job holds: a dead worker's fresh
    mirror, or one whose discarding failed half-way (the recovery sweep)."""
    if not root().is_dir():
        return 0
    ready = set(Mirror.objects.filter(state=MirrorState.READY).values_list("key", flat=True))
    reaped = 0
    for entry in root().iterdir():
        if not entry.is_dir() or entry.name in ready:
            continue
        try:
            with paths.lock_file(_lock(entry.name), wait=False):
                _discard(entry.name)
        except paths.Busy:
            continue
        reaped += 1
    return reaped


# -- What the container runs in the mirror ------------------------------------------------------


def fetch_commands(
    mirror: Lease, url: str, head: str, then: list[engine.Command] | None = None
) -> list[engine.Command]:
    """Bring the mirror up to the server at `url` (every ref, pruned), run `then` (which still
    sees what a deleted or rewound ref left behind), drop the objects no ref reaches any more,
    point the mirror's HEAD at `head` (the server's default branch, when the ref lookup told
    it), then list its refs into FETCHED: their digest for a mirror archive, its snapshot's
    SWHID, and the sign that the fetch is over.

    Jobs copy the mirror's files (clones.pipeline.cloning): a commit force-pushed away, or a
    branch that should never have been pushed, must leave the mirror with its ref, or it would
    go on into every later archive, anyone's. A fetch that only moved refs forward (the usual
    one) leaves nothing behind, and the mirror is not repacked."""
    head_command = [["-C", MOUNT_POINT, "symbolic-ref", "HEAD", head]] if head else []
    refs_format = "--format=%(objecttype) %(objectname) %(refname)"
    list_refs = ["-C", MOUNT_POINT, "for-each-ref", refs_format]
    if mirror.fresh:  # which sets HEAD as the server's, and holds only what its refs reach
        clone = ["clone", "--mirror", "--progress", "--", url, MOUNT_POINT]
        fetch, forget = [[*FETCH_CONFIG, *clone]], []
    else:
        fetch, forget = _fetch_remembering_tips(url), [_forget_what_no_ref_reaches()]
    return [
        *fetch,
        *(then or []),
        *forget,
        *head_command,
        engine.Step(
            ["-C", MOUNT_POINT, "symbolic-ref", "--quiet", "HEAD"],
            stdout=f"{engine.MOUNT_POINT}/{HEAD}",
            optional=True,  # a HEAD detached names no branch
        ),
        engine.Step(list_refs, stdout=f"{engine.MOUNT_POINT}/{FETCHED}"),
    ]


TIPS = f"{engine.MOUNT_POINT}/{TIPS_BEFORE}"


def _fetch_remembering_tips(url: str) -> list[engine.Command]:
    list_tips = ["-C", MOUNT_POINT, "for-each-ref", "--format=%(objectname)"]
    fetch = ["-C", MOUNT_POINT, "fetch", "--prune", "--progress", "--", url, "+refs/*:refs/*"]
    return [engine.Step(list_tips, stdout=TIPS), [*FETCH_CONFIG, *fetch]]


def _forget_what_no_ref_reaches() -> engine.UnlessQuiet:
    """Repack and prune the mirror if an object the refs reached before the fetch (TIPS) is out
    of their reach now."""
    return engine.UnlessQuiet(
        # What the refs reached before, and none reaches now (a bare repository keeps no
        # reflog, and a mirror has no index: the refs are all that keeps an object).
        # One commit (with its objects) is enough to tell: the list is never held whole.
        ["-C", MOUNT_POINT, "rev-list", "--objects", "--max-count=1", "--stdin", "--not", "--all"],
        stdin=TIPS,
        commands=[
            # Repacks what the refs reach into one pack, leaving the rest out (-a, not -A), and
            # removes the old packs and the loose copies of what it packed.
            ["-C", MOUNT_POINT, "repack", "-a", "-d", "-q"],
            ["-C", MOUNT_POINT, "prune", "--expire=now"],  # loose objects no ref reaches
            # A commit-graph (an automatic gc writes one) still names the pruned commits, and
            # would go into every copy: written again from what the refs reach.
            ["-C", MOUNT_POINT, "commit-graph", "write", "--reachable"],
        ],
    )


def branches(job_dir: Path) -> dict[str, tuple[str, str]]:
    """Every ref of the mirror once fetched: name -> (git object type, object name), and HEAD
    -> ("alias", the ref it names), as the fetch listed them (swhids.snapshot_id's input)."""
    found = _listed_refs(job_dir)
    head = _read_text(job_dir / HEAD).strip()
    if head:
        found["HEAD"] = ("alias", head)
    return found


def mirror_refs(job_dir: Path) -> dict[str, str]:
    """Ref name -> object, as FETCHED lists the mirror's."""
    return {name: target for name, (_kind, target) in _listed_refs(job_dir).items()}


def _listed_refs(job_dir: Path) -> dict[str, tuple[str, str]]:
    """Ref name -> (git object type, object name), as FETCHED lists them."""
    lines = (job_dir / FETCHED).read_bytes().decode("utf-8", "replace").split("\n")
    triples = (line.split(" ", 2) for line in lines if line.count(" ") >= 2)
    return {name: (kind, target) for kind, target, name in triples}


def changes_commands(since: str, commit: str) -> list[engine.Step]:
    """List the commits after `since` up to `commit` (newest first, MAX_CHANGES of them) and
    count them; if `since` is gone from the mirror (force-pushed over, and pruned), neither
    file says anything and the build goes on."""
    span = f"{since}..{commit}"
    log = ["-C", MOUNT_POINT, "log", f"--max-count={MAX_CHANGES}", "--format=%H%x00%s", span]
    count = ["-C", MOUNT_POINT, "rev-list", "--count", span]
    return [
        engine.Step(log, stdout=f"{engine.MOUNT_POINT}/{CHANGES}", optional=True),
        engine.Step(count, stdout=f"{engine.MOUNT_POINT}/{CHANGES_TOTAL}", optional=True),
    ]


def read_changes(job_dir: Path) -> tuple[list[list[str]], int | None]:
    """([sha, subject], ...) newest first and their total, as changes_commands() wrote them;
    ([], None) if they could not be listed. Subjects are the repository's text: kept as text,
    cut at MAX_SUBJECT characters."""
    total = _read_text(job_dir / CHANGES_TOTAL).strip()
    if not total.isdigit():
        return [], None
    changes = []
    for line in _read_text(job_dir / CHANGES).split("\n"):
        sha, _, subject = line.partition("\x00")
        if gitwords.FULL_SHA.fullmatch(sha):
            changes.append([sha, storable(subject)[:MAX_SUBJECT]])
    return changes, int(total)


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "replace") if path.is_file() else ""


# -- Verifying a mirror on disk -----------------------------------------------------------------

LOOSE_NAME = re.compile(r"[0-9a-f]{2}")
OBJECT_TYPES = {b"commit", b"tree", b"blob", b"tag"}


def verify(git_dir: Path) -> None:
    """Raise Corrupt unless every pack ends with its own checksum, every index with its own and
    its pack's, and every loose object is a well-formed object of the name it is filed under:
    what a flipped bit or a torn write on disk would break, found for the cost of reading the
    files once."""
    algorithm = _object_format(git_dir)
    width = hashlib.new(algorithm).digest_size
    for pack in sorted((git_dir / "objects" / "pack").glob("*.pack")):
        pack_sum = _check_trailer(pack, algorithm, width)
        index = pack.with_suffix(".idx")
        if not index.is_file():
            raise Corrupt(f"{pack.name} has no index")
        _check_trailer(index, algorithm, width)
        with index.open("rb") as file:
            file.seek(-2 * width, os.SEEK_END)
            if file.read(width) != pack_sum:
                raise Corrupt(f"{index.name} indexes another pack")
    for directory in (git_dir / "objects").iterdir():
        if LOOSE_NAME.fullmatch(directory.name):
            for path in directory.iterdir():
                _check_loose(path, directory.name + path.name, algorithm)


def _object_format(git_dir: Path) -> str:
    config = (git_dir / "config").read_text(errors="replace")
    return "sha256" if re.search(r"objectformat\s*=\s*sha256", config, re.I) else "sha1"


def _check_trailer(path: Path, algorithm: str, width: int) -> bytes:
    """The checksum `path` ends with, once it is seen to be that of everything before it."""
    size = path.stat().st_size
    if size < width:
        raise Corrupt(f"{path.name} is truncated")
    digest = hashlib.new(algorithm)
    with path.open("rb") as file:
        left = size - width
        while left:
            chunk = file.read(min(READ_CHUNK, left))
            if not chunk:
                raise Corrupt(f"{path.name} is truncated")
            digest.update(chunk)
            left -= len(chunk)
        trailer = file.read(width)
    if digest.digest() != trailer:
        raise Corrupt(f"{path.name} does not match its checksum")
    return trailer


def _check_loose(path: Path, name: str, algorithm: str) -> None:
    if path.name.startswith("tmp_"):
        return  # git's own, half-written: never read as an object
    try:
        data = zlib.decompress(path.read_bytes())
    except zlib.error:
        raise Corrupt(f"loose object {name} does not inflate") from None
    header, nul, body = data.partition(b"\0")
    kind, _, size = header.partition(b" ")
    if not nul or kind not in OBJECT_TYPES or not size.isdigit() or int(size) != len(body):
        raise Corrupt(f"loose object {name} has a bad header")
    if hashlib.new(algorithm, data).hexdigest() != name:
        raise Corrupt(f"loose object {name} does not match its name")
