"""Which repository URLs and refs we accept, each refusal with its own reason.

check_url runs in the form, before a job row exists, so bad input never reaches the queue. pin
runs the same checks again in the worker right before git starts, resolving the host afresh, and
says how git must connect so that it reaches exactly the addresses that were checked.
"""

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit, urlunsplit

import idna
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError

type IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
type IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048
MAX_REF_LENGTH = 255
SCP_LIKE = re.compile(r"^(?:[^@/\s]+@)?(?P<host>[^:/\s]+):(?P<path>(?!//)[^\s]*)$")
UNSAFE_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
DEFAULT_PORTS = {"https": 443, "http": 80, "git": 9418, "ssh": 22}
# The user of an SSH URL (git@, deploy@): it reaches ssh's command line, so no option-like or
# odd names.
SSH_USER = re.compile(r"(?!-)[A-Za-z0-9._-]+")
BRACKETED_HOST = re.compile(r"\[[0-9a-f:.]+\](?::[0-9]*)?", re.IGNORECASE)
HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# Browsers and curl read a host whose last label is a number as an IPv4 address, however odd
# its spelling (127.1, 0x7f000001, 0177.0.0.1); we only take the plain dotted quad.
NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
# Names that only ever mean something on the local machine or network (RFC 6761, RFC 6762,
# RFC 8375, and .internal, which ICANN reserved for private use in 2024).
LOCAL_SUFFIXES = ("localhost", "local", "internal", "home.arpa")

# Python 3.12's is_global misses some of these (multicast counts as global), so we list every
# range that is not a public unicast server, and also require is_global.
BLOCKED_NETWORKS = [
    ipaddress.ip_network(network)
    for network in [
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, including cloud metadata at 169.254.169.254
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # old 6to4 relays
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, including broadcast 255.255.255.255
        "::/128",  # unspecified
        "::1/128",  # loopback
        "::ffff:0:0/96",  # IPv4-mapped: a socket would reach the IPv4 host
        "64:ff9b:1::/48",  # local-use NAT64, whose prefix length (so IPv4 position) varies
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments, including Teredo 2001::/32
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4, deprecated
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local, deprecated
        "ff00::/8",  # multicast
    ]
]
# 64:ff9b::/96 is not blocked: IPv6-only networks reach public IPv4 servers through it (DNS64),
# so such an address is judged by the IPv4 address inside it.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


@dataclass(frozen=True)
class PinnedURL:
    """How git must connect so that it reaches exactly the addresses that were checked."""

    # What git is given. git:// has no resolve option, so its host becomes the checked address;
    # so does an SSH URL's (ssh://... or scp-like, as written), whose host key ssh must then match
    # under HostKeyAlias=host.
    url: str
    # For http(s) to a host name: "HOST:PORT:IP[,IP...]" for `git -c http.curloptResolve=...`;
    # None for an IP address and for git://.
    curl_resolve: str | None
    # For clients other than git (clones.pipeline.refs): the scheme, the host git is given (ASCII: a
    # lower-case name in its xn-- form, or an IP address), the port, and the checked addresses a
    # connection may go to, in order (git:// goes to the first only, as git does with `url`).
    scheme: str = field(default="", compare=False)
    host: str = field(default="", compare=False)
    port: int = field(default=0, compare=False)
    addresses: tuple[IPAddress, ...] = field(default=(), compare=False)
    # For SSH: the user to log in as (an SSH URL must name one), and the repository's path as
    # git sends it: an ssh:// URL's, absolute, or a scp-like URL's, relative to the login's home.
    user: str = field(default="", compare=False)
    path: str = field(default="", compare=False)


@dataclass(frozen=True)
class _Target:
    url: str  # stripped, its host normalized if it was not ASCII, otherwise as written
    parts: SplitResult
    host: str  # ASCII: a lower-case name in its xn-- form, or an IP address
    is_address: bool  # the URL names an IP address rather than a host name
    port: int  # as written, or the scheme's default
    addresses: list[IPAddress]  # checked, unless the reach allows every private network
    scp_path: str | None = None  # for a scp-like URL (user@host:path), its path as written


