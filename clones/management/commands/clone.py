import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from clones import jobs
from clones.models import ArchiveFormat, CloneJob, History, Status
from clones.web.forms import FORMATS, CloneRequestForm

WAIT_POLL_SECONDS = 1.0
# The command's options that are the web form's fields, checked by the form as they are there.
FORM_OPTIONS = (
    "ref", "history", "depth", "paths", "submodules", "lfs", "archive_format", "webhook_url"
)  # fmt: skip


def add_archive_options(parser) -> None:
    """The archive's options, as the web form has them (a watch's `add` takes them too)."""
    parser.add_argument(
        "--history",
        choices=History.values,
        default=History.FULL,
        help="full (default), files (no .git), shallow, bundle or mirror",
    )
    parser.add_argument("--depth", type=int, help="commits to keep, for --history shallow")
    parser.add_argument(
        "--path",
        dest="paths",
        action="append",
        default=[],
        help="only this file or folder of the repository (repeat it for more)",
    )
    parser.add_argument(
        "--submodules",
        action="store_true",
        help="with the repository's submodules, recursively",
    )
    parser.add_argument(
        "--lfs",
        action="store_true",
        help="with the files Git LFS keeps, in place of their pointers",
    )
    parser.add_argument(
        "--format",
        dest="archive_format",
        choices=[value for value, _label in FORMATS],
        default=ArchiveFormat.TAR,
        help="tar (default), tar.gz or zip; a bundle is its own format",
    )


class Command(BaseCommand):
    help = "Queue a clone of a git repository, as the web form does; --wait to see it through."

    def add_arguments(self, parser):
        parser.add_argument("url", help="the repository URL")
        parser.add_argument("--ref", default="", help="branch, tag or full commit SHA")
        add_archive_options(parser)
        parser.add_argument(
            "--webhook-url", default="", help="told by a signed POST when the job ends"
        )
        parser.add_argument(
            "--user", help="owner of the job (default: the only superuser, if there is one)"
        )
        parser.add_argument(
            "--wait", action="store_true", help="wait for the job to finish and report it"
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=settings.CLONES_TASK_TIMEOUT + 60,
            help="with --wait: give up after this many seconds (default: %(default)s)",
        )

    def handle(self, *args, url, user, wait, timeout, **options):
        form = CloneRequestForm(
            {
                "url": url,
                **{name: options[name] for name in FORM_OPTIONS},
            }
        )
        owner = owner_named(user)
        if not (form.is_valid() and form.has_what_it_needs(owner)):
            reasons = [f"{field}: {error}" for field, errs in form.errors.items() for error in errs]
            raise CommandError("\n".join(reasons))
        try:
            job = jobs.submit(owner, **form.cleaned_data)
        except jobs.Refused as refused:
            raise CommandError(str(refused)) from None
        self.stdout.write(f"queued {job.id}")
        if wait:
            self.report(self.wait_for(job, timeout))

    def wait_for(self, job: CloneJob, timeout: float) -> CloneJob:
        deadline = time.monotonic() + timeout
        while job.is_active:
            if time.monotonic() > deadline:
                raise CommandError(
                    f"Job {job.id} is still {job.status} after {timeout:g} s; is a worker "
                    "(manage.py worker) running?"
                )
            time.sleep(WAIT_POLL_SECONDS)
            job.refresh_from_db()
        return job

    def report(self, job: CloneJob) -> None:
        self.stdout.write(f"status {job.status}")
        if job.status != Status.DONE:
            raise CommandError(job.error or f"The job ended {job.status}.")
        self.stdout.write(f"commit {job.commit}")
        self.stdout.write(f"sha256 {job.archive_sha256}")
        self.stdout.write(f"archive {archive_location(job)}")


def owner_named(username: str | None, of: str = "the job"):
    """The user named, or else the only superuser (the commands' --user): the owner `of`."""
    users = get_user_model().objects
    if username:
        try:
            return users.get(username=username)
        except users.model.DoesNotExist:
            raise CommandError(f"There is no user named {username!r}.") from None
    superusers = list(users.filter(is_superuser=True)[:2])
    if len(superusers) != 1:
        raise CommandError(f"Say who owns {of} with --user NAME.")
    return superusers[0]


def archive_location(job: CloneJob) -> str:
    try:
        return job.archive.path
    except NotImplementedError:  # in a bucket: its name there
        return f"s3://{settings.CLONES_S3_BUCKET}/{job.archive.name}"
