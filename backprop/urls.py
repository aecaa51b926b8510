"""Which callback URLs the service may call, and the request that calls the address checked.

A callback is a request the service makes on a user's behalf, so its URL must be http(s)
and, unless CALLBACK_ALLOW_PRIVATE_NETWORKS, must not resolve to a private, loopback,
link-local or otherwise reserved address: the API checks it at submit (``refusal``) and the
delivery again, after DNS resolution, before every attempt (``resolve``), then connects to
the address that was checked (``pinned_request``: no second lookup a rebinding name could
answer differently).
The reason to change is which addresses a callback may reach, and how it reaches them.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx


def refusal(url: str, allow_private: bool) -> str | None:
    """Why this URL may not be called back, or None."""
    return resolve(url, allow_private)[1]


def resolve(url: str, allow_private: bool) -> tuple[str | None, str | None]:
    """(the address to call the URL's host at, None), or (None, why it may not be called)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None, "expected an http:// or https:// URL with a host"
    try:
        httpx.URL(url)  # what the delivery will send
    except httpx.InvalidURL as exc:
        return None, f"not a URL that can be called ({exc})"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None, "the port is not a number from 1 to 65535"
    if not allow_private and port not in (80, 443) and port < 1024:
        return None, "the port must be 80, 443 or 1024 and above (the others are services')"
    try:
        found = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
        addresses = [ipaddress.ip_address(address[0]) for *_, address in found]
    except (OSError, ValueError) as exc:
        return None, f"the host does not resolve ({type(exc).__name__})"
    for ip in addresses if not allow_private else ():
        if not _public(ip):
            # which address is not said: the answer would tell what internal names resolve to
            return None, (
                f"{parts.hostname} resolves to a private, loopback, link-local or reserved "
                "address (CALLBACK_ALLOW_PRIVATE_NETWORKS allows them)"
            )
    return str(addresses[0]), None


NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A global unicast address, and so is any IPv4 address that an IPv6 one carries
    (mapped ``::ffff:a.b.c.d``, compatible ``::a.b.c.d``, NAT64, 6to4, Teredo), since
    the network may route it to that IPv4 address."""
    if not ip.is_global or ip.is_multicast:
        return False
    if ip.version == 4:
        return True
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo and ip.teredo[1]]
    if int(ip) >> 32 == 0 or any(ip in network for network in NAT64):
        embedded.append(low32)
    return all(_public(inner) for inner in embedded if inner is not None)


def pinned_request(url: str, address: str, **options) -> httpx.Request:
    """A request for ``url`` sent to ``address``, the one that was checked: a name that
    resolves elsewhere a moment later (DNS rebinding) is not looked up again. The Host
    header, TLS's server name and the certificate check keep the URL's host name."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = host + (f":{parts.port}" if parts.port else "")
    target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    headers = dict(options.pop("headers", {}))
    name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    headers["Host"] = name + (f":{parts.port}" if parts.port else "")
    if parts.username is not None:  # user:password@host, as httpx would send it
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return httpx.Request("POST", target, headers=headers, extensions=extensions, **options)
