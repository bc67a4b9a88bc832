import re
from urllib.parse import urlsplit

from django import forms

from . import urlpolicy

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
    token = forms.CharField(
        label="Access token (private repositories only)",
        required=False,
        # Never sent back to the browser, not even when the form has errors.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Used for this one clone, then deleted. It is never stored with the job.",
    )

    def clean_url(self) -> str:
        return urlpolicy.check_url(self.cleaned_data["url"])

    def clean_ref(self) -> str:
        return urlpolicy.check_ref(self.cleaned_data["ref"])

    def clean_token(self) -> str:
        token = self.cleaned_data["token"]
        if token and not TOKEN_CHARS.fullmatch(token):
            raise forms.ValidationError(
                f"An access token is at most {MAX_TOKEN_LENGTH} letters, digits and "
                "punctuation, with no spaces."
            )
        return token

    def clean(self) -> dict:
        cleaned = super().clean()
        url, token = cleaned.get("url"), cleaned.get("token")
        if url and token and urlsplit(url).scheme.lower() not in {"https", "http"}:
            self.add_error("token", "An access token can only be sent over https:// URLs.")
        return cleaned
