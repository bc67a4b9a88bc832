import re
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from urllib.parse import urlsplit

from croniter import CroniterBadDateError, croniter
from django import forms
from django.conf import settings
from django.forms.utils import ErrorDict
from django.utils import timezone

from .. import jobs, watches
from ..models import ArchiveFormat, Follow, History, SSHKey, Watch
from ..notify import webhooks
from ..pipeline import sshaccess
from ..safety import egress, repopaths, urlpolicy

MAX_DEPTH = 1_000_000
# What a person picks; a bundle is its own format.
FORMATS = ArchiveFormat.choices  # a bundle: for the bundle and mirror histories only

# The fields whose checks may resolve a host name: a submission refused for one of them counts
# towards CLONES_MAX_REFUSED_PER_HOUR (jobs.check_refusals).
RESOLVED_FIELDS = {"url", "webhook_url"}

# git-lfs asks an SSH server for an https endpoint (git-lfs-authenticate) and then fetches from
# it with the credential it was given: a second way in that this service does not check.
LFS_OVER_SSH = (
    "Git LFS files are fetched for https:// URLs only: ask for the repository's https:// URL, "
    "with an access token if it is private."
)
MAX_TOKEN_LENGTH = 1024
TOKEN_CHARS = re.compile(rf"[\x21-\x7e]{{1,{MAX_TOKEN_LENGTH}}}")  # printable ASCII, no space


class PathsField(forms.CharField):
    """Repository paths: one a line from the form, or a list of strings from the API; cleaned
    into clones.safety.repopaths' list."""

    widget = forms.Textarea(attrs={"rows": 2, "placeholder": "docs\nsrc/app/main.py"})

    def to_python(self, value) -> str:
        if isinstance(value, list | tuple):
            if not all(isinstance(item, str) for item in value):
                raise forms.ValidationError("Give the paths as strings.")
            if any("\n" in item or "\r" in item for item in value):
                raise forms.ValidationError("Give each path as a string with no line breaks.")
            value = "\n".join(value)
        return super().to_python(value)

    def clean(self, value) -> list[str]:
        # Lines are what a textarea sends: split at line feeds only (splitlines() would also
        # split at characters such as U+2028, which repopaths refuses in a path).
        return repopaths.check(super().clean(value).split("\n"))

    def prepare_value(self, value):
        # A list (a job's paths, to clone again) is shown as the lines it was typed as.
        return "\n".join(value) if isinstance(value, list | tuple) else value


