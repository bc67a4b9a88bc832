"""SSH URLs when CLONES_ALLOWED_SCHEMES holds ssh: ssh:// and scp-like, a checked user, port 22
unless CLONES_ALLOWED_PORTS says otherwise, and pinned to the checked address. DNS is stubbed."""

from ipaddress import ip_address

import pytest
from django.core.exceptions import ValidationError

from clones.safety.urlpolicy import check_url, normalized_url, origin_url, pin, ssh_uri

PUBLIC_V4 = "8.8.8.8"
PUBLIC_V6 = "2606:4700::1111"


@pytest.fixture(autouse=True)
def ssh_allowed(production_policy, dns):
    production_policy.CLONES_ALLOWED_SCHEMES = ["https", "ssh"]
    production_policy.CLONES_ALLOWED_PORTS = {"https": {443}}  # ssh: its default, 22, only
    dns.update({"github.com": [PUBLIC_V4], "v6.example": [PUBLIC_V6], "lan.example": ["10.0.0.5"]})
    return production_policy


def refusal(url: str) -> str:
    with pytest.raises(ValidationError) as refused:
        check_url(url)
    return refused.value.messages[0]


@pytest.mark.parametrize(
    "url",
    [
        "ssh://git@github.com/pallets/flask.git",
        "ssh://git@github.com:22/pallets/flask.git",
        "git@github.com:pallets/flask.git",
        "deploy.bot-1@github.com:/srv/git/flask.git",
        f"ssh://git@[{PUBLIC_V6}]/r.git",
    ],
)
def test_ssh_urls_are_kept_as_written(url):
    assert check_url(f"  {url} ") == url


def test_an_ssh_url_is_pinned_to_the_checked_address():
    pinned = pin("ssh://git@github.com/pallets/flask.git")
    assert pinned.url == f"ssh://git@{PUBLIC_V4}/pallets/flask.git"
    assert (pinned.scheme, pinned.host, pinned.port, pinned.user) == (
        "ssh",
        "github.com",
        22,
        "git",
    )
    assert pinned.addresses == (ip_address(PUBLIC_V4),)
    assert pinned.curl_resolve is None


def test_a_scp_like_url_keeps_its_form_when_pinned():
    """Its path is relative to the user's home, where an ssh:// path is absolute."""
    pinned = pin("git@github.com:pallets/flask.git")
    assert pinned.url == f"git@{PUBLIC_V4}:pallets/flask.git"
    assert (pinned.host, pinned.port, pinned.user) == ("github.com", 22, "git")


def test_a_url_naming_an_address_is_pinned_with_its_user():
    pinned = pin(f"deploy@{PUBLIC_V4}:r.git")
    assert (pinned.url, pinned.host, pinned.user) == (
        f"deploy@{PUBLIC_V4}:r.git",
        PUBLIC_V4,
        "deploy",
    )


def test_an_ipv6_address_is_bracketed_when_pinned():
    assert pin("ssh://git@v6.example/r.git").url == f"ssh://git@[{PUBLIC_V6}]/r.git"
    assert pin("git@v6.example:r.git").url == f"git@[{PUBLIC_V6}]:r.git"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ssh://git:secret@github.com/r.git", "Remove the password"),
        ("ssh://-oProxyCommand=x@github.com/r.git", "user name of an SSH URL"),
        ("-oProxyCommand=x@github.com:r.git", "cannot start with '-'"),
        ("git%20x@github.com:r.git", "user name of an SSH URL"),
        ("ssh://git@github.com/-u/r.git", "path cannot start with '-'"),
        ("git@github.com:-u/r.git", "path cannot start with '-'"),
        ("git@github.com:", "no repository path"),
        ("ssh://git@github.com/", "no repository path"),
        ("ssh://git@github.com:2222/r.git", "Port 2222 is not accepted for ssh:// URLs; use 22."),
        ("git+ssh://git@github.com/r.git", "Write the URL with ssh://"),
        ("git@lan.example:r.git", "a private or reserved address"),
        ("ssh://git@127.0.0.1/r.git", "a private or reserved address"),
        ("git@localhost:r.git", "local host name"),
        ("git@bücher.example:r.git", "in ASCII, or use ssh://"),
        ("git@nowhere.example:r.git", "could not be found"),
        # Without a user, the worker's lookup and the container's clone would log in as others.
        ("ssh://github.com/pallets/flask.git", "Give the user to log in as"),
        ("github.com:pallets/flask.git", "Give the user to log in as"),
        # git sends these as they are (and decodes %): another repository than the one checked.
        ("ssh://git@github.com/r.git#x", "cannot contain '?', '#' or '%'"),
        ("ssh://git@github.com/r.git?", "cannot contain '?', '#' or '%'"),
        ("git@github.com:r%2egit", "cannot contain '?', '#' or '%'"),
        ("git@github.com:r.git#x", "cannot contain '?', '#' or '%'"),
    ],
)
def test_bad_ssh_urls_are_refused(url, message):
    assert message in refusal(url)


def test_another_port_when_the_setting_allows_it(ssh_allowed):
    ssh_allowed.CLONES_ALLOWED_PORTS = {"https": {443}, "ssh": {22, 2222}}
    assert pin("ssh://git@github.com:2222/r.git").url == f"ssh://git@{PUBLIC_V4}:2222/r.git"


def test_ssh_urls_are_refused_as_before_when_ssh_is_not_allowed(ssh_allowed):
    ssh_allowed.CLONES_ALLOWED_SCHEMES = ["https"]
    for url in ["ssh://git@github.com/r.git", "git@github.com:r.git"]:
        assert refusal(url).startswith("SSH URLs need keys we don't hold;")


@pytest.mark.parametrize(
    ("url", "uri"),
    [
        ("git@github.com:team/app.git", "ssh://git@github.com/~/team/app.git"),
        ("git@github.com:/srv/app.git", "ssh://git@github.com/srv/app.git"),
        ("git@github.com:~alice/app.git", "ssh://git@github.com/~alice/app.git"),
        ("ssh://git@github.com/team/app.git", "ssh://git@github.com/team/app.git"),
        ("https://github.com/team/app.git", "https://github.com/team/app.git"),
    ],
)
def test_an_ssh_url_as_a_uri_for_provenance(url, uri):
    assert ssh_uri(url) == uri


def test_one_spelling_of_an_ssh_url_keeps_its_login_and_lowers_its_host():
    assert origin_url("git@GitHub.com:Team/App.git/") == "git@github.com:Team/App.git"
    assert origin_url("ssh://git@GitHub.com:22/Team/App.git") == "ssh://git@github.com/Team/App.git"
    assert normalized_url("git@GitHub.com:Team/App.git") == normalized_url(
        "git@github.com:Team/App"
    )
