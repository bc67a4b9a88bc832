import re
from urllib.parse import urlsplit

from django import forms
from django.forms.utils import ErrorDict

from .. import jobs
from ..models import ArchiveFormat, History
from ..notify import webhooks
from ..safety import urlpolicy

MAX_DEPTH = 1_000_000
# What a person picks; a bundle is its own format.
FORMATS = ArchiveFormat.choices  # a bundle: for the bundle and mirror histories only

# The fields whose checks may resolve a host name: a submission refused for one of them counts
# towards CLONES_MAX_REFUSED_PER_HOUR (jobs.check_refusals).
RESOLVED_FIELDS = {"url", "webhook_url"}

MAX_TOKEN_LENGTH = 1024
TOKEN_CHARS = re.compile(rf"[\x21-\x7e]{{1,{MAX_TOKEN_LENGTH}}}")  # printable ASCII, no space


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
        return valid

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

    def clean(self) -> dict:
        cleaned = super().clean()
        self._settle_options(cleaned)
        self._check_mirror(cleaned)
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
