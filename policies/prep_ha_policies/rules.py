"""Security group ingress, whichever of the three AWS resource types declares it."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .props import SECURITY_GROUP, SECURITY_GROUP_RULE, VPC_INGRESS_RULE, get

_PROTOCOLS = {"6": "tcp", "17": "udp", "-1": "all", "all": "all"}


@dataclass(frozen=True)
class Ingress:
    protocol: str  # tcp, udp, all, or another protocol's name/number
    from_port: int | None
    to_port: int | None
    cidrs: tuple[str, ...]

    def reaches(self, protocol: str, port_from: int, port_to: int) -> bool:
        """Whether this rule admits `protocol` traffic to any port in the range."""
        if self.protocol == "all":
            return True
        if self.protocol != protocol:
            return False
        # Missing or -1 ports on a tcp/udp rule mean every port.
        low = 0 if self.from_port in (None, -1) else self.from_port
        high = 65535 if self.to_port in (None, -1) else self.to_port
        return low <= port_to and high >= port_from


def _port(value: Any) -> int | None:
    return None if value is None else int(value)


def _rule(entry: Mapping[str, Any], protocol_key: str, cidr_keys: tuple[str, ...]) -> Ingress:
    protocol = str(get(entry, protocol_key) or "all").lower()
    cidrs: list[str] = []
    for key in cidr_keys:
        value = get(entry, key)
        cidrs += [value] if isinstance(value, str) else [str(v) for v in value or ()]
    return Ingress(_PROTOCOLS.get(protocol, protocol), _port(get(entry, "fromPort")),
                   _port(get(entry, "toPort")), tuple(cidrs))


def ingress_rules(resource_type: str, props: Mapping[str, Any]) -> list[Ingress]:
    blocks = ("cidrBlocks", "ipv6CidrBlocks")
    if resource_type == SECURITY_GROUP:
        return [_rule(e, "protocol", blocks) for e in get(props, "ingress") or ()]
    if resource_type == SECURITY_GROUP_RULE and get(props, "type") == "ingress":
        return [_rule(props, "protocol", blocks)]
    if resource_type == VPC_INGRESS_RULE:
        return [_rule(props, "ipProtocol", ("cidrIpv4", "cidrIpv6"))]
    return []


def network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr, strict=False)


def is_internet(cidr: str) -> bool:
    """0.0.0.0/0, ::/0, or a block nearly as wide (0.0.0.0/1 twice is the whole internet too)."""
    net = network(cidr)
    return net.prefixlen < (8 if net.version == 4 else 16)