class CloneRequestForm(forms.Form):
    # No max_length here: urlpolicy says what is too long, in its own words.
    url = forms.CharField(
        label="Repository URL",
        strip=False,
        error_messages={"required": "Enter the URL of a git repository."},
        widget=forms.TextInput(attrs={"placeholder": "https://github.com/owner/repo.git"}),
    )
    ref = forms.CharField(
        label="Branch, tag or commit",
        required=False,
        strip=False,
        help_text="Leave empty for the default branch. A commit needs its full 40-character SHA.",
    )
    history = forms.ChoiceField(
        label="What to keep",
        choices=History,
        initial=History.FULL,
        required=False,
        widget=forms.RadioSelect,
    )
    depth = forms.IntegerField(
        label="Commits to keep (shallow clone)",
        min_value=1,
        max_value=MAX_DEPTH,
        required=False,
        help_text="For a shallow clone only; 1 keeps just the commit itself.",
    )
    paths = PathsField(
        label="Only these paths (optional, one per line)",
        required=False,
        strip=False,
        help_text="Files and folders of the repository: files only holds just them, a full or "
        "shallow clone checks out just them (the history stays whole). Empty: everything.",
    )
    submodules = forms.BooleanField(
        label="With submodules",
        required=False,
        help_text="The repository's submodules too, recursively, each at the commit the "
        "repository records (files only, full and shallow).",
    )
    lfs = forms.BooleanField(
        label="With Git LFS files",
        required=False,
        help_text="The files Git LFS keeps, in place of their pointer files (files only, full "
        "and shallow).",
    )
    archive_format = forms.ChoiceField(
        label="Archive format",
        choices=FORMATS,
        initial=ArchiveFormat.TAR,
        required=False,
        help_text="A bundle history is always one git bundle file; a mirror is a tar, tar.gz "
        "or zip of the bare repository, or one bundle of every ref.",
    )
    token = forms.CharField(
        label="Access token (private repositories only)",
        required=False,
        # Never sent back to the browser, not even when the form has errors.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Used for this one clone, then deleted. It is never stored with the job.",
    )
    webhook_url = forms.CharField(
        label="Notify this URL when done (optional)",
        required=False,
        strip=False,  # as `url`: urlpolicy says what is wrong with spaces
        widget=forms.TextInput(attrs={"placeholder": "https://example.com/hooks/clones"}),
        help_text="When the clone ends, a JSON summary is POSTed here, signed with your "
        "webhook secret as Standard Webhooks sign (the webhook-signature header).",
    )

    def is_valid_for(self, owner) -> bool:
        """is_valid, for a person's submission: jobs.Refused, before any field is checked, if too
        many of theirs were refused for their URL lately; a refusal for one now is counted."""
        jobs.check_refusals(owner)
        valid = self.is_valid()
        if not valid and RESOLVED_FIELDS & self.errors.keys():
            jobs.record_refusal(owner)
        return valid and self.has_what_it_needs(owner)

    def has_what_it_needs(self, owner) -> bool:
        """For a valid form: whether `owner` holds what its URL needs (an SSH URL, their SSH
        key); if not, the URL's error says so."""
        url = self.cleaned_data.get("url", "")  # a pasted list has urls, checked line by line
        if urlpolicy.is_ssh(url) and not SSHKey.objects.filter(owner=owner).exists():
            self.add_error("url", sshaccess.NO_KEY)
            return False
        return True

    def refuse(self, message: str) -> None:
        """Refuse the whole submission, saying why. A form not checked yet stays unchecked (its
        checks may resolve host names) and shows what was sent with this error alone."""
        if self._errors is None:
            self.cleaned_data, self._errors = {}, ErrorDict()
        self.add_error(None, message)

    def clean_url(self) -> str:
        return urlpolicy.check_url(self.cleaned_data["url"])

    def clean_ref(self) -> str:
        return urlpolicy.check_ref(self.cleaned_data["ref"])

    def clean_webhook_url(self) -> str:
        url = self.cleaned_data["webhook_url"]
        return webhooks.check_url(url) if url.strip() else ""

    def clean_token(self) -> str:
        token = self.cleaned_data["token"]
        if token and not TOKEN_CHARS.fullmatch(token):
            raise forms.ValidationError(
                f"An access token is at most {MAX_TOKEN_LENGTH} letters, digits and "
                "punctuation, with no spaces."
            )
        return token

    def clean_history(self) -> str:
        return self.cleaned_data["history"] or History.FULL

    def _check_mirror(self, cleaned: dict) -> None:
        if cleaned.get("history") == History.MIRROR and cleaned.get("ref"):
            message = "A mirror holds every branch and tag: leave the branch, tag or commit empty."
            self.add_error("ref", message)

    def _check_paths(self, cleaned: dict) -> None:
        history = cleaned.get("history")
        if cleaned.get("paths") and history in (History.BUNDLE, History.MIRROR):
            self.add_error(
                "paths",
                f"A {history} holds the whole repository: paths apply to files only, full and "
                "shallow archives.",
            )

    def _check_fetched_beyond(self, cleaned: dict) -> None:
        """Submodules and LFS files: what is fetched from beyond the repository's history."""
        for option, what in (("submodules", "submodules"), ("lfs", "Git LFS files")):
            if cleaned.get(option):
                message = self._refusal_of(option, what, cleaned)
                if message:
                    self.add_error(option, message)

    def _refusal_of(self, option: str, what: str, cleaned: dict) -> str:
        if option == "lfs" and urlpolicy.is_ssh(cleaned.get("url") or ""):
            return LFS_OVER_SSH
        history = cleaned.get("history")
        if history in (History.BUNDLE, History.MIRROR):
            return (
                f"A {history} holds the repository's own history only: {what} apply to files "
                "only, full and shallow archives."
            )
        if cleaned.get("paths"):
            return f"Paths and {what} cannot be combined yet."
        if not egress.available():
            return f"This service cannot fetch {what}: its egress proxy is turned off."
        return ""

    def clean(self) -> dict:
        cleaned = super().clean()
        self._settle_options(cleaned)
        self._check_mirror(cleaned)
        self._check_paths(cleaned)
        self._check_fetched_beyond(cleaned)
        url, token = cleaned.get("url"), cleaned.get("token")
        if url and token and urlsplit(url).scheme.lower() not in {"https", "http"}:
            self.add_error("token", "An access token can only be sent over https:// URLs.")
        return cleaned

    def _settle_options(self, cleaned: dict) -> None:
        """Fill in what the history choice implies: a depth only for a shallow clone (1 if none
        was given), and a bundle's own format."""
        history = cleaned.get("history", History.FULL)
        depth = cleaned.get("depth")
        if depth and history != History.SHALLOW:
            self.add_error("depth", "A number of commits only applies to a shallow clone.")
        cleaned["depth"] = (depth or 1) if history == History.SHALLOW else None
        archive_format = cleaned.get("archive_format") or ArchiveFormat.TAR
        if history == History.BUNDLE:
            cleaned["archive_format"] = ArchiveFormat.BUNDLE
        elif archive_format == ArchiveFormat.BUNDLE and history != History.MIRROR:
            self.add_error(
                "archive_format", "A bundle is made of the bundle and mirror histories only."
            )
        else:
            cleaned["archive_format"] = archive_format


