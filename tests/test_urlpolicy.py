import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from clones.urlpolicy import check_ref, check_url


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/owner/repo.git",
        "http://127.0.0.1:8080/repo",
        "git://127.0.0.1/repo.git",
        "  https://127.0.0.1/padded.git  ",
    ],
)
def test_it_accepts_allowed_schemes(url):
    assert check_url(url) == url.strip()


@pytest.mark.parametrize(
    ("url", "suggestion"),
    [
        ("git@github.com:pallets/flask.git", "https://github.com/pallets/flask.git"),
        ("ssh://git@github.com/pallets/flask.git", "https://github.com/pallets/flask.git"),
        ("github.com:pallets/flask", "https://github.com/pallets/flask"),
    ],
)
def test_ssh_urls_are_refused_with_the_https_form(url, suggestion):
    with pytest.raises(ValidationError) as refused:
        check_url(url)
    assert refused.value.messages[0].endswith(f"Try {suggestion}")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://127.0.0.1/" + "a" * 2048, "The URL is longer than 2048 characters."),
        ("https://127.0.0.1/a\nb", "The URL contains spaces or control characters."),
        ("https://127.0.0.1:99999/a.git", "The URL's port is not a number between 0 and 65535."),
        ("FILE:///etc/passwd", "Local paths and file:// URLs are not accepted"),
        ("~/repo", "Local paths and file:// URLs are not accepted"),
        ("fd::17", "Remote-helper URLs (transport::address) are not accepted."),
        ("https://:pw@127.0.0.1/a.git", "Remove the user name or password from the URL"),
        ("https://[::1/a.git", "The URL's host name is not valid."),
        ("https://[not-an-ip]/a.git", "The URL's host name is not valid."),
    ],
)
def test_it_refuses_with_a_reason(url, message):
    with pytest.raises(ValidationError) as refused:
        check_url(url)
    assert refused.value.messages[0].startswith(message)


@override_settings(CLONES_ALLOW_PRIVATE_NETWORKS=False)
@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "10.1.2.3", "169.254.169.254"])
def test_private_addresses_are_refused_by_default(host):
    with pytest.raises(ValidationError, match="a private or reserved address"):
        check_url(f"https://{host}/repo.git")


@pytest.mark.parametrize("ref", ["", "main", "release/2.x", "v1.0.0", "a" * 40, "b" * 64])
def test_it_accepts_branch_tag_and_commit_names(ref):
    assert check_ref(ref) == ref


def test_a_commit_sha_is_taken_in_lower_case():
    assert check_ref("ABCDEF" + "0" * 34) == "abcdef" + "0" * 34


@pytest.mark.parametrize(
    "ref", ["a..b", "topic.lock", "with:colon", "star*", "ends/", "/starts", "x@{1}", "@", "a//b"]
)
def test_it_refuses_what_git_would_not_take_as_a_ref(ref):
    with pytest.raises(ValidationError, match="is not a valid branch or tag name"):
        check_ref(ref)
