"""Who a request comes from, for the per-address limit: the socket peer, or, when the peer is a
trusted proxy, the first untrusted address of ``X-Forwarded-For`` read from the right.

Reading from the right is what makes it spoof-resistant: each trusted proxy appends the address
it saw, so everything left of the rightmost untrusted entry was written by the client itself
and is never read. A malformed entry right of it falls back to the peer. IPv6 addresses are
limited per /64, the block one subscriber usually gets: one host can change its address within
it at will.
"""

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

IPV6_PREFIX = 64
UNKNOWN = "unknown"  # the key of a peer without an IP address (a Unix socket)


def trusted_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """The proxies' networks; ValueError naming the first one that is not a CIDR (host bits set
    included: ``10.0.0.1/8`` is more likely a typo than a wish)."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ip_network(cidr.strip()))
        except ValueError as exc:
            raise ValueError(f"trusted proxy {cidr!r} is not a CIDR (like 10.0.0.0/8): {exc}") from None
    return tuple(networks)


def _parse(text: str) -> Address | None:
    try:
        address = ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:192.0.2.1 is 192.0.2.1
    return address


def _trusted(address: Address, networks: Sequence[Network]) -> bool:
    return any(address in network for network in networks)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], networks: Sequence[Network]
) -> Address | None:
    """The client's address (None for a peer without one). ``forwarded_for``: every
    ``X-Forwarded-For`` header, in order (several count as one comma-separated list)."""
    address = _parse(peer) if peer else None
    if address is None or not _trusted(address, networks) or not forwarded_for:
        return address
    entries = [entry for header in forwarded_for for entry in header.split(",")]
    farthest = address
    for entry in reversed(entries):
        hop = _parse(entry)
        if hop is None:
            return address  # a proxy's entry we cannot read: nothing past it can be relied on
        if not _trusted(hop, networks):
            return hop  # what lies left of it the client wrote itself: never read
        farthest = hop
    # Every hop is a trusted proxy: the farthest one is as close to the client as we can get.
    return farthest


def limit_key(address: Address | None) -> str:
    """The bucket an address counts against: itself for IPv4, its /64 for IPv6."""
    if address is None:
        return UNKNOWN
    if isinstance(address, IPv6Address):
        return str(ip_network((address, IPV6_PREFIX), strict=False))
    return str(address)
