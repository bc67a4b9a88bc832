"""URL and ref checks. DNS is always stubbed: nothing here resolves a real name or connects."""

import itertools
import socket
from ipaddress import ip_address

import pytest
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.urls import reverse

from clones.models import CloneJob
from clones.safety import urlpolicy
from clones.safety.urlpolicy import PinnedURL, check_ref, check_url, pin
from clones.web.forms import CloneRequestForm

# Public by our rules, used as data only: resolution is stubbed, nothing is ever connected to.
PUBLIC_V4 = "8.8.8.8"
PUBLIC_V6 = "2606:4700::1111"
PRIVATE = "a private or reserved address; only public git servers can be cloned."
RESOLVE = urlpolicy.resolve  # the real one; the dns fixture stubs it in every test


@pytest.fixture(autouse=True)
def dns(monkeypatch):
    """The stubbed resolver's answers, name -> addresses; a name not listed is not found."""
    answers = {
        "github.com": [PUBLIC_V4],
        "xn--bcher-kva.example": [PUBLIC_V4],
        "dual.example": [PUBLIC_V4, PUBLIC_V6],
        "internal.example": ["10.0.0.5"],
        "mixed.example": [PUBLIC_V4, "192.168.0.10"],
        "mixed6.example": [PUBLIC_V6, "fd00::1"],
        "git.corp.example": ["10.0.0.5"],
        "docs.example": ["192.0.2.7"],
    }
    monkeypatch.setattr(
        urlpolicy, "resolve", lambda host, port: [ip_address(a) for a in answers.get(host, [])]
    )
    return answers


@pytest.fixture
def production(settings):
    """The defaults of project/settings.py, which tests/settings.py relaxes for the git servers."""
    settings.CLONES_ALLOWED_SCHEMES = ["https", "http", "git"]
    settings.CLONES_ALLOW_PRIVATE_NETWORKS = False
    settings.CLONES_ALLOWED_PRIVATE_HOSTS = []
    settings.CLONES_ALLOWED_PORTS = {"https": {443}, "http": {80}, "git": {9418}}
    return settings


def refusal(url: str) -> str:
    with pytest.raises(ValidationError) as refused:
        check_url(url)
    assert len(refused.value.messages) == 1
    return refused.value.messages[0]


SSH = "SSH URLs need keys we don't hold; use the repository's https URL instead."
LOCAL_PATH = "Local paths and file:// URLs are not accepted: give the URL of a git server."
CREDENTIALS = "Remove the user name or password from the URL"
CONTROL = "The URL contains spaces or control characters."
HELPER = "Remote-helper URLs (transport::address) are not accepted."
BAD_HOST = "The URL's host name is not valid."
BAD_NAME = (
    "is not a valid host name: each part between dots is 1 to 63 letters, digits or hyphens, "
    "and does not start or end with a hyphen."
)
ODD_IPV4 = (
    "is not a usual IPv4 address: write it as four decimal numbers without leading zeros, "
    "like 192.0.2.1."
)