# --- Watches -------------------------------------------------------------------------------------

MAX_KEEP = 10_000
MAX_INTERVAL_MINUTES = 366 * 24 * 60
# Runs of a cron expression looked at for its shortest gap: a day of runs every 5 minutes, more
# than any expression whose runs are close together only at some hour needs.
CRON_RUNS_CHECKED = 300
COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # as urlpolicy.check_ref returns one
# Lines of one paste: more is a script's work, for the API.
MAX_PASTED_URLS = 200
MAX_FOLLOWED_REFS = 50
KEEP_FIELDS = [
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
]


def _keep_field(label: str, model_field: str) -> forms.IntegerField:
    return forms.IntegerField(
        label=label,
        min_value=0,
        max_value=MAX_KEEP,
        required=False,
        initial=_default(model_field),
    )


def _default(name: str):
    """A Watch field's default: what an option left empty means."""
    return Watch._meta.get_field(name).default


class WatchForm(CloneRequestForm):
    """A watch of one repository: the clone form's URL and archive options (and their checks),
    what to follow, when to check, what to keep. Its token is the watch's credential, stored
    encrypted (clones.safety.vault) and never shown again."""

    ref = None  # what a watch follows says which refs
    follow = forms.ChoiceField(
        label="What to follow",
        choices=Follow,
        initial=Follow.DEFAULT,
        required=False,
        widget=forms.RadioSelect,
        help_text="Every ref makes each snapshot a mirror (every branch, tag and other ref).",
    )
    refs = forms.CharField(
        label="Branches and tags to follow (one per line)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="For 'Named branches and tags' only.",
    )
    interval_minutes = forms.IntegerField(
        label="Check every (minutes)",
        min_value=1,
        max_value=MAX_INTERVAL_MINUTES,
        required=False,
        initial=_default("interval_minutes"),
    )
    cron = forms.CharField(
        label="Or check when this cron expression says (UTC)",
        required=False,
        max_length=100,
        widget=forms.TextInput(attrs={"placeholder": "0 3 * * *"}),
        help_text="Five fields: minute, hour, day of month, month, day of week. "
        "It replaces the interval.",
    )
    keep_last = _keep_field("Keep the last", "keep_last")
    keep_hourly = _keep_field("Keep hourly", "keep_hourly")
    keep_daily = _keep_field("Keep daily", "keep_daily")
    keep_weekly = _keep_field("Keep weekly", "keep_weekly")
    keep_monthly = _keep_field("Keep monthly", "keep_monthly")
    keep_yearly = _keep_field("Keep yearly", "keep_yearly")
    token = forms.CharField(
        label="Access token (private repositories only)",
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Stored encrypted, used for this watch's checks and snapshots only, deleted "
        "with the watch. It is never shown again.",
    )
    webhook_url = forms.CharField(
        label="Notify this URL of new snapshots and failures (optional)",
        required=False,
        strip=False,
        widget=forms.TextInput(attrs={"placeholder": "https://example.com/hooks/clones"}),
        help_text="Signed with your webhook secret, as a clone's webhook is.",
    )

    field_order = [
        "url", "follow", "refs", "history", "depth", "paths", "submodules",
        "lfs", "archive_format", "interval_minutes", "cron", *KEEP_FIELDS, "token", "webhook_url",
    ]  # fmt: skip

    def clean_follow(self) -> str:
        return self.cleaned_data["follow"] or Follow.DEFAULT

    def clean_refs(self) -> str:
        names = []
        for number, line in enumerate(self.cleaned_data["refs"].splitlines(), start=1):
            try:
                name = urlpolicy.check_ref(line)
            except forms.ValidationError as error:
                raise forms.ValidationError(f"Line {number}: {error.messages[0]}") from None
            if COMMIT.fullmatch(name):
                raise forms.ValidationError(
                    f"Line {number}: {name} is a commit, which never changes; follow a branch "
                    "or a tag."
                )
            if name:
                names.append(name)
        if len(names) > MAX_FOLLOWED_REFS:
            raise forms.ValidationError(
                f"That is {len(names)} branches and tags; a watch follows at most "
                f"{MAX_FOLLOWED_REFS} (each one that moves is a snapshot). To keep them all, "
                "follow every ref: one mirror snapshot holds them."
            )
        return "\n".join(names)

    def clean_interval_minutes(self) -> int:
        minutes = self.cleaned_data["interval_minutes"]
        if minutes is None:
            return _default("interval_minutes")
        if minutes < settings.CLONES_WATCH_MIN_INTERVAL_MINUTES:
            raise forms.ValidationError(_too_often(minutes))
        return minutes

    def clean_cron(self) -> str:
        expression = " ".join(self.cleaned_data["cron"].split())
        if not expression:
            return ""
        if len(expression.split()) != 5 or not croniter.is_valid(expression):
            raise forms.ValidationError(
                f"'{expression}' is not a cron expression of five fields (minute, hour, day of "
                "month, month, day of week), such as '0 3 * * *'."
            )
        try:
            shortest = _shortest_gap_minutes(expression)
        except CroniterBadDateError:  # valid fields, but a date no month has: "0 0 31 2 *"
            raise forms.ValidationError(
                f"'{expression}' names no date that exists, so it would never check; "
                "give another day or month."
            ) from None
        if shortest < settings.CLONES_WATCH_MIN_INTERVAL_MINUTES:
            raise forms.ValidationError(_too_often(shortest))
        return expression

    def clean(self) -> dict:
        cleaned = self.cleaned_data
        follow = cleaned.get("follow")
        if follow == Follow.EVERYTHING:
            cleaned["history"] = History.MIRROR
        if follow == Follow.REFS and "refs" in cleaned and not cleaned["refs"]:
            self.add_error("refs", "Name at least one branch or tag to follow.")
        elif follow != Follow.REFS:
            cleaned["refs"] = ""
        for name in KEEP_FIELDS:
            if cleaned.get(name) is None and name not in self.errors:
                cleaned[name] = _default(name)
        return super().clean()

    @property
    def retention_fields(self) -> list[forms.BoundField]:
        """The keep_* fields, which the page groups under one heading."""
        return [self[name] for name in KEEP_FIELDS]

    def watch_options(self) -> dict:
        """What clones.watches.create takes, from the cleaned data: the token is the watch's
        credential."""
        options = dict(self.cleaned_data)
        options["credential"] = options.pop("token")
        return options


