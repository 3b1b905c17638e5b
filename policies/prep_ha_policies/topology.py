"""Multi-AZ topology: three zones, an overlay address every table routes, APIs in each zone.

A multi-AZ pair survives the loss of a zone only if the loss of any one zone leaves two of
the three votes (node 1, node 2, the arbiter: one zone each), if the peer's address can follow
the validator into the other zone (an overlay IP outside the VPC, routed by
aws-vpc-move-ip in every table that must reach it), and if the survivor can still fence and
move that route (EC2 API endpoints in its own zone, a role that may replace only the
cluster's routes). Single-AZ stacks (one zone, the peer VIP a secondary IP) skip all of this
but the MainNet advisory, which says they lose the validator with their zone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping, Sequence

from pulumi_policy import (
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    StackValidationArgs,
    StackValidationPolicy,
)

from prep_ha.cluster.model import OVERLAY_AGENT

from .iam_doc import grants, has_tag_condition, is_allow, on_route_tables_only, statements
from .placement import (
    instance_zone,
    node_name,
    node_zones,
    service_enis,
    service_subnets,
    subnet_zone,
)
from .props import (
    CLUSTER_TAG,
    INSTANCE,
    LOAD_BALANCER,
    ROUTE,
    ROUTE_TABLE,
    ROUTE_TABLE_ASSOCIATION,
    SUBNET,
    TARGET_GROUP_ATTACHMENT,
    VPC,
    VPC_CIDR,
    VPC_ENDPOINT,
    UnknownValueError,
    arbiters,
    cluster_nodes,
    get,
    of_type,
    text,
)
from .refs import referenced
from .script import bootstraps
from .settings import is_mainnet
from .stonith import instance_roles, role_documents

# What a node calls in a failover: fence_aws and aws-vpc-move-ip (ec2), prep-ha-secret
# (secretsmanager), prep-ha-alert (sns, and monitoring for its metrics).
API_SERVICES = ("ec2", "secretsmanager", "sns", "monitoring")
ROUTE_ACTIONS = ("ec2:ReplaceRoute", "ec2:CreateRoute", "ec2:DeleteRoute")
_FIX_ZONES = ("Fix: list three availabilityZones in Pulumi.<stack>.yaml (node 1's, node 2's, "
              "the arbiter's) and let components/network.py place the subnets.")


def overlay_ips(resources: Sequence[PolicyResource]) -> dict[str, PolicyResource]:
    """The addresses the cluster script moves by route, and the Command carrying it."""
    found: dict[str, PolicyResource] = {}
    for boot in bootstraps(resources):
        for group in boot.model.groups if boot.model else ():
            for member in group.members:
                ip = dict(member.params).get("ip")
                if member.agent == OVERLAY_AGENT and ip:
                    found.setdefault(ip, boot.resource)
    return found


def is_multi_az(resources: Sequence[PolicyResource]) -> bool:
    """Instances in more than one zone, or a peer address moved by route (only multi-AZ
    needs one): then the layout must be the full three-zone one."""
    zones = {instance_zone(i, resources) for i in of_type(resources, INSTANCE)} - {None}
    return len(zones) > 1 or bool(overlay_ips(resources))


# --- 1. three zones ----------------------------------------------------------------------

def _placement_problems(resources: Sequence[PolicyResource]) -> Iterator[tuple[str, str]]:
    nodes = node_zones(resources)
    for node, zone in nodes:
        if zone is None:
            yield (f"Node {node_name(node)} has no availability zone this stack names (no "
                   "subnet of the stack behind its subnetId or service ENI)", node.urn)
    seen: dict[str, str] = {}
    for node, zone in nodes:
        if zone and zone in seen:
            yield (f"Nodes {seen[zone]} and {node_name(node)} are both in {zone}: the loss of "
                   "that zone takes the peer and its standby", node.urn)
        elif zone:
            seen[zone] = node_name(node)
    for arbiter in arbiters(resources):
        zone = instance_zone(arbiter, resources)
        if zone in seen:
            yield (f"The quorum arbiter is in {zone} with node {seen[zone]}: the loss of that "
                   "zone takes two of the three votes and the other node stops too", arbiter.urn)


def _validate_placement(args: StackValidationArgs, report: ReportViolation) -> None:
    if not is_multi_az(args.resources):
        return
    for problem, urn in _placement_problems(args.resources):
        report(f"{problem}. A multi-AZ pair puts node 1, node 2 and the arbiter in three "
               f"different zones. {_FIX_ZONES}", urn)


topology_multi_az_placement = StackValidationPolicy(
    name="topology-multi-az-placement",
    description="A stack spread over zones puts the two nodes in two zones and the quorum "
                "arbiter in a third.",
    validate=_validate_placement,
)


# --- 2. the overlay address ----------------------------------------------------------------

def _vpc_networks(resources: Sequence[PolicyResource]) -> list[ipaddress.IPv4Network]:
    blocks = [text(get(r.props, "cidrBlock")) for r in of_type(resources, VPC, VPC_CIDR)]
    return [ipaddress.ip_network(b, strict=False) for b in blocks if b]


def _is_host_route(cidr: object, ip: str) -> bool:
    try:
        return ipaddress.ip_network(str(cidr), strict=False) == ipaddress.ip_network(f"{ip}/32")
    except ValueError:
        return False


def _tables_of(subnet: PolicyResource, resources: Sequence[PolicyResource]) -> list[PolicyResource]:
    tables = of_type(resources, ROUTE_TABLE)
    return [t for a in of_type(resources, ROUTE_TABLE_ASSOCIATION)
            if any(s is subnet for s in referenced(a, "subnetId", [subnet]))
            for t in referenced(a, "routeTableId", tables)]


def _routes_ip(table: PolicyResource, ip: str, resources: Sequence[PolicyResource]) -> bool:
    inline = any(_is_host_route(get(r, "cidrBlock"), ip) for r in get(table.props, "routes") or ())
    return inline or any(
        _is_host_route(get(r.props, "destinationCidrBlock"), ip)
        and any(t is table for t in referenced(r, "routeTableId", [table]))
        for r in of_type(resources, ROUTE))


def _routed_subnets(resources: Sequence[PolicyResource]) -> list[tuple[PolicyResource, str]]:
    """The subnets the overlay IP must be routed from: the nodes' service subnets (replies,
    the peer's own traffic) and the subnets of the load balancer that forwards to it."""
    subnets = of_type(resources, SUBNET)
    found = [(s, f"node {node_name(n)}'s service subnet") for n in cluster_nodes(resources)
             for s in service_subnets(n, resources)]
    for lb in of_type(resources, LOAD_BALANCER):
        found += [(s, "a subnet of the load balancer")
                  for prop in ("subnets", "subnetMappings")
                  for s in referenced(lb, prop, subnets)]
    return [(s, why) for i, (s, why) in enumerate(found)
            if not any(s is t for t, _ in found[:i])]