HOSTILE = [
    # Not a URL of a git server at all
    ("", "Enter the URL of a git repository."),
    ("   ", "Enter the URL of a git repository."),
    ("https://github.com/" + "a" * 2048, "The URL is longer than 2048 characters."),
    ("-uhttps://github.com/x.git", "The URL cannot start with '-'."),
    ("--upload-pack=touch${IFS}/tmp/x", "The URL cannot start with '-'."),
    ("notaurl", "Enter a full URL, such as https://github.com/owner/repo.git."),
    ("https:///owner/repo.git", "Enter a full URL, such as https://github.com/owner/repo.git."),
    ("https://:443/owner/repo.git", "The URL has no host name."),
    # Spaces and control characters, which could split a command line or a request
    ("https://github.com/a\nb.git", CONTROL),
    ("https://github.com/a\rb.git", CONTROL),
    ("https://github.com/a\tb.git", CONTROL),
    ("https://github.com/a\x00b.git", CONTROL),
    ("https://github.com/a b.git", CONTROL),
    ("https://github.com\x7f/a.git", CONTROL),
    # Local files, other transports, remote helpers
    ("file:///etc/passwd", LOCAL_PATH),
    ("FILE:///etc/passwd", LOCAL_PATH),
    ("/srv/git/repo.git", LOCAL_PATH),
    ("../repo.git", LOCAL_PATH),
    ("~/repo", LOCAL_PATH),
    (
        "ftp://github.com/repo.git",
        "ftp:// URLs are not accepted here; use https://, http://, git://.",
    ),
    ("ext::sh", HELPER),
    ("fd::17", HELPER),
    ("ssh://git@github.com/pallets/flask.git", SSH),
    ("git+ssh://github.com/pallets/flask.git", SSH),
    ("ssh+git://github.com/pallets/flask.git", SSH),
    ("git@github.com:pallets/flask.git", SSH),
    # Credentials
    ("https://alice@github.com/owner/repo.git", CREDENTIALS),
    ("https://alice:s3cret@github.com/owner/repo.git", CREDENTIALS),
    ("https://:s3cret@github.com/owner/repo.git", CREDENTIALS),
    ("https://github.com\\@evil.example/repo.git", CREDENTIALS),
    # Host names
    ("https://[::1/a.git", BAD_HOST),
    ("https://[not-an-ip]/a.git", BAD_HOST),
    ("https://[fe80::1%25eth0]/a.git", BAD_HOST),
    ("https://[v1.x]/a.git", BAD_HOST),
    ("https://[2606:4700::1111]x/a.git", BAD_HOST),
    ("https://x[2606:4700::1111]/a.git", BAD_HOST),
    ("https://gith%75b.com/a.git", f"gith%75b.com {BAD_NAME}"),
    ("https://github.com%0a.evil.example/a.git", f"github.com%0a.evil.example {BAD_NAME}"),
    ("https://github.com%00.evil.example/a.git", f"github.com%00.evil.example {BAD_NAME}"),
    ("https://*.github.com/a.git", f"*.github.com {BAD_NAME}"),
    ("https://git_hub.com/a.git", f"git_hub.com {BAD_NAME}"),
    ("https://-github.com/a.git", f"-github.com {BAD_NAME}"),
    ("https://github-.com/a.git", f"github-.com {BAD_NAME}"),
    ("https://git..hub.com/a.git", f"git..hub.com {BAD_NAME}"),
    ("https://github.com./a.git", f"github.com. {BAD_NAME}"),
    (f"https://{'a' * 64}.com/a.git", f"{'a' * 64}.com {BAD_NAME}"),
    (f"https://{'a.' * 127}com/a.git", f"{'a.' * 127}com {BAD_NAME}"),
    ("https://xn--zz.example/a.git", f"xn--zz.example {BAD_NAME}"),
    ("https://☃.example/a.git", f"☃.example {BAD_NAME}"),
    ("https://intranet/a.git", "intranet is not a full host name; use the server's public name"),
    ("https://localhost/a.git", "localhost is a local host name; only public git servers"),
    ("https://LocalHost/a.git", "localhost is a local host name; only public git servers"),
    ("https://foo.localhost/a.git", "foo.localhost is a local host name"),
    ("https://printer.local/a.git", "printer.local is a local host name"),
    ("https://git.corp.internal/a.git", "git.corp.internal is a local host name"),
    ("https://router.home.arpa/a.git", "router.home.arpa is a local host name"),
    ("https://nowhere.example/a.git", "The host nowhere.example could not be found."),
    # IPv4 spelled the way only browsers and curl understand
    ("https://127.1/a.git", f"127.1 {ODD_IPV4}"),
    ("https://0x7f.1/a.git", f"0x7f.1 {ODD_IPV4}"),
    ("https://0x7f000001/a.git", f"0x7f000001 {ODD_IPV4}"),
    ("https://2130706433/a.git", f"2130706433 {ODD_IPV4}"),
    ("https://0177.0.0.1/a.git", f"0177.0.0.1 {ODD_IPV4}"),
    ("https://127.000.000.001/a.git", f"127.000.000.001 {ODD_IPV4}"),
    ("https://127.0.0.1./a.git", f"127.0.0.1. {ODD_IPV4}"),
    ("https://256.0.0.1/a.git", f"256.0.0.1 {ODD_IPV4}"),
    ("https://1.2.3.4.5/a.git", f"1.2.3.4.5 {ODD_IPV4}"),
    ("https://github.0x1/a.git", f"github.0x1 {ODD_IPV4}"),
    # Ports
    ("https://github.com:99999/a.git", "The URL's port is not a number between 0 and 65535."),
    ("https://github.com:8443/a.git", "Port 8443 is not accepted for https:// URLs; use 443."),
    ("http://github.com:8080/a.git", "Port 8080 is not accepted for http:// URLs; use 80."),
    ("git://github.com:22/a.git", "Port 22 is not accepted for git:// URLs; use 9418."),
    ("https://github.com:80/a.git", "Port 80 is not accepted for https:// URLs; use 443."),
    # Private and reserved addresses, written in the URL
    ("https://127.0.0.1/a.git", f"127.0.0.1 is {PRIVATE}"),
    ("https://[::1]/a.git", f"::1 is {PRIVATE}"),
    ("https://10.1.2.3/a.git", f"10.1.2.3 is {PRIVATE}"),
    ("https://172.16.0.1/a.git", f"172.16.0.1 is {PRIVATE}"),
    ("https://192.168.1.1/a.git", f"192.168.1.1 is {PRIVATE}"),
    ("http://169.254.169.254/latest/meta-data", f"169.254.169.254 is {PRIVATE}"),
    ("https://100.64.0.1/a.git", f"100.64.0.1 is {PRIVATE}"),
    ("https://[fc00::1]/a.git", f"fc00::1 is {PRIVATE}"),
    ("https://[fd12::1]/a.git", f"fd12::1 is {PRIVATE}"),
    ("https://[fe80::1]/a.git", f"fe80::1 is {PRIVATE}"),
    ("https://[fec0::1]/a.git", f"fec0::1 is {PRIVATE}"),
    ("https://224.0.0.1/a.git", f"224.0.0.1 is {PRIVATE}"),
    ("https://[ff02::1]/a.git", f"ff02::1 is {PRIVATE}"),
    ("https://240.0.0.1/a.git", f"240.0.0.1 is {PRIVATE}"),
    ("https://255.255.255.255/a.git", f"255.255.255.255 is {PRIVATE}"),
    ("https://0.0.0.0/a.git", f"0.0.0.0 is {PRIVATE}"),
    ("https://[::]/a.git", f":: is {PRIVATE}"),
    ("https://192.0.0.8/a.git", f"192.0.0.8 is {PRIVATE}"),
    ("https://192.0.2.1/a.git", f"192.0.2.1 is {PRIVATE}"),
    ("https://192.88.99.1/a.git", f"192.88.99.1 is {PRIVATE}"),
    ("https://198.51.100.1/a.git", f"198.51.100.1 is {PRIVATE}"),
    ("https://203.0.113.1/a.git", f"203.0.113.1 is {PRIVATE}"),
    ("https://198.18.0.1/a.git", f"198.18.0.1 is {PRIVATE}"),
    ("https://[100::1]/a.git", f"100::1 is {PRIVATE}"),
    ("https://[2001:db8::1]/a.git", f"2001:db8::1 is {PRIVATE}"),
    # IPv6 addresses that lead to an IPv4 one
    ("https://[::ffff:127.0.0.1]/a.git", f"::ffff:127.0.0.1 is {PRIVATE}"),
    ("https://[::ffff:7f00:1]/a.git", f"::ffff:127.0.0.1 is {PRIVATE}"),
    ("https://[::ffff:8.8.8.8]/a.git", f"::ffff:8.8.8.8 is {PRIVATE}"),
    ("https://[::127.0.0.1]/a.git", f"::7f00:1 is {PRIVATE}"),
    ("https://[2002:7f00:1::]/a.git", f"2002:7f00:1:: is {PRIVATE}"),
    ("https://[64:ff9b::7f00:1]/a.git", f"64:ff9b::7f00:1 is {PRIVATE}"),
    ("https://[64:ff9b::10.0.0.1]/a.git", f"64:ff9b::a00:1 is {PRIVATE}"),
    ("https://[64:ff9b:1::a00:1]/a.git", f"64:ff9b:1::a00:1 is {PRIVATE}"),
    (
        "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/a.git",  # Teredo
        f"2001:0:4136:e378:8000:63bf:3fff:fdd2 is {PRIVATE}",
    ),
    # International spellings of a private address (full-width digits, ideographic full stops)
    ("https://\uff11\uff12\uff17.0.0.1/a.git", f"127.0.0.1 is {PRIVATE}"),
    ("https://127。0。0。1/a.git", f"127.0.0.1 is {PRIVATE}"),
    # Host names that resolve to a private address, or to a public and a private one
    ("https://internal.example/a.git", f"internal.example resolves to 10.0.0.5, {PRIVATE}"),
    ("https://mixed.example/a.git", f"mixed.example resolves to 192.168.0.10, {PRIVATE}"),
    ("https://mixed6.example/a.git", f"mixed6.example resolves to fd00::1, {PRIVATE}"),
]