def _too_often(minutes: int) -> str:
    least = settings.CLONES_WATCH_MIN_INTERVAL_MINUTES
    return (
        f"That checks every {minutes} minute(s); this site checks a repository at most every "
        f"{least} minutes. Enter {least} or more."
    )


def _shortest_gap_minutes(expression: str) -> int:
    runs = croniter(expression, timezone.now())
    times = [runs.get_next(datetime) for _ in range(CRON_RUNS_CHECKED)]
    return min(int((later - earlier).total_seconds() // 60) for earlier, later in pairwise(times))


class WatchRefused(Exception):
    """A watch not made: `code` says why for programs (invalid, limit_reached), the message
    for people; `fields` each field's messages, for invalid input."""

    def __init__(self, code: str, message: str, fields: dict | None = None, retry_after=None):
        super().__init__(message)
        self.code, self.message, self.fields, self.retry_after = code, message, fields, retry_after


def add_watch(owner, data: dict) -> Watch:
    """A watch made from a person's input (a form's, an API request's, a pasted line's), checked
    by WatchForm as the clone form checks a clone; WatchRefused if it is not."""
    form = WatchForm(data)
    try:
        if not form.is_valid_for(owner):
            fields = form_errors(form)
            raise WatchRefused("invalid", next(iter(fields.values()))[0], fields)
        return watches.create(owner, **form.watch_options())
    except jobs.Refused as refused:
        raise WatchRefused("limit_reached", str(refused), retry_after=refused.retry_after) from None
    except watches.Refused as refused:
        raise WatchRefused("limit_reached", str(refused)) from None


def form_errors(form: forms.Form) -> dict[str, list[str]]:
    return {name: [str(message) for message in errors] for name, errors in form.errors.items()}


class PastedWatchesForm(WatchForm):
    """Watches of many repositories at once, with the same options: one URL a line, each
    accepted or refused on its own (add_watch)."""

    url = None
    urls = forms.CharField(
        label="Repository URLs (one per line)",
        strip=False,
        error_messages={"required": "Enter the URL of a git repository, or several, one a line."},
        widget=forms.Textarea(
            attrs={"rows": 4, "placeholder": "https://github.com/owner/repo.git"}
        ),
        help_text=f"One repository, or up to {MAX_PASTED_URLS}, one per line; each is checked "
        "on its own and watched with the options below.",
    )
    field_order = ["urls", *WatchForm.field_order[1:]]

    def clean_urls(self) -> list[tuple[int, str]]:
        lines = [
            (number, line.strip())
            for number, line in enumerate(self.cleaned_data["urls"].splitlines(), start=1)
            if line.strip()
        ]
        if not lines:
            raise forms.ValidationError(self.fields["urls"].error_messages["required"])
        if len(lines) > MAX_PASTED_URLS:
            raise forms.ValidationError(
                f"That is {len(lines)} URLs; paste at most {MAX_PASTED_URLS} at once "
                "(the API takes a list of any length)."
            )
        return lines

    def add_all(self, owner) -> "list[PastedLine]":
        """One watch per line of a valid form, or the line's refusal. Each line's URL is checked
        as a clone's is, and a refused one counts towards jobs.check_refusals: past its limit,
        the remaining lines are refused unchecked."""
        options = {name: value for name, value in self.data.items() if name in self.fields}
        options.pop("urls")
        results = []
        for number, url in self.cleaned_data["urls"]:
            try:
                results.append(
                    PastedLine(number, url, watch=add_watch(owner, {**options, "url": url}))
                )
            except WatchRefused as refused:
                results.append(PastedLine(number, url, reason=refused.message))
        return results


@dataclass
class PastedLine:
    number: int
    url: str
    watch: Watch | None = None
    reason: str = ""