def _route_problems(ip: str, resources: Sequence[PolicyResource]) -> Iterator[tuple[str, str]]:
    for subnet, why in _routed_subnets(resources):
        tables = _tables_of(subnet, resources)
        if not tables:
            yield (f"{why} ({subnet.name}) has no route table of this stack, so nothing can "
                   f"route {ip}/32 there", subnet.urn)
        for table in tables:
            if not _routes_ip(table, ip, resources):
                yield (f"Route table {table.name} ({why}) has no route to {ip}/32: "
                       "aws-vpc-move-ip replaces that route, it cannot create it, and without "
                       "it the peer is unreachable from there", table.urn)


def _forwarding_problems(ip: str, resources: Sequence[PolicyResource]
                         ) -> Iterator[tuple[str, str]]:
    for node in cluster_nodes(resources):
        for eni in service_enis(node, resources) or [node]:
            if str(get(eni.props, "sourceDestCheck")).lower() != "false":
                yield (f"Node {node_name(node)}'s service interface {eni.name} checks "
                       f"source/destination, so EC2 drops the packets for {ip}, which is not "
                       "its own address", eni.urn)
    for attachment in of_type(resources, TARGET_GROUP_ATTACHMENT):
        if get(attachment.props, "targetId") == ip and \
                get(attachment.props, "availabilityZone") != "all":
            yield (f"Target {ip} of {attachment.name} has availabilityZone "
                   f"{get(attachment.props, 'availabilityZone') or '(unset)'}: an NLB takes an "
                   "IP target outside its VPC only with \"all\"", attachment.urn)


def _validate_overlay(args: StackValidationArgs, report: ReportViolation) -> None:
    fix = ("Fix: keep icon-prep-ha:peerVip outside vpcCidr and declare the routes with "
           "components/overlay.py and the service ENIs with components/node.py.")
    for ip, command in overlay_ips(args.resources).items():
        for net in _vpc_networks(args.resources):
            if ipaddress.ip_address(ip) in net:
                report(f"The overlay IP {ip} is inside the VPC's {net}: the VPC's local route "
                       "delivers it to a subnet, so to one zone, not to the node holding the "
                       f"peer. {fix}", command.urn)
        for problem, urn in [*_route_problems(ip, args.resources),
                             *_forwarding_problems(ip, args.resources)]:
            report(f"{problem}. {fix}", urn)


topology_overlay_routing = StackValidationPolicy(
    name="topology-overlay-routing",
    description="An aws-vpc-move-ip address lies outside the VPC, is routed in every table of "
                "the nodes' service subnets and the NLB's subnets, reaches service ENIs without "
                "source/destination check, and is an NLB target in zone \"all\".",
    validate=_validate_overlay,
)


