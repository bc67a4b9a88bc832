"""A person's history of clones, narrowed by the filters on the history page: status,
repository and a search."""

from django import forms
from django.db.models import Max, Q

from ..models import CloneJobQuerySet, Status

# The repository filter lists the person's most recently used repositories, not all of them:
# a select of thousands helps nobody (the search box finds the rest).
REPOSITORY_CHOICES = 50


class HistoryFilter(forms.Form):
    status = forms.ChoiceField(label="Status", required=False)
    # Any URL is accepted, not only the listed ones: a link may name an older repository.
    repository = forms.CharField(label="Repository", required=False, widget=forms.Select)
    q = forms.CharField(
        label="Search",
        required=False,
        max_length=200,
        widget=forms.TextInput(
            attrs={"type": "search", "placeholder": "URL, branch, tag, commit or error"}
        ),
    )

    def __init__(self, jobs: CloneJobQuerySet, data=None):
        super().__init__(data)
        self.fields["status"].choices = [("", "Any status"), *Status.choices]
        urls = recent_repositories(jobs)
        chosen = self.data.get("repository") if data else None
        if chosen and chosen not in urls:
            urls.append(chosen)
        self.fields["repository"].widget.choices = [
            ("", "Any repository"),
            *((url, url) for url in urls),
        ]

    @property
    def is_filtering(self) -> bool:
        return self.is_valid() and any(self.cleaned_data.values())

    def apply(self, jobs: CloneJobQuerySet) -> CloneJobQuerySet:
        """The jobs that pass the filters; all of them when the filters are invalid (an unknown
        status in a hand-made link), the form then saying what was wrong."""
        if not self.is_valid():
            return jobs
        if status := self.cleaned_data["status"]:
            jobs = jobs.filter(status=status)
        if repository := self.cleaned_data["repository"]:
            jobs = jobs.filter(url=repository)
        if text := self.cleaned_data["q"].strip():
            jobs = jobs.filter(matching(text))
        return jobs


def recent_repositories(jobs: CloneJobQuerySet) -> list[str]:
    latest = jobs.order_by().values("url").annotate(last=Max("created_at"))
    return [row["url"] for row in latest.order_by("-last")[:REPOSITORY_CHOICES]]


def matching(text: str) -> Q:
    return (
        Q(url__icontains=text)
        | Q(ref__icontains=text)
        | Q(commit__istartswith=text)
        | Q(error__icontains=text)
    )