@pytest.mark.usefixtures("production")
@pytest.mark.parametrize(("url", "message"), HOSTILE)
def test_it_refuses_hostile_urls_with_a_specific_reason_and_makes_no_job(
    url, message, owner_client
):
    assert refusal(url).startswith(message)
    response = owner_client.post(reverse("clones:new"), {"url": url})
    assert response.status_code == 200
    if "\x00" in url:  # Django's form field refuses these before our check sees them
        message = "Null characters are not allowed."
    assert response.context["form"].errors["url"][0].startswith(message)
    assert not CloneJob.objects.exists()


@pytest.mark.parametrize(
    ("url", "suggestion"),
    [
        ("git@github.com:pallets/flask.git", "https://github.com/pallets/flask.git"),
        ("ssh://git@github.com/pallets/flask.git", "https://github.com/pallets/flask.git"),
        ("github.com:pallets/flask", "https://github.com/pallets/flask"),
    ],
)
def test_ssh_urls_are_refused_with_the_https_form(url, suggestion):
    assert refusal(url).endswith(f"Try {suggestion}")


@pytest.mark.usefixtures("production")
@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/pallets/flask.git",
        "  https://github.com/pallets/flask.git  ",
        "HTTPS://GitHub.com/pallets/flask.git",
        "https://github.com:443/pallets/flask.git",
        "http://github.com:80/pallets/flask.git",
        "git://github.com/pallets/flask.git",
        "https://bücher.example/x.git",
        "https://dual.example/x.git",
        "https://8.8.8.8/x.git",
        "https://[2606:4700::1111]/x.git",
        "https://[64:ff9b::808:808]/x.git",  # NAT64 to a public IPv4 server
        "https://github.com/owner/repo.git?ref=main#readme",
    ],
)
def test_it_accepts_public_git_servers(url):
    assert check_url(url) == url.strip()


