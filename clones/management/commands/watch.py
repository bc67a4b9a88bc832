import os

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from clones import watches
from clones.models import Follow, Watch
from clones.web.forms import KEEP_FIELDS, WatchRefused, add_watch

from .clone import add_archive_options, owner_named

# The options of `add` that are the web form's fields, checked by the form as they are there.
FORM_OPTIONS = (
    "follow", "history", "depth", "paths", "submodules", "lfs", "archive_format",
    "interval_minutes", "cron", *KEEP_FIELDS, "webhook_url",
)  # fmt: skip


class Command(BaseCommand):
    help = "Watch repositories as the web form does: add one, list them, remove one, check one now."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        add = actions.add_parser("add", help="watch a repository")
        add.add_argument("url", help="the repository URL")
        add.add_argument(
            "--follow",
            choices=Follow.values,
            help="default (the default branch; the default), refs (the --ref names) or "
            "everything (every ref: a mirror)",
        )
        add.add_argument(
            "--ref",
            dest="refs",
            action="append",
            default=[],
            help="a branch or tag to follow (repeat it for more); implies --follow refs",
        )
        add_archive_options(add)
        add.add_argument("--interval", dest="interval_minutes", type=int, help="minutes")
        add.add_argument("--cron", default="", help="a cron expression (UTC), instead")
        for name in KEEP_FIELDS:
            add.add_argument(f"--{name.replace('_', '-')}", type=int, help="retention")
        add.add_argument(
            "--token-from-env",
            metavar="VARIABLE",
            help="read the access token to store (encrypted) from this environment variable: "
            "a command line is seen by every user of the machine",
        )
        add.add_argument("--webhook-url", default="")
        add.add_argument("--user", help="owner (default: the only superuser, if there is one)")
        listing = actions.add_parser("list", help="list the watches")
        listing.add_argument("--user", help="only this user's")
        remove = actions.add_parser("remove", help="delete a watch (its snapshots expire)")
        remove.add_argument("watch_id")
        check = actions.add_parser("check", help="make a watch due now")
        check.add_argument("watch_id")

    def handle(self, *args, action, **options):
        getattr(self, f"handle_{action}")(**options)

    def handle_add(self, url, user, refs, token_from_env, **options):
        data = {name: options[name] for name in FORM_OPTIONS if options[name] is not None}
        if refs:
            data.setdefault("follow", Follow.REFS)
            data["refs"] = "\n".join(refs)
        data["token"] = self._token(token_from_env)
        try:
            watch = add_watch(owner_named(user, "the watch"), {"url": url, **data})
        except WatchRefused as refused:
            reasons = refused.fields or {"__all__": [refused.message]}
            lines = [f"{field}: {error}" for field, errs in reasons.items() for error in errs]
            raise CommandError("\n".join(lines)) from None
        self.stdout.write(f"watching {watch.id} {watch.url}; first check {watch.next_check_at:%c}")

    def _token(self, variable: str | None) -> str:
        if not variable:
            return ""
        token = os.environ.get(variable, "")
        if not token:
            raise CommandError(f"The environment variable {variable} is empty or not set.")
        return token

    def handle_list(self, user, **_):
        rows = Watch.objects.order_by("owner__username", "url", "id").select_related("owner")
        if user:
            rows = rows.filter(owner=owner_named(user))
        for watch in rows:
            self.stdout.write(
                f"{watch.id} {watch.owner.get_username()} {watch.url} ({_state(watch)})"
            )

    def handle_remove(self, watch_id, **_):
        watches.delete(self._watch(watch_id))
        self.stdout.write(f"deleted {watch_id}")

    def handle_check(self, watch_id, **_):
        watch = self._watch(watch_id)
        if not watch.active:
            raise CommandError(f"Watch {watch_id} is paused; it is not checked.")
        watches.check_now(watch)
        self.stdout.write(f"due now {watch_id}")

    def _watch(self, watch_id: str) -> Watch:
        try:
            return Watch.objects.get(pk=watch_id)
        except (Watch.DoesNotExist, ValidationError):  # none, or not even an id
            raise CommandError(f"There is no watch {watch_id!r}.") from None


def _state(watch: Watch) -> str:
    last = watch.get_last_result_display() if watch.last_result else "not checked yet"
    if watch.failures:
        last += f", failed {watch.failures} in a row: {watch.last_error}"
    state = "active" if watch.active else "paused"
    return (
        f"{watch.get_follow_display().lower()}; {state}; last: {last}; "
        f"next: {watch.next_check_at:%Y-%m-%d %H:%M}"
    )
