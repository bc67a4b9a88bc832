"""HTTP to exactly the addresses the URL policy checked (urlpolicy.pin), for the worker's own
requests: ref lookups (clones.pipeline.refs) and webhooks (clones.notify.webhooks).

The connection goes to a checked address, with no DNS lookup after the check, while the Host
header, TLS SNI and the certificate check still name the URL's host. Nothing is retried,
redirects are not followed, and no proxy is taken from the environment (a PoolManager never
reads it).
"""

import ipaddress
from collections.abc import Callable

import urllib3

from . import urlpolicy


class PinnedPoolManager(urllib3.PoolManager):
    """urllib3 for one pinned URL: requests for its own scheme, host and port go to a checked
    address, any other is refused. Each try (connect, and every wait for the answer) may take
    `seconds()`, asked afresh for each: a caller with a budget gives what is left of it."""

    def __init__(
        self,
        pinned: urlpolicy.PinnedURL,
        seconds: Callable[[], float],
        headers: dict[str, str] | None = None,
    ):
        super().__init__(retries=False, headers=headers)
        self._pinned = pinned
        self._seconds = seconds
        # In order; one that refuses the connection is dropped, so the next request goes on
        # with the address that answered.
        self._addresses = list(pinned.addresses)
        self._host_header = urlpolicy.netloc(pinned.scheme, pinned.host, pinned.port)

    def connection_from_host(
        self,
        host: str | None,
        port: int | None = None,
        scheme: str | None = "http",
        pool_kwargs: dict | None = None,
    ) -> urllib3.HTTPConnectionPool:
        port = port or urlpolicy.DEFAULT_PORTS.get(scheme or "")
        pinned = self._pinned
        if (scheme, _same_form(host or ""), port) != (pinned.scheme, pinned.host, pinned.port):
            raise ValueError(f"{scheme}://{host}:{port} is not the URL's host")
        # SNI and OpenSSL's own hostname check name the host (urllib3 leaves them out for an IP).
        tls = {"server_hostname": pinned.host}
        return super().connection_from_host(str(self._addresses[0]), port, scheme, tls)

    def urlopen(
        self, method: str, url: str, redirect: bool = True, **kw: object
    ) -> urllib3.BaseHTTPResponse:
        kw["headers"] = {**(kw.get("headers") or self.headers), "Host": self._host_header}
        while True:
            seconds = self._seconds()
            kw["timeout"] = urllib3.Timeout(connect=seconds, read=seconds)
            try:
                return super().urlopen(method, url, redirect=False, **kw)
            except urllib3.exceptions.NewConnectionError:  # refused, unreachable: not a timeout
                if len(self._addresses) == 1:
                    raise
                self._addresses.pop(0)


def _same_form(host: str) -> str:
    """A host as urlpolicy writes it: an IPv6 address without brackets and compressed."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host.lower()