@dataclass(frozen=True)
class Reach:
    """Which private or local hosts one kind of URL may reach beyond public servers, by the
    settings that say so (read afresh at each check), and how a refusal of any other ends."""

    # How a refusal of a private or local host ends: what the policy is for.
    public_only: str
    # The setting listing the private hosts allowed: names, addresses and networks.
    hosts_setting: str
    # A setting that, when on, allows every private network; None: no such setting applies.
    networks_setting: str | None = None

    def any_private(self) -> bool:
        return bool(self.networks_setting and getattr(settings, self.networks_setting))

    def allowed(self) -> tuple[set[str], list[IPNetwork]]:
        """The hosts setting as (host names, networks); an IP entry is a /32 or /128."""
        names, networks = set(), []
        for entry in getattr(settings, self.hosts_setting):
            entry = entry.strip().lower()
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if re.fullmatch(r"[0-9.]+|.*[:/].*", entry):
                    raise ImproperlyConfigured(
                        f"{self.hosts_setting}: {entry!r} is not a valid address or network"
                    ) from None
                names.add(entry)
        return names, networks


# Clone URLs: git servers. Webhooks (clones.notify.webhooks) have a reach of their own.
GIT_SERVERS = Reach(
    "only public git servers can be cloned",
    hosts_setting="CLONES_ALLOWED_PRIVATE_HOSTS",
    networks_setting="CLONES_ALLOW_PRIVATE_NETWORKS",
)


def check_url(url: str, reach: Reach = GIT_SERVERS) -> str:
    """Return the URL to keep, or raise ValidationError saying why not: stripped of surrounding
    spaces, and with a host written in other than ASCII in its normal form (_readable_host), so
    that what is stored, shown and given to git is what was checked."""
    return _check(url, reach).url


def pin(url: str, reach: Reach = GIT_SERVERS) -> PinnedURL:
    """Run every check of check_url again, resolving the host afresh (the worker calls this right
    before cloning, so a DNS change since submission is caught), and return how git must connect
    to exactly the checked addresses."""
    target = _check(url, reach)
    where = {"scheme": target.parts.scheme, "host": target.host, "port": target.port}
    if target.parts.scheme == "ssh":
        return _pin_ssh(target, where)
    if target.is_address:
        return PinnedURL(target.url, None, **where, addresses=tuple(target.addresses))
    if target.parts.scheme == "git":
        first = target.addresses[0]
        git_url = _with_host(target.url, target.parts, bracketed(str(first)))
        return PinnedURL(git_url, None, **where, addresses=(first,))
    addresses = ",".join(bracketed(str(address)) for address in target.addresses)
    # curl matches the resolve entry against the ASCII name, so git must be given that name.
    url = target.url
    if target.parts.hostname != target.host:
        url = _with_host(target.url, target.parts, target.host)
    resolve = f"{target.host}:{target.port}:{addresses}"
    return PinnedURL(url, resolve, **where, addresses=tuple(target.addresses))


def _pin_ssh(target: _Target, where: dict) -> PinnedURL:
    """git connects to the first checked address, as for git://; the URL keeps its form, since
    a scp-like path is relative to the user's home and an ssh:// one is not."""
    first = target.addresses[0]
    user = target.parts.username
    if target.scp_path is None:
        ssh_url = _with_host(target.url, target.parts, bracketed(str(first)))
        path = target.parts.path
    else:
        ssh_url = f"{user}@{bracketed(str(first))}:{target.scp_path}"
        path = target.scp_path
    return PinnedURL(ssh_url, None, **where, addresses=(first,), user=user, path=path)


def _check(url: str, reach: Reach) -> _Target:
    url = url.strip()
    scp_path = _scp_path(url)
    parts = _parts(url)
    port = _port(parts)
    host, is_address = _host(parts, reach)
    if not parts.netloc.isascii():
        url = _with_host(url, parts, _readable_host(host, is_address))
        parts = _split(url)
    addresses = [ipaddress.ip_address(host)] if is_address else resolve(host, port)
    if not addresses:
        raise ValidationError(f"The host {parts.hostname} could not be found.")
    if not reach.any_private():
        _refuse_private(parts.hostname, is_address, addresses, reach)
    return _Target(url, parts, host, is_address, port, addresses, scp_path)


def is_ssh(url: str) -> bool:
    """The URL is an SSH one (ssh:// or user@host:path) that SSH being allowed would accept."""
    url = url.strip()
    return url.lower().startswith("ssh://") or _scp_path(url) is not None


def ssh_uri(url: str) -> str:
    """An SSH URL as a URI: ssh:// as it is, user@host:path as ssh://user@host/~/path (a path
    relative to the login's home, as git reads `/~/`)."""
    scp_like = SCP_LIKE.match(url)
    if "://" in url or not scp_like:
        return url
    path = scp_like["path"]
    home_relative = path if path.startswith(("/", "~")) else f"~/{path}"
    login = url[: scp_like.start("host")]
    return f"ssh://{login}{scp_like['host']}/{home_relative.removeprefix('/')}"


