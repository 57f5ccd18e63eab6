"""The trusted client address of a request, for the audit trail (pure).

``X-Forwarded-For`` is believed only when the TCP peer is a trusted proxy, and
then only as far as the chain of trusted proxies goes: the list is walked from
right (nearest hop) to left, skipping trusted proxies; the first untrusted
address is the client. Anything a client wrote further left is ignored, so a
client cannot spoof its address by sending its own header.

A header from a peer that is *not* trusted is ignored; when that peer is a
reverse proxy someone forgot to list, every client behind it shares the
proxy's address (one audit source, one lockout address). :class:`ProxyWarning`
logs that once per process, the first time it happens.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from functools import lru_cache

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(raw: str) -> IPAddress | None:
    """An address from ``1.2.3.4``, ``1.2.3.4:5678``, ``::1``, ``[::1]:80``; else None."""
    text = raw.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@lru_cache(maxsize=4096)
def _peer(raw: str) -> IPAddress | None:
    """:func:`_parse` of a TCP peer address, cached (the same peers come back).

    Only peer addresses (short, from the socket) are cached, never header
    hops, which a client writes: the cache stays small whatever it sends.
    """
    return _parse(raw)


@lru_cache(maxsize=4096)
def _peer_text(raw: str) -> str | None:
    addr = _peer(raw)
    return None if addr is None else str(addr)


@lru_cache(maxsize=32)
def _networks(trusted: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(t.strip(), strict=False) for t in trusted if t.strip())


def _trusted(addr: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(addr.version == net.version and addr in net for net in networks)


class ProxyWarning:
    """Warns once that ``X-Forwarded-For`` came from a peer outside ``trusted_proxies``.

    Build one per process and pass it to every :func:`client_address` call.
    The log line names no address (it may be a client's).
    """

    def __init__(self) -> None:
        self.warned = False

    def untrusted_forwarded(self) -> None:
        """Record one such request; the first one logs a warning."""
        if self.warned:
            return
        self.warned = True
        log.warning(
            "a request carried X-Forwarded-For from a peer that is not in trusted_proxies: "
            "the header is ignored, so every client behind that proxy shares its address "
            "(audit source, login throttles); list the proxy in trusted_proxies"
        )


def client_address(
    peer: str | None,
    forwarded_for: str | None,
    trusted_proxies: Sequence[str],
    warning: ProxyWarning | None = None,
) -> str | None:
    """The address to record for a request.

    ``peer`` is the TCP peer address (an optional ``:port`` is dropped);
    ``forwarded_for`` the raw ``X-Forwarded-For`` value (several headers
    joined with ``,``); ``trusted_proxies`` addresses or CIDR networks
    (``settings.trusted_proxies``). Returns the client address in canonical
    form (IPv4-mapped IPv6 as IPv4), or ``None`` when the peer is unknown or
    unparseable. A malformed header entry stops the walk: the nearest hop that
    reported it is returned. ``warning``, when given, is told about a header
    from an untrusted peer. Raises ``ValueError`` for a malformed
    ``trusted_proxies`` entry (a configuration error).
    """
    if peer is None:
        return None
    if not forwarded_for:
        return _peer_text(peer)
    addr = _peer(peer)
    if addr is None:
        return None
    networks = _networks(tuple(trusted_proxies))
    if not _trusted(addr, networks):
        if warning is not None:
            warning.untrusted_forwarded()
        return str(addr)
    for hop in reversed(forwarded_for.split(",")):
        hop_addr = _parse(hop)
        if hop_addr is None:
            return str(addr)
        addr = hop_addr
        if not _trusted(addr, networks):
            return str(addr)
    return str(addr)