FULL_WIDTH_8 = "\uff18"
FULL_WIDTH_GITHUB = "\uff47\uff49\uff54\uff48\uff55\uff42"  # "github" in full-width letters
IDEOGRAPHIC_STOP = "\u3002"


@pytest.mark.usefixtures("production")
@pytest.mark.parametrize(
    ("written", "kept"),
    [
        (f"https://{'.'.join([FULL_WIDTH_8] * 4)}/x.git", "https://8.8.8.8/x.git"),
        (f"https://8{IDEOGRAPHIC_STOP}8.8.8:443/x.git?a=b", "https://8.8.8.8:443/x.git?a=b"),
        (
            f"https://{FULL_WIDTH_GITHUB}.com/pallets/flask.git",
            "https://github.com/pallets/flask.git",
        ),
        (f"https://BÜCHER{IDEOGRAPHIC_STOP}example/x.git", "https://bücher.example/x.git"),
    ],
)
def test_a_host_written_in_other_than_ascii_is_kept_in_its_normal_form(written, kept, owner):
    # Judged as the address or name it is, and kept so: git, the ref lookup and the snapshots
    # all read the job's URL, and would take 8.8.8.8 in full-width digits for a name.
    assert check_url(written) == kept
    assert pin(written).url == kept.replace("bücher", "xn--bcher-kva")  # curl's ASCII name
    form = CloneRequestForm({"url": written})
    assert form.is_valid() and form.cleaned_data["url"] == kept