def ssh_allowed() -> bool:
    return "ssh" in settings.CLONES_ALLOWED_SCHEMES


def _scp_path(url: str) -> str | None:
    """The path of a scp-like URL (user@host:path) when SSH is allowed, else None."""
    match = SCP_LIKE.match(url)
    if not (ssh_allowed() and match and "://" not in url):
        return None
    return match["path"]


def _parts(url: str) -> SplitResult:
    """The URL split, once it is a full URL with an accepted scheme and no credentials."""
    if not url:
        raise ValidationError("Enter the URL of a git repository.")
    if len(url) > MAX_URL_LENGTH:
        raise ValidationError(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    if UNSAFE_CHARS.search(url):
        raise ValidationError("The URL contains spaces or control characters.")
    if url.startswith("-"):
        raise ValidationError("The URL cannot start with '-'.")
    _refuse_local_and_ssh(url)
    parts = _split(_as_ssh_url(url) if _scp_path(url) is not None else url)
    if not parts.scheme or not parts.netloc:
        raise ValidationError("Enter a full URL, such as https://github.com/owner/repo.git.")
    if parts.scheme not in settings.CLONES_ALLOWED_SCHEMES:
        allowed = ", ".join(f"{s}://" for s in settings.CLONES_ALLOWED_SCHEMES)
        raise ValidationError(f"{parts.scheme}:// URLs are not accepted here; use {allowed}.")
    if parts.scheme == "ssh":
        _check_ssh_parts(parts)
        if re.search(r"[?#%]", url):
            # git sends an SSH URL's path as it is, '?' and '#' included, and decodes '%': a
            # spelling that URL parsing reads otherwise would name another repository.
            raise ValidationError("An SSH URL cannot contain '?', '#' or '%'.")
    elif parts.username is not None or parts.password is not None:
        raise ValidationError(
            "Remove the user name or password from the URL: credentials in URLs end up in "
            "logs and history."
        )
    if not parts.hostname:
        raise ValidationError("The URL has no host name.")
    return parts


def _as_ssh_url(scp_like: str) -> str:
    """A scp-like URL as ssh://, only to check its parts: what is kept is the URL as written."""
    match = SCP_LIKE.match(scp_like)
    login = scp_like[: match.start("host")]
    if not scp_like.isascii():
        raise ValidationError("Write the host of a user@host:path URL in ASCII, or use ssh://.")
    if match["host"].startswith("["):
        raise ValidationError("Use ssh://user@[address]/path for an IPv6 address.")
    return f"ssh://{login}{match['host']}/{match['path']}"


def _check_ssh_parts(parts: SplitResult) -> None:
    """The user and path of an SSH URL, which reach ssh's and git-upload-pack's command lines."""
    if parts.password is not None:
        raise ValidationError("Remove the password from the URL: SSH logs in with a key.")
    if parts.username is None:
        # Left out, ssh would log in as whoever runs it: the worker for the ref lookup, the
        # container's user for the clone. Named, both log in alike.
        raise ValidationError(
            "Give the user to log in as, such as ssh://git@host/owner/repo.git or "
            "git@host:owner/repo.git (git for GitHub, GitLab and Gitea)."
        )
    if not SSH_USER.fullmatch(parts.username):
        raise ValidationError(
            "The user name of an SSH URL is letters, digits, '.', '_' or '-', not starting "
            "with '-'."
        )
    if parts.path.lstrip("/").startswith("-"):
        raise ValidationError("The repository path cannot start with '-'.")
    if not parts.path.strip("/"):
        raise ValidationError("The URL has no repository path.")


def _refuse_local_and_ssh(url: str) -> None:
    lowered = url.lower()
    if lowered.startswith("file:") or url.startswith(("/", ".", "~", "\\")):
        raise ValidationError(
            "Local paths and file:// URLs are not accepted: give the URL of a git server."
        )
    if re.match(r"^[a-z][a-z0-9+.-]*::", lowered):
        raise ValidationError("Remote-helper URLs (transport::address) are not accepted.")
    ssh_host_path = _ssh_host_and_path(url)
    if ssh_host_path and ssh_allowed():
        if url.lower().startswith(("git+ssh://", "ssh+git://")):
            raise ValidationError("Write the URL with ssh:// rather than git+ssh:// or ssh+git://.")
        return
    if ssh_host_path:
        host, path = ssh_host_path
        https = f"https://{host}/{path.lstrip('/')}" if host and path else ""
        hint = f" Try {https}" if https else ""
        raise ValidationError(
            f"SSH URLs need keys we don't hold; use the repository's https URL instead.{hint}"
        )


def _ssh_host_and_path(url: str) -> tuple[str, str] | None:
    """(host, path) for ssh://… and scp-style user@host:path URLs, None for anything else."""
    lowered = url.lower()
    if lowered.startswith(("ssh://", "git+ssh://", "ssh+git://")):
        parts = _split(url)
        return parts.hostname or "", parts.path
    match = SCP_LIKE.match(url)
    if match and "://" not in url:
        return match["host"], match["path"]
    return None


def _split(url: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError:  # e.g. an unclosed or invalid [IPv6] host
        raise ValidationError("The URL's host name is not valid.") from None


def _port(parts: SplitResult) -> int:
    """The port git will connect to, if the scheme accepts it."""
    try:
        port = parts.port
    except ValueError:
        raise ValidationError("The URL's port is not a number between 0 and 65535.") from None
    default = DEFAULT_PORTS.get(parts.scheme)
    if default is None:
        raise ImproperlyConfigured(
            f"CLONES_ALLOWED_SCHEMES: {parts.scheme} is not one of {', '.join(DEFAULT_PORTS)}"
        )
    port = default if port is None else port
    # A scheme missing from CLONES_ALLOWED_PORTS gets its default port only.
    allowed = settings.CLONES_ALLOWED_PORTS.get(parts.scheme, {default})
    if allowed is not None and port not in allowed:
        ports = " or ".join(str(p) for p in sorted(allowed))
        raise ValidationError(
            f"Port {port} is not accepted for {parts.scheme}:// URLs; use {ports}."
        )
    return port


def _host(parts: SplitResult, reach: Reach) -> tuple[str, bool]:
    """(ASCII host, whether it is an IP address), refusing names that are not valid or local."""
    if "[" in parts.netloc or "]" in parts.netloc:
        # urlsplit has checked the address, but lets through IPvFuture, zones ("%25eth0") and
        # text after the brackets, which curl would read differently or not at all.
        if not BRACKETED_HOST.fullmatch(parts.netloc.rpartition("@")[2]):
            raise ValidationError("The URL's host name is not valid.")
        return str(ipaddress.IPv6Address(parts.hostname)), True
    name = _ascii_name(parts.hostname)
    labels = name.removesuffix(".").split(".")
    if NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            return str(ipaddress.IPv4Address(name)), True
        except ValueError:
            raise ValidationError(
                f"{parts.hostname} is not a usual IPv4 address: write it as four decimal "
                "numbers without leading zeros, like 192.0.2.1."
            ) from None
    if not all(HOST_LABEL.fullmatch(label) for label in name.split(".")) or len(name) > 253:
        raise _invalid_name(parts.hostname)
    if not (reach.any_private() or parts.hostname in reach.allowed()[0]):
        _refuse_local_name(parts.hostname, name, reach.public_only)
    return name, False


def _ascii_name(host: str) -> str:
    """The host as DNS knows it: lower case, international labels in their xn-- form."""
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        raise _invalid_name(host) from None


def _readable_host(host: str, is_address: bool) -> str:
    """How a host written in other than ASCII is kept: an address as such (written with
    full-width digits or ideographic full stops, 8.8.8.8 is still 8.8.8.8, which git would
    otherwise take for a name and fail to resolve), a name in IDNA's normal Unicode form
    (full-width letters become ASCII ones; bücher.example stays as it is)."""
    return host if is_address else idna.decode(host)


def _invalid_name(host: str) -> ValidationError:
    return ValidationError(
        f"{host} is not a valid host name: each part between dots is 1 to 63 letters, digits "
        "or hyphens, and does not start or end with a hyphen."
    )


def _refuse_local_name(host: str, name: str, public_only: str) -> None:
    if name in LOCAL_SUFFIXES or name.endswith(tuple(f".{s}" for s in LOCAL_SUFFIXES)):
        raise ValidationError(f"{host} is a local host name; {public_only}.")
    if "." not in name:
        raise ValidationError(
            f"{host} is not a full host name; use the server's public name, such as github.com."
        )


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address of host, in the resolver's order; none if it cannot be found. Tests
    replace this function."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    # A link-local IPv6 answer may carry a zone ("fe80::1%eth0"); the address is what we judge.
    addresses = (ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos)
    return list(dict.fromkeys(addresses))


def _refuse_private(host: str, is_address: bool, addresses: list[IPAddress], reach: Reach) -> None:
    names, networks = reach.allowed()
    if host in names:
        return
    for address in addresses:
        if is_public(address) or any(_contains(network, address) for network in networks):
            continue
        shown = _written(address)
        what = f"{shown} is" if is_address else f"{host} resolves to {shown},"
        raise ValidationError(f"{what} a private or reserved address; {reach.public_only}.")


def _written(address: IPAddress) -> str:
    """An address as people write it, on every Python: an IPv4-mapped IPv6 address with its
    IPv4 half dotted, ::ffff:127.0.0.1 (Python 3.13's str; 3.12 wrote ::ffff:7f00:1)."""
    mapped = getattr(address, "ipv4_mapped", None)
    return f"::ffff:{mapped}" if mapped else str(address)


def is_public(address: IPAddress) -> bool:
    """Outside every blocked network and global, and so is any IPv4 address inside it."""
    blocked = any(_contains(network, address) for network in BLOCKED_NETWORKS)
    if blocked or not address.is_global:
        return False
    return all(is_public(inner) for inner in _embedded_ipv4(address))


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses a connection to this IPv6 address would really reach. The blocked
    table already refuses mapped, 6to4 and Teredo addresses; NAT64 and IPv4-compatible ones are
    judged by what is inside."""
    if address.version == 4:
        return []
    if address.ipv4_mapped:
        return [address.ipv4_mapped]
    if address.sixtofour:
        return [address.sixtofour]
    if address.teredo:
        return list(address.teredo)  # the relay server and the client
    if address in NAT64 or address in IPV4_COMPATIBLE:
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    return []


def _contains(network: IPNetwork, address: IPAddress) -> bool:
    return network.version == address.version and address in network


def bracketed(host: str) -> str:
    """The host as a URL or a Host header writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def netloc(scheme: str, host: str, port: int | None) -> str:
    """host[:port] as a URL or a Host header writes it: the port left out if it is the
    scheme's default, or none was given."""
    host = bracketed(host)
    return f"{host}:{port}" if port and port != DEFAULT_PORTS.get(scheme) else host


def _with_host(url: str, parts: SplitResult, host: str) -> str:
    """The URL with another host, everything else exactly as written (an SSH URL's user too)."""
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    if parts.username is not None:
        netloc = f"{parts.username}@{netloc}"
    rest = url[len(parts.scheme) + len("://") + len(parts.netloc) :]
    return f"{parts.scheme}://{netloc}{rest}"


def check_ref(ref: str) -> str:
    """A branch, tag or full commit SHA, by git's rules for ref names (git check-ref-format)."""
    ref = ref.strip()
    if not ref:
        return ""
    if re.fullmatch(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}", ref):
        return ref.lower()  # a commit: git names objects in lower case
    if UNSAFE_CHARS.search(ref):
        raise ValidationError("A branch or tag name cannot contain spaces or control characters.")
    if ref.startswith("-"):
        raise ValidationError("A branch or tag name cannot start with '-'.")
    if len(ref) > MAX_REF_LENGTH:
        raise ValidationError(f"A branch or tag name is at most {MAX_REF_LENGTH} characters.")
    if (
        re.search(r"[~^:?*\[\\]|\.\.|@\{|//", ref)
        or ref.startswith("/")
        or ref.endswith(("/", ".", ".lock"))
        or ref == "@"
    ):
        raise ValidationError(f"'{ref}' is not a valid branch or tag name.")
    return ref


def origin_url(url: str) -> str:
    """The URL as a checkout's .git names its origin, whoever asked: scheme and host in lower
    case, no default port, no trailing slash, no user name (but an SSH URL's, which is whom
    ssh logs in as: `git@`), and the host as written, not the address git was pinned to. The
    path keeps its case: most servers tell `Widget` from `widget`."""
    url = url.strip()
    scp_like = SCP_LIKE.match(url)
    if scp_like and "://" not in url:
        login, host, path = url[: scp_like.start("host")], scp_like["host"], scp_like["path"]
        return f"{login}{host.lower()}:{path.rstrip('/')}"
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = netloc(scheme, (parts.hostname or "").lower(), parts.port)
    if scheme == "ssh" and parts.username:
        host = f"{parts.username}@{host}"
    return urlunsplit((scheme, host, parts.path.rstrip("/"), parts.query, ""))


def normalized_url(url: str) -> str:
    """One spelling of each repository's URL: https://Example.com:443/team/widget.git/ and
    https://example.com/team/widget name the same one (the snapshots' key)."""
    parts = urlsplit(origin_url(url))
    return parts._replace(path=parts.path.removesuffix(".git").rstrip("/")).geturl()
