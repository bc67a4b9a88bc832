"""Repository paths a job is limited to: one spelling, or a message naming the line."""

import pytest
from django.core.exceptions import ValidationError

from clones.safety import repopaths
from clones.web.forms import CloneRequestForm


def test_paths_get_one_spelling_each_once_in_byte_order():
    lines = ["./docs/", "", "src//app/./main.py", "  docs  ", "/Z", "we*ird [1].txt"]
    assert repopaths.check(lines) == ["Z", "docs", "src/app/main.py", "we*ird [1].txt"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("../etc/passwd", "Line 2: '../etc/passwd' goes up out of the repository ('..')."),
        ("docs/../../x", "Line 2: 'docs/../../x' goes up out of the repository ('..')."),
        ("./", "Line 2: './' is the whole repository: leave the paths empty to archive all of it."),
        (".git/config", "Line 2: '.git/config' is inside .git, which is not part of any commit."),
        (
            "sub/.GIT/hooks",
            "Line 2: 'sub/.GIT/hooks' is inside .git, which is not part of any commit.",
        ),
        ("a\tb", "Line 2: 'a\\tb' has a control character, which no path here has."),
        ("a\u2028b", "Line 2: 'a\\u2028b' has a control character, which no path here has."),
        ("x" * 4097, "Line 2: A path is at most 4096 characters."),
    ],
)
def test_a_path_outside_the_repositorys_files_is_refused_naming_its_line(line, message):
    with pytest.raises(ValidationError) as refused:
        repopaths.check(["docs", line])
    assert refused.value.messages == [message]


def test_at_most_twenty_paths():
    assert len(repopaths.check([f"p{n}" for n in range(20)])) == 20
    with pytest.raises(ValidationError, match="That is 21 paths; an archive takes at most 20"):
        repopaths.check([f"p{n}" for n in range(21)])


URL = "http://127.0.0.1/owner/repo.git"  # an address: nothing to resolve


@pytest.mark.parametrize(
    "paths",
    ["docs\r\nsrc/main.py\n", ["docs", "src/main.py"]],  # the form's text, the API's list
)
def test_the_form_takes_paths_as_lines_or_a_list(paths):
    form = CloneRequestForm({"url": URL, "history": "files", "paths": paths})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["paths"] == ["docs", "src/main.py"]


@pytest.mark.parametrize("history", ["bundle", "mirror"])
def test_paths_are_refused_for_the_histories_that_hold_the_whole_repository(history):
    form = CloneRequestForm({"url": URL, "history": history, "paths": "docs"})
    assert not form.is_valid()
    assert form.errors["paths"] == [
        f"A {history} holds the whole repository: paths apply to files only, full and shallow "
        "archives."
    ]


def test_the_form_refuses_a_list_of_anything_but_strings():
    form = CloneRequestForm({"url": URL, "paths": ["docs", 3]})
    assert not form.is_valid()
    assert form.errors["paths"] == ["Give the paths as strings."]


def test_paths_given_as_a_list_are_shown_one_a_line():
    form = CloneRequestForm(initial={"url": URL, "paths": ["docs", "src/main.py"]})
    assert ">\ndocs\nsrc/main.py</textarea>" in str(form["paths"])


def test_an_api_path_with_a_line_break_is_refused_not_split():
    form = CloneRequestForm({"url": URL, "history": "files", "paths": ["docs\nsrc"]})
    assert not form.is_valid()
    assert form.errors["paths"] == ["Give each path as a string with no line breaks."]