@pytest.mark.usefixtures("production")
def test_a_job_asked_for_in_full_width_digits_stores_the_address(owner_client):
    owner_client.post(reverse("clones:new"), {"url": f"https://{'.'.join([FULL_WIDTH_8] * 4)}/"})
    assert CloneJob.objects.get().url == "https://8.8.8.8/"


def test_a_job_stored_before_normalizing_is_still_cloned_from_the_address(production):
    assert pin(f"https://{'.'.join([FULL_WIDTH_8] * 4)}/x.git") == PinnedURL(
        "https://8.8.8.8/x.git", None
    )


def test_it_accepts_the_ports_the_operator_allows(production):
    production.CLONES_ALLOWED_PORTS = {"https": {443, 8443}, "http": None}
    assert check_url("https://github.com:8443/x.git")
    assert check_url("http://github.com:8080/x.git")
    assert refusal("https://github.com:9443/x.git") == (
        "Port 9443 is not accepted for https:// URLs; use 443 or 8443."
    )
    # A scheme the operator gave no ports for gets its default one.
    assert check_url("git://github.com:9418/x.git")
    assert refusal("git://github.com:9419/x.git").startswith("Port 9419 is not accepted")


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/owner/repo.git",
        "http://127.0.0.1:8080/repo",
        "git://127.0.0.1/repo.git",
        "  https://127.0.0.1/padded.git  ",
    ],
)
def test_the_test_settings_accept_the_local_git_servers(url):
    assert check_url(url) == url.strip()


def test_allowing_private_networks_allows_local_names_but_not_odd_ipv4(production, dns):
    production.CLONES_ALLOW_PRIVATE_NETWORKS = True
    dns.update(localhost=["127.0.0.1"], intranet=["10.0.0.7"])
    for url in ["https://127.0.0.1/a.git", "https://localhost/a.git", "https://intranet/a.git"]:
        assert check_url(url) == url
    # Still pinned: what git reaches is what was looked up, even when anything may be.
    pinned = PinnedURL("https://intranet/a.git", "intranet:443:10.0.0.7")
    assert pin("https://intranet/a.git") == pinned
    assert refusal("https://127.1/a.git").startswith(f"127.1 {ODD_IPV4}")
    assert refusal("https://git_hub.com/a.git").startswith(f"git_hub.com {BAD_NAME}")


def test_a_listed_private_host_name_is_allowed_whatever_it_resolves_to(production, dns):
    production.CLONES_ALLOWED_PRIVATE_HOSTS = ["git.corp.example", "GitServer"]
    dns.update(gitserver=["127.0.0.1"], **{"git.corp.example": ["10.1.1.1"]})
    assert check_url("https://git.corp.example/a.git")
    assert check_url("https://gitserver/a.git")  # single-label, but listed
    assert pin("https://gitserver/a.git").curl_resolve == "gitserver:443:127.0.0.1"
    assert "internal.example resolves to 10.0.0.5" in refusal("https://internal.example/a.git")


def test_a_listed_network_allows_only_addresses_inside_it(production):
    production.CLONES_ALLOWED_PRIVATE_HOSTS = ["192.0.2.0/24", "fd00::1"]
    assert check_url("https://192.0.2.10/a.git")
    assert check_url("https://docs.example/a.git")
    assert check_url("https://mixed6.example/a.git")
    assert refusal("https://127.0.0.1/a.git") == f"127.0.0.1 is {PRIVATE}"
    assert refusal("https://[fd00::2]/a.git") == f"fd00::2 is {PRIVATE}"
    assert refusal("https://localhost/a.git").startswith("localhost is a local host name")


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "300.1.2.3", "fd00::/129", "10.0.0/8"])
def test_an_invalid_allowed_network_is_a_configuration_error(production, entry):
    production.CLONES_ALLOWED_PRIVATE_HOSTS = [entry]
    with pytest.raises(ImproperlyConfigured, match="CLONES_ALLOWED_PRIVATE_HOSTS"):
        check_url("https://internal.example/a.git")


