"""The client's IP address: the socket peer, or what trusted proxies forwarded.

``X-Forwarded-For`` can be written by anyone, so it is read only when the
socket peer is one of ``SLUICEGATE_TRUSTED_PROXIES``.  Then the list is walked
from the right (the hop nearest to the gateway) past every trusted proxy; the
first address that is not a trusted proxy is the client.  A malformed entry
stops the walk at the last address known good.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from quart import Request

from sluicegate.core.settings import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def request_client_ip(request: Request, settings: Settings) -> str:
    """The client IP of a Quart request under the process's settings."""
    return client_ip(
        request.remote_addr or "",
        request.headers.getlist("X-Forwarded-For"),
        settings.trusted_proxies,
    )


def client_ip(
    peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network]
) -> str:
    """The client address given the socket ``peer`` and X-Forwarded-For values."""
    if not trusted:
        return peer
    address = _parse(peer)
    if address is None or not _trusted(address, trusted):
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        forwarded = _parse(hop)
        if forwarded is None:
            break
        address = forwarded
        if not _trusted(address, trusted):
            break
    return str(address)


def _parse(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address in network for network in trusted)