# --- 3. API endpoints in each node's zone ------------------------------------------------------

def _endpoint_zones(service: str, resources: Sequence[PolicyResource]
                    ) -> Mapping[str, set[str | None]]:
    """Interface endpoints of `service`: urn -> the zones of their subnets."""
    subnets = of_type(resources, SUBNET)
    return {e.urn: {subnet_zone(s) for s in referenced(e, "subnetIds", subnets)}
            for e in of_type(resources, VPC_ENDPOINT)
            if get(e.props, "vpcEndpointType") == "Interface"
            and text(get(e.props, "serviceName")).endswith(f".{service}")}


def _validate_endpoints(args: StackValidationArgs, report: ReportViolation) -> None:
    if not is_multi_az(args.resources):
        return
    zones = {z for _, z in node_zones(args.resources) if z}
    fix = ("Fix: give the endpoint a subnet in each node's zone (both zones' service subnets, "
           "components/network.py).")
    for service in API_SERVICES:
        endpoints = _endpoint_zones(service, args.resources)
        if not endpoints:
            report(f"No Interface endpoint for {service}: a node reaches that API through its "
                   f"zone's NAT, and a fence or route move then fails with the NAT. {fix}")
        covered = set().union(*endpoints.values()) if endpoints else set()
        for zone in sorted(zones - covered) if endpoints else ():
            report(f"No {service} Interface endpoint has a subnet in {zone}: the node there "
                   "calls the API across zones, so the loss of the other zone cuts it off "
                   f"from the API just when it must fence or take over. {fix}",
                   next(iter(endpoints)))


topology_api_endpoints = StackValidationPolicy(
    name="topology-api-endpoints-per-zone",
    description="Multi-AZ: Interface endpoints for " + ", ".join(API_SERVICES) + " with a "
                "subnet in each node's zone.",
    validate=_validate_endpoints,
)


# --- 4. who may move routes ----------------------------------------------------------------

def _route_grant_problems(role: PolicyResource, resources: Sequence[PolicyResource]
                          ) -> Iterator[str]:
    for stmt in (s for doc in role_documents(role, resources) for s in statements(doc)):
        actions = [a for a in ROUTE_ACTIONS if is_allow(stmt) and grants(stmt, a)]
        if actions and not (on_route_tables_only(stmt) and has_tag_condition(stmt, CLUSTER_TAG)):
            yield (f"allows {', '.join(actions)} on {stmt.get('Resource', '(NotResource)')} "
                   f"without both route-table ARNs and an aws:ResourceTag/{CLUSTER_TAG} "
                   "condition")


def _validate_route_iam(args: StackValidationArgs, report: ReportViolation) -> None:
    pending: list[UnknownValueError] = []
    judged: list[PolicyResource] = []
    for node in cluster_nodes(args.resources):
        try:
            roles = [r for r in instance_roles(node, args.resources)
                     if not any(r is j for j in judged)]
            problems = {role.urn: list(_route_grant_problems(role, args.resources))
                        for role in roles}
        except UnknownValueError as e:
            pending.append(e)
            continue
        judged += roles
        for urn, found in problems.items():
            for problem in found:
                report(f"The node role {problem}: a node could redirect any route of the "
                       "account, e.g. another VPC's traffic. Fix: grant ec2:ReplaceRoute on "
                       "route-table/* conditioned on the cluster tag (components/iam.py "
                       "fencing_and_vip_policy).", urn)
    if pending:
        raise pending[0]


topology_route_iam_scope = StackValidationPolicy(
    name="topology-route-iam-scope",
    description="The nodes' roles may replace, create or delete routes only in route tables "
                "carrying the cluster tag.",
    validate=_validate_route_iam,
)


# --- 5. MainNet in one zone (advisory) ---------------------------------------------------

def _validate_mainnet_zones(args: StackValidationArgs, report: ReportViolation) -> None:
    # A multi-AZ stack with both nodes in one zone is topology-multi-az-placement's, mandatory.
    if not is_mainnet(args.get_config()) or is_multi_az(args.resources):
        return
    nodes = node_zones(args.resources)
    zones = {z for _, z in nodes}
    if len(nodes) == 2 and len(zones) == 1 and None not in zones:
        report(f"Both MainNet nodes are in {zones.pop()}: an outage of that one zone stops "
               "the validator until it returns. " + _FIX_ZONES, nodes[-1][0].urn)


topology_mainnet_multi_az = StackValidationPolicy(
    name="topology-mainnet-multi-az",
    description="Advisory: a MainNet pair spans three zones rather than one.",
    validate=_validate_mainnet_zones,
    config_schema=PolicyConfigSchema(properties={"iconNetwork": {"type": "string"}}),
)