@pytest.mark.usefixtures("production")
@pytest.mark.parametrize(
    ("url", "pinned"),
    [
        (
            "https://github.com/pallets/flask.git",
            PinnedURL("https://github.com/pallets/flask.git", f"github.com:443:{PUBLIC_V4}"),
        ),
        (
            "http://github.com/pallets/flask.git",
            PinnedURL("http://github.com/pallets/flask.git", f"github.com:80:{PUBLIC_V4}"),
        ),
        (
            "https://GitHub.com:443/pallets/flask.git",
            PinnedURL("https://GitHub.com:443/pallets/flask.git", f"github.com:443:{PUBLIC_V4}"),
        ),
        (
            "https://dual.example/x.git",
            PinnedURL("https://dual.example/x.git", f"dual.example:443:{PUBLIC_V4},[{PUBLIC_V6}]"),
        ),
        (
            # curl matches its resolve entry against the ASCII name, so git is given that name.
            "https://bücher.example/x.git?a=b",
            PinnedURL(
                "https://xn--bcher-kva.example/x.git?a=b",
                f"xn--bcher-kva.example:443:{PUBLIC_V4}",
            ),
        ),
        ("https://8.8.8.8/x.git", PinnedURL("https://8.8.8.8/x.git", None)),
        (f"https://[{PUBLIC_V6}]/x.git", PinnedURL(f"https://[{PUBLIC_V6}]/x.git", None)),
        ("git://github.com/x.git", PinnedURL(f"git://{PUBLIC_V4}/x.git", None)),
        ("git://github.com:9418/x.git", PinnedURL(f"git://{PUBLIC_V4}:9418/x.git", None)),
        ("git://8.8.8.8/x.git", PinnedURL("git://8.8.8.8/x.git", None)),
    ],
)
def test_pin_says_how_git_reaches_the_checked_addresses(url, pinned):
    assert pin(url) == pinned


def test_pin_keeps_an_explicit_port(production, dns):
    production.CLONES_ALLOWED_PORTS = {"https": {8443}, "git": {9000}}
    dns["v6.example"] = [PUBLIC_V6]
    assert pin("https://v6.example:8443/x").curl_resolve == f"v6.example:8443:[{PUBLIC_V6}]"
    assert pin("git://v6.example:9000/x").url == f"git://[{PUBLIC_V6}]:9000/x"


@pytest.mark.parametrize(
    ("scheme", "host", "port", "written"),
    [
        ("https", "example.org", 443, "example.org"),
        ("https", "example.org", 8443, "example.org:8443"),
        ("http", "example.org", 443, "example.org:443"),
        ("git", PUBLIC_V6, 9418, f"[{PUBLIC_V6}]"),
        ("git", PUBLIC_V6, 9000, f"[{PUBLIC_V6}]:9000"),
        ("https", PUBLIC_V4, None, PUBLIC_V4),
    ],
)
def test_a_host_and_port_are_written_as_a_url_writes_them(scheme, host, port, written):
    assert urlpolicy.netloc(scheme, host, port) == written


def test_pin_resolves_again_and_catches_a_name_that_now_points_inside(production, monkeypatch):
    answers = itertools.chain(
        [[ip_address(PUBLIC_V4)]], itertools.repeat([ip_address("127.0.0.1")])
    )
    monkeypatch.setattr(urlpolicy, "resolve", lambda host, port: next(answers))

    assert check_url("https://rebind.example/a.git")
    with pytest.raises(ValidationError) as refused:
        pin("https://rebind.example/a.git")
    assert refused.value.messages == [f"rebind.example resolves to 127.0.0.1, {PRIVATE}"]


def test_pin_runs_every_check_of_check_url(production):
    with pytest.raises(ValidationError, match="Remove the user name or password"):
        pin("https://alice@github.com/a.git")


def test_resolve_asks_getaddrinfo_and_drops_zones_and_repeats(monkeypatch):
    def getaddrinfo(host, port, type):
        assert (host, port, type) == ("github.com", 443, socket.SOCK_STREAM)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_V4, 443)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fe80::1%eth0", 443, 0, 2)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_V4, 443)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert RESOLVE("github.com", 443) == [ip_address(PUBLIC_V4), ip_address("fe80::1")]


def test_a_name_that_cannot_be_resolved_has_no_addresses(monkeypatch):
    def getaddrinfo(host, port, type):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert RESOLVE("nowhere.example", 443) == []


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
