from django import forms

from . import urlpolicy


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

    def clean_url(self) -> str:
        return urlpolicy.check_url(self.cleaned_data["url"])

    def clean_ref(self) -> str:
        return urlpolicy.check_ref(self.cleaned_data["ref"])
