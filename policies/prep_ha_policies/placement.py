"""Where the stack puts its instances: each one's service network interface, subnet and zone.

An instance names its zone only through what it is launched into: its own subnetId, or the
network interface at device index 0 (the nodes' service ENI), whose subnet has the zone.
"""

from __future__ import annotations

from collections.abc import Sequence

from pulumi_policy import PolicyResource

from .props import NETWORK_INTERFACE, NODE_TAG, SUBNET, cluster_nodes, get, of_type, text
from .refs import referenced


def _unique(found: list[PolicyResource]) -> list[PolicyResource]:
    return [r for i, r in enumerate(found) if not any(r is f for f in found[:i])]


def service_enis(instance: PolicyResource,
                 resources: Sequence[PolicyResource]) -> list[PolicyResource]:
    """The network interface the instance is launched with (device index 0)."""
    enis = of_type(resources, NETWORK_INTERFACE)
    found = referenced(instance, "primaryNetworkInterface", enis, "networkInterfaceId")
    for i, nic in enumerate(get(instance.props, "networkInterfaces") or ()):
        index = get(nic, "deviceIndex")
        if index is not None and float(index) == 0:
            found += referenced(instance, "networkInterfaces", enis, i, "networkInterfaceId")
    return _unique(found)


def service_subnets(instance: PolicyResource,
                    resources: Sequence[PolicyResource]) -> list[PolicyResource]:
    """The subnet the instance's primary address is in (its own, or its service ENI's)."""
    subnets = of_type(resources, SUBNET)
    found = referenced(instance, "subnetId", subnets)
    for eni in service_enis(instance, resources):
        found += referenced(eni, "subnetId", subnets)
    return _unique(found)


def subnet_zone(subnet: PolicyResource) -> str | None:
    return text(get(subnet.props, "availabilityZone")) or \
        text(get(subnet.props, "availabilityZoneId")) or None


def instance_zone(instance: PolicyResource, resources: Sequence[PolicyResource]) -> str | None:
    """The instance's availability zone, or None when nothing in the stack names it (or its
    subnets disagree, which AWS would refuse)."""
    own = text(get(instance.props, "availabilityZone"))
    zones = {own} if own else {z for s in service_subnets(instance, resources)
                               if (z := subnet_zone(s))}
    return zones.pop() if len(zones) == 1 else None


def node_zones(resources: Sequence[PolicyResource]) -> list[tuple[PolicyResource, str | None]]:
    return [(n, instance_zone(n, resources)) for n in cluster_nodes(resources)]


def node_name(instance: PolicyResource) -> str:
    return text(get(instance.props, "tags", NODE_TAG)) or instance.name
