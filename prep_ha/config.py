"""Stack configuration: read once, validated into one typed object before any resource exists.

Every rule raises ConfigError naming the key, what is wrong and how to fix it, so that a bad
`Pulumi.<stack>.yaml` fails `pulumi preview` with nothing created.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prep_ha.release import DEBIAN_VERSION

NAMESPACE = "icon-prep-ha"
# The ICON node image, and the tags config admits for it (as Docker does): the roll and the
# node's prep-ha-image accept only `ICON_IMAGE_REPO:tag` references of this shape.
ICON_IMAGE_REPO = "iconloop/icon2-node"
ICON_IMAGE_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"

# ICON networks the icon2-node image knows (its SERVICE variable) and what they are for.
ICON_NETWORKS = {
    "MainNet": "mainnet",
    "LisbonNet": "testnet",
    "BerlinNet": "testnet",
    "SejongNet": "testnet",
}

# Config keys this project reads; anything else in the namespace is a typo worth reporting.
KNOWN_KEYS = (
    "iconNetwork",
    "availabilityZone",
    "availabilityZones",
    "vpcId",
    "vpcCidr",
    "serviceSubnetCidr",
    "heartbeatSubnetCidr",
    "managementSubnetCidr",
    "publicSubnetCidr",
    "adminCidrs",
    "managementAccess",
    "instanceType",
    "rootVolumeGiB",
    "dataVolumeGiB",
    "amiId",
    "iconImageTag",
    "clusterName",
    "peerVip",
    "citizenVip",
    "terminationProtection",
    "quorumArbiter",
    "arbiterSubnetCidr",
    "arbiterInstanceType",
    "corosyncTokenMs",
    "alertEmail",
    "chainSync",
    "keystore",
    "keystorePassword",
)
SECRET_KEYS = ("keystore", "keystorePassword")

# Sizes of the current x86/Graviton general families, in vCPUs; memory per vCPU by family letter.
_SIZE_VCPUS = {
    "large": 2, "xlarge": 4, "2xlarge": 8, "4xlarge": 16, "8xlarge": 32,
    "12xlarge": 48, "16xlarge": 64, "24xlarge": 96,
}
_GIB_PER_VCPU = {"m": 4, "c": 2, "r": 8}
# ICON's P-Rep guidance for MainNet: at least 8 vCPUs and 32 GiB, not burstable.
MAINNET_MIN_VCPUS = 8
MAINNET_MIN_GIB = 32
MAINNET_MIN_DATA_GIB = 500
MIN_DATA_GIB = 100
# The widest admin network SSH admits (pcsd admits none: admins run pcs over SSH). An office
# or VPN egress is a few addresses, a /24 at most; a wider block is a provider's network,
# shared with strangers who then get to try the validator's SSH.
MAX_ADMIN_PREFIX = 24
# Corosync token (ms): how long a node may be silent before it is declared lost. Healthy
# cloud guests pause (host maintenance, live updates, EBS and scheduling stalls): AWS's RHEL
# HANA guide sets 15 s, Azure 30 s, Google Cloud 20 s. 12 s with the model's knet settings
# rides out a 10 s freeze of either node and still lets a hung node's takeover finish in
# about 20 s (README, "Token and consensus", measured by `lab bench`). MainNet may not go
# lower: there a false detection fences the healthy active validator. Below 3 s (corosync's
# own default) a stall of 2 s already fences a node.
DEFAULT_TOKEN_MS = 12000
MIN_TOKEN_MS = 3000
MAINNET_MIN_TOKEN_MS = 12000
MAX_TOKEN_MS = 30000
DEFAULT_ARBITER_TYPE = "t4g.micro"
# How a node fills a freshly created data volume: from ICON's chain snapshot (the image's
# FASTEST_START) or block by block from genesis. A volume that holds a chain is never refilled.
CHAIN_SYNC = ("snapshot", "genesis")
# One mailbox, as SNS takes it: no display name, no list (subscribe a team alias instead).
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")


class ConfigError(ValueError):
    """A stack config value that cannot be deployed; says which key, what is wrong, the fix."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key = key
        self.problem = problem
        self.fix = fix
        super().__init__(f"{NAMESPACE}:{key}: {problem}. Fix: {fix}")


@dataclass(frozen=True)
class InstanceSize:
    vcpus: int
    memory_gib: int
    burstable: bool


@dataclass(frozen=True)
class Zone:
    """An availability zone and the subnets a node has there (single-AZ: both nodes')."""

    name: str
    service_cidr: str
    heartbeat_cidr: str
    management_cidr: str
    public_cidr: str


@dataclass(frozen=True)
class NodeAddresses:
    """A node's fixed private addresses: fixed so the cluster model is known at preview."""

    service_ip: str
    heartbeat_ip: str
    management_ip: str
    zone: Zone


@dataclass(frozen=True)
class StackConfig:
    stack: str
    region: str
    icon_network: str
    # One zone: both nodes and the arbiter there (the VIPs are secondary IPs, awsvip). Two:
    # node n in zones[n - 1], the arbiter in arbiter_zone, the peer's address an overlay IP
    # moved by route (aws-vpc-move-ip). README: "One AZ or three".
    zones: tuple[Zone, ...]
    arbiter_zone: str
    vpc_id: str | None
    vpc_cidr: str
    admin_cidrs: tuple[str, ...]
    management_access: str
    instance_type: str
    root_volume_gib: int
    data_volume_gib: int
    ami_id: str | None
    icon_image_tag: str
    cluster_name: str
    # Single-AZ: a secondary IP of the service subnet. Multi-AZ: the overlay IP, outside the VPC.
    peer_vip: str
    # Multi-AZ: None, the citizen serves nothing inbound and keeps its node's own address.
    citizen_vip: str | None
    termination_protection: bool
    quorum_arbiter: bool
    arbiter_subnet_cidr: str
    arbiter_instance_type: str
    corosync_token_ms: int
    nodes: tuple[NodeAddresses, NodeAddresses] = field(repr=False)
    # Subscribed to the alert topic (components/alerts.py); None: the topic has no subscriber.
    alert_email: str | None = None
    chain_sync: str = "snapshot"  # one of CHAIN_SYNC

    @property
    def multi_az(self) -> bool:
        return len(self.zones) > 1

    @property
    def availability_zone(self) -> str:
        """Node 1's zone (single-AZ: the stack's)."""
        return self.zones[0].name

    # Node 1's subnets; single-AZ: the stack's. Multi-AZ code reads each node's `zone`.
    @property
    def service_subnet_cidr(self) -> str:
        return self.zones[0].service_cidr

    @property
    def heartbeat_subnet_cidr(self) -> str:
        return self.zones[0].heartbeat_cidr

    @property
    def management_subnet_cidr(self) -> str:
        return self.zones[0].management_cidr

    @property
    def public_subnet_cidr(self) -> str:
        return self.zones[0].public_cidr

    @property
    def icon_image(self) -> str:
        """What the nodes run; `pulumi up` rolls a change through the pair (prep_ha/ops)."""
        return f"{ICON_IMAGE_REPO}:{self.icon_image_tag}"

    @property
    def arbiter_ip(self) -> str:
        """The arbiter's fixed address (.10 of its subnet): known at preview, like the nodes'."""
        return _host(ipaddress.ip_network(self.arbiter_subnet_cidr), 10)

    @property
    def arbiter_name(self) -> str:
        return f"{self.cluster_name}-arbiter"

    @property
    def is_mainnet(self) -> bool:
        return ICON_NETWORKS[self.icon_network] == "mainnet"

    @property
    def service_prefix_len(self) -> int:
        return ipaddress.ip_network(self.service_subnet_cidr).prefixlen

    @property
    def node_names(self) -> tuple[str, str]:
        return (f"{self.cluster_name}-1", f"{self.cluster_name}-2")

    # Secrets Manager names: the nodes fetch these by name with their instance role.
    @property
    def hacluster_secret_name(self) -> str:
        return f"{self.cluster_name}/hacluster-password"

    @property
    def keystore_secret_name(self) -> str:
        return f"{self.cluster_name}/keystore"

    @property
    def keystore_password_secret_name(self) -> str:
        return f"{self.cluster_name}/keystore-password"


def instance_size(instance_type: str) -> InstanceSize:
    """vCPUs and memory of an EC2 instance type, derived from its family letter and size."""
    m = re.fullmatch(r"([a-z]+)(\d+)([a-z-]*)\.([a-z0-9]+)", instance_type)
    if not m:
        raise ConfigError(
            "instanceType", f"{instance_type!r} is not an EC2 instance type",
            "use a type such as m6i.2xlarge",
        )
    family, size = m.group(1), m.group(4)
    if family == "t":
        vcpus = {"medium": 2, "large": 2, "xlarge": 4, "2xlarge": 8}.get(size)
        gib = {"medium": 4, "large": 8, "xlarge": 16, "2xlarge": 32}.get(size)
        if vcpus is None or gib is None:
            raise ConfigError("instanceType", f"unknown size {size!r}", "use t3.large or larger")
        return InstanceSize(vcpus, gib, burstable=True)
    if family[0] not in _GIB_PER_VCPU or size not in _SIZE_VCPUS:
        raise ConfigError(
            "instanceType",
            f"{instance_type!r} is not a general purpose (m), compute (c) or memory (r) type "
            "of size large or bigger",
            "use an m, c or r type such as m6i.2xlarge",
        )
    vcpus = _SIZE_VCPUS[size]
    return InstanceSize(vcpus, vcpus * _GIB_PER_VCPU[family[0]], burstable=False)


def _network(key: str, value: Any) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as e:
        raise ConfigError(key, f"{value!r} is not an IPv4 CIDR block ({e})",
                          "write a network address with its prefix, e.g. 10.40.1.0/24") from None
    return net


def _subnet(key: str, value: Any, vpc: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    net = _network(key, value)
    if not net.subnet_of(vpc):
        raise ConfigError(key, f"{net} is not inside the VPC block {vpc}",
                          "choose a block inside vpcCidr")
    if not 16 <= net.prefixlen <= 28:
        raise ConfigError(key, f"/{net.prefixlen} is outside the /16../28 AWS allows for a subnet",
                          "use a prefix length between 16 and 28 (a /24 is plenty)")
    return net


def _host(net: ipaddress.IPv4Network, offset: int) -> str:
    return str(net.network_address + offset)


def _usable(key: str, value: Any, net: ipaddress.IPv4Network, taken: set[str]) -> str:
    try:
        ip = ipaddress.IPv4Address(str(value))
    except ValueError:
        raise ConfigError(key, f"{value!r} is not an IPv4 address",
                          f"use a free address inside {net}") from None
    # AWS reserves the first four addresses of a subnet and the last one.
    if ip not in net or int(ip) - int(net.network_address) < 4 or ip == net.broadcast_address:
        raise ConfigError(key, f"{ip} is not a usable address of the service subnet {net}",
                          f"use an address inside {net} other than the first four and the last")
    if str(ip) in taken:
        raise ConfigError(key, f"{ip} is already used by a node or the other VIP",
                          "give each VIP its own free address")
    return str(ip)


def _require(raw: Mapping[str, Any], key: str, fix: str) -> Any:
    value = raw.get(key)
    if value in (None, ""):
        raise ConfigError(key, "is not set", fix)
    return value


def _int(raw: Mapping[str, Any], key: str, default: int, minimum: int, fix: str) -> int:
    value = raw.get(key, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"{value!r} is not a whole number", fix) from None
    if number < minimum:
        raise ConfigError(key, f"{number} is below the minimum of {minimum}", fix)
    return number


def _bool(raw: Mapping[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise ConfigError(key, f"{value!r} is not true or false", "write true or false")


def _email(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _EMAIL.fullmatch(value):
        raise ConfigError(key, f"{value!r} is not one email address",
                          "write a single address such as ops@example.com (for several people, "
                          "a list address), or remove the key")
    return value


# Each subnet key: its default block in node 1's zone (10.40.N.0/24) and node 2's (N + 10).
_ZONE_SUBNETS = {"serviceSubnetCidr": 1, "heartbeatSubnetCidr": 2, "managementSubnetCidr": 3,
                 "publicSubnetCidr": 0}
# Where a Network Load Balancer takes an IP target outside its VPC (the overlay IP).
NLB_OUTSIDE_RANGES = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"))
_ZONES_FIX = ("set availabilityZone for a single-AZ pair, or availabilityZones to three zones: "
              "node 1's, node 2's and the arbiter's")


def _zone_names(raw: Mapping[str, Any], region: str) -> tuple[list[str], str]:
    """The nodes' zones (one or two) and the arbiter's."""
    one, many = raw.get("availabilityZone"), raw.get("availabilityZones")
    if one not in (None, "") and many not in (None, ""):
        raise ConfigError("availabilityZones", "is set together with availabilityZone",
                          f"keep one: {_ZONES_FIX}")
    if many in (None, ""):
        key = "availabilityZone"
        names = [str(_require(raw, key, f"{_ZONES_FIX}, e.g. {region}a"))]
    else:
        key = "availabilityZones"
        if not isinstance(many, list | tuple) or len(many) not in (1, 3):
            raise ConfigError(key, f"{many!r} is not a list of one or three zones",
                              f"{_ZONES_FIX}, e.g. [{region}a, {region}b, {region}c]")
        names = [str(z) for z in many]
    for name in names:
        if not re.fullmatch(re.escape(region) + r"[a-z]", name):
            raise ConfigError(key, f"{name!r} is not a zone of region {region}",
                              f"use zone names such as {region}a")
    if len(names) == 1:
        return names, names[0]
    node1, node2, arbiter = names
    if node1 == node2:
        raise ConfigError(key, f"both nodes are in {node1}",
                          "put the nodes in two zones: the loss of one must leave the other")
    if arbiter in (node1, node2):
        raise ConfigError(key, f"the arbiter's zone {arbiter} is a node's zone",
                          "put the arbiter in a third zone: its vote must survive the loss of "
                          "either node's zone")
    return [node1, node2], arbiter


def _zones(raw: Mapping[str, Any], names: list[str],
           vpc: ipaddress.IPv4Network) -> tuple[Zone, ...]:
    """Each node zone's four subnets: a block per key (single-AZ) or a list of one per zone."""
    blocks: dict[str, list[ipaddress.IPv4Network]] = {}
    for key, octet in _ZONE_SUBNETS.items():
        value = raw.get(key)
        defaults = [f"10.40.{octet + 10 * i}.0/24" for i in range(len(names))]
        if len(names) == 1:
            if isinstance(value, list | tuple):
                if len(value) != 1:
                    raise ConfigError(key, "lists several blocks for a single-AZ stack",
                                      "give one block, or three availabilityZones")
                value = value[0]
            values = [value if value not in (None, "") else defaults[0]]
        elif value in (None, ""):
            values = defaults
        elif not isinstance(value, list | tuple) or len(value) != len(names):
            raise ConfigError(key, f"{value!r} is not a list of one block per node zone",
                              f"list node 1's zone's block, then node 2's, e.g. {defaults}")
        else:
            values = list(value)
        blocks[key] = [_subnet(key, v, vpc) for v in values]
    zones = tuple(Zone(name, *(str(blocks[k][i]) for k in _ZONE_SUBNETS))
                  for i, name in enumerate(names))
    items = _zone_subnet_items(zones)
    for i, (a, net_a) in enumerate(items):
        for b, net_b in items[i + 1:]:
            if net_a.overlaps(net_b):
                raise ConfigError(b, f"{net_b} overlaps {a} {net_a}",
                                  "give every subnet a disjoint block")
    return zones


def _zone_subnet_items(zones: tuple[Zone, ...]) -> list[tuple[str, ipaddress.IPv4Network]]:
    return [(key, ipaddress.ip_network(cidr)) for zone in zones
            for key, cidr in zip(_ZONE_SUBNETS, (zone.service_cidr, zone.heartbeat_cidr,
                                                 zone.management_cidr, zone.public_cidr),
                                 strict=True)]


def _node_addresses(zone: Zone, offset: int) -> NodeAddresses:
    hosts = (_host(ipaddress.ip_network(c), offset)
             for c in (zone.service_cidr, zone.heartbeat_cidr, zone.management_cidr))
    return NodeAddresses(*hosts, zone=zone)


def _vips(raw: Mapping[str, Any], zones: tuple[Zone, ...], nodes: tuple[NodeAddresses, ...],
          vpc: ipaddress.IPv4Network) -> tuple[str, str | None]:
    """Single-AZ: two secondary IPs of the service subnet (.100, .101 by default). Multi-AZ:
    the peer's overlay IP, and no citizen address."""
    taken = {n.service_ip for n in nodes}
    if len(zones) == 1:
        service = ipaddress.ip_network(zones[0].service_cidr)
        peer = _usable("peerVip", raw.get("peerVip", _host(service, 100)), service, taken)
        citizen = _usable("citizenVip", raw.get("citizenVip", _host(service, 101)), service,
                          taken | {peer})
        return peer, citizen
    if raw.get("citizenVip") not in (None, ""):
        raise ConfigError("citizenVip", "is set, but a multi-AZ citizen has no address of its "
                          "own (it serves nothing inbound; it keeps its node's address)",
                          "remove the key")
    fix = ("set an address outside vpcCidr in 10/8, 172.16/12, 192.168/16 or 100.64/10 that "
           "no network the VPC reaches uses, e.g. peerVip: 10.255.40.100")
    value = _require(raw, "peerVip", fix + " (multi-AZ moves the peer's address by route)")
    try:
        ip = ipaddress.IPv4Address(str(value))
    except ValueError:
        raise ConfigError("peerVip", f"{value!r} is not an IPv4 address", fix) from None
    if ip in vpc:
        raise ConfigError("peerVip", f"{ip} is inside vpcCidr {vpc}: multi-AZ routes it to the "
                          "active node, and a VPC's own addresses cannot be routed", fix)
    if not any(ip in net for net in NLB_OUTSIDE_RANGES):
        raise ConfigError("peerVip", f"{ip} is not in a private range the Network Load "
                          "Balancer accepts as a target outside its VPC", fix)
    return str(ip), None


def load_config(raw: Mapping[str, Any], *, stack: str, region: str | None) -> StackConfig:
    """Validate the stack's `icon-prep-ha:*` values (keys without namespace) into a StackConfig."""
    unknown = sorted(set(raw) - set(KNOWN_KEYS))
    if unknown:
        raise ConfigError(unknown[0], "is not a setting of this project",
                          f"remove it or correct the spelling; known keys: {', '.join(KNOWN_KEYS)}")
    if not region:
        raise ConfigError("aws:region", "is not set",
                          "run `pulumi config set aws:region <region>`")

    network = _require(raw, "iconNetwork", f"set one of {', '.join(ICON_NETWORKS)}")
    if network not in ICON_NETWORKS:
        raise ConfigError("iconNetwork", f"{network!r} is not an ICON network",
                          f"use one of {', '.join(ICON_NETWORKS)}")
    mainnet = ICON_NETWORKS[network] == "mainnet"

    vpc_id = raw.get("vpcId") or None
    if vpc_id is not None and not re.fullmatch(r"vpc-[0-9a-f]{8,17}", str(vpc_id)):
        raise ConfigError("vpcId", f"{vpc_id!r} is not a VPC id",
                          "use an id like vpc-0abc12345def67890, or remove it to create a VPC")
    vpc = _network("vpcCidr", raw.get("vpcCidr", "10.40.0.0/16"))
    node_zones, arbiter_zone = _zone_names(raw, region)
    zones = _zones(raw, node_zones, vpc)

    admin = raw.get("adminCidrs")
    if not admin or not isinstance(admin, list | tuple):
        raise ConfigError("adminCidrs", "is not set (a list of the networks SSH admits)",
                          "set it to your office or VPN egress, e.g. [\"203.0.113.7/32\"]")
    admin_cidrs: list[str] = []
    for value in admin:
        net = _network("adminCidrs", value)
        if net.prefixlen == 0:
            raise ConfigError("adminCidrs", f"{net} would open SSH to the whole internet",
                              "list only your own egress addresses, e.g. 203.0.113.7/32")
        if net.prefixlen < MAX_ADMIN_PREFIX:
            raise ConfigError("adminCidrs", f"{net} is wider than a /{MAX_ADMIN_PREFIX}",
                              "list only the networks your operators connect from (an office "
                              f"or VPN egress fits in a /{MAX_ADMIN_PREFIX}; list several)")
        admin_cidrs.append(str(net))

    access = raw.get("managementAccess", "public")
    if access not in ("public", "private"):
        raise ConfigError("managementAccess", f"{access!r} is neither public nor private",
                          "use public (Elastic IP on the management ENI, admin CIDRs only) or "
                          "private (you reach the VPC by VPN or peering)")
    if vpc_id is not None and access == "public":
        raise ConfigError("managementAccess", "public needs the internet gateway this project "
                          "creates, but vpcId points at an existing VPC",
                          "set managementAccess to private, or remove vpcId")

    instance_type = str(_require(raw, "instanceType", "set e.g. m6i.2xlarge"))
    size = instance_size(instance_type)
    if mainnet and (size.burstable or size.vcpus < MAINNET_MIN_VCPUS
                    or size.memory_gib < MAINNET_MIN_GIB):
        raise ConfigError("instanceType",
                          f"{instance_type} ({size.vcpus} vCPU, {size.memory_gib} GiB"
                          f"{', burstable' if size.burstable else ''}) is too small for a MainNet "
                          "P-Rep", f"use a non-burstable type with at least {MAINNET_MIN_VCPUS} "
                          f"vCPUs and {MAINNET_MIN_GIB} GiB, e.g. m6i.2xlarge")

    root_gib = _int(raw, "rootVolumeGiB", 30, 20, "use at least 20 GiB for the OS and Docker")
    min_data = MAINNET_MIN_DATA_GIB if mainnet else MIN_DATA_GIB
    data_gib = _int(raw, "dataVolumeGiB", min_data, min_data,
                    f"the chain needs at least {min_data} GiB on {network}")

    ami_id = raw.get("amiId") or None
    if ami_id is not None and not re.fullmatch(r"ami-[0-9a-f]{8,17}", str(ami_id)):
        raise ConfigError("amiId", f"{ami_id!r} is not an AMI id",
                          "use an id like ami-0abc12345def67890, or remove it for the Debian "
                          f"{DEBIAN_VERSION} default")

    tag = str(_require(raw, "iconImageTag", "pin a release of iconloop/icon2-node, e.g. v1.4.6"))
    if not re.fullmatch(ICON_IMAGE_TAG, tag):
        raise ConfigError("iconImageTag", f"{tag!r} is not a Docker image tag",
                          "use a release tag such as v1.4.6")
    if mainnet and tag == "latest":
        raise ConfigError("iconImageTag", "latest on MainNet lets a node restart into an "
                          "untested release", "pin the release you validated, e.g. v1.4.6")

    cluster_name = str(raw.get("clusterName", f"prep-ha-{stack}"))
    if not re.fullmatch(r"[a-z][a-z0-9-]{2,30}", cluster_name):
        raise ConfigError("clusterName", f"{cluster_name!r} is not 3-31 characters of a-z, 0-9 "
                          "and '-' starting with a letter", "use a name like prep-ha-mainnet")

    # Node n takes host .(10+n) in each subnet of its zone.
    nodes = tuple(_node_addresses(zones[min(n, len(zones)) - 1], 10 + n) for n in (1, 2))
    peer_vip, citizen_vip = _vips(raw, zones, nodes, vpc)

    arbiter = _bool(raw, "quorumArbiter", True)
    if len(zones) > 1 and not arbiter:
        raise ConfigError("quorumArbiter", "is false, but two node zones need the arbiter in a "
                          "third: without its vote the zone left after an AZ loss has no quorum",
                          "remove the key (or use a single availabilityZone)")
    arbiter_net = _subnet("arbiterSubnetCidr",
                          raw.get("arbiterSubnetCidr", str(list(vpc.subnets(new_prefix=24))[4])
                              if vpc.prefixlen <= 21 else None), vpc)
    for key, net in _zone_subnet_items(zones):
        if arbiter_net.overlaps(net):
            raise ConfigError("arbiterSubnetCidr", f"{arbiter_net} overlaps {key} {net}",
                              "give the arbiter a block of its own inside vpcCidr")
    arbiter_type = str(raw.get("arbiterInstanceType", DEFAULT_ARBITER_TYPE))
    if not re.fullmatch(r"[a-z]+\d+[a-z-]*\.[a-z0-9]+", arbiter_type):
        raise ConfigError("arbiterInstanceType", f"{arbiter_type!r} is not an EC2 instance type",
                          f"use a small type such as {DEFAULT_ARBITER_TYPE}")
    token_floor = MAINNET_MIN_TOKEN_MS if mainnet else MIN_TOKEN_MS
    token = _int(raw, "corosyncTokenMs", DEFAULT_TOKEN_MS, token_floor,
                 f"use at least {token_floor} ms on {network} (see README: token and consensus)")
    if token > MAX_TOKEN_MS:
        raise ConfigError("corosyncTokenMs", f"{token} ms leaves the validator without a leader "
                          "for longer than any failover should take",
                          f"use at most {MAX_TOKEN_MS} ms")

    protection = _bool(raw, "terminationProtection", mainnet)
    if mainnet and not protection:
        raise ConfigError("terminationProtection", "is false on MainNet",
                          "remove the key; MainNet validators always keep termination protection")

    chain_sync = raw.get("chainSync", CHAIN_SYNC[0])
    if chain_sync not in CHAIN_SYNC:
        raise ConfigError("chainSync", f"{chain_sync!r} is neither snapshot nor genesis",
                          "use snapshot (a new data volume starts from ICON's chain snapshot) "
                          "or genesis (it syncs every block from the first)")

    return StackConfig(
        stack=stack, region=region, icon_network=network, zones=zones,
        arbiter_zone=arbiter_zone, vpc_id=vpc_id, vpc_cidr=str(vpc),
        admin_cidrs=tuple(admin_cidrs), management_access=access, instance_type=instance_type,
        root_volume_gib=root_gib, data_volume_gib=data_gib, ami_id=ami_id, icon_image_tag=tag,
        cluster_name=cluster_name, peer_vip=peer_vip, citizen_vip=citizen_vip,
        termination_protection=protection, quorum_arbiter=arbiter,
        arbiter_subnet_cidr=str(arbiter_net), arbiter_instance_type=arbiter_type,
        corosync_token_ms=token, nodes=nodes, alert_email=_email(raw, "alertEmail"),
        chain_sync=chain_sync,
    )


def load_stack_file(path: str, *, stack: str) -> StackConfig:
    """Validate a `Pulumi.<stack>.yaml` file directly (for the simulate command and tests)."""
    import yaml

    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    values = doc.get("config", {})
    raw = {k.split(":", 1)[1]: v for k, v in values.items() if k.startswith(NAMESPACE + ":")}
    # The validator key does not belong in the stack file; the Pulumi program refuses it
    # (__main__.py refuse_key_in_config) and the offline commands need none of it.
    raw = {k: v for k, v in raw.items() if k not in SECRET_KEYS}
    return load_config(raw, stack=stack, region=values.get("aws:region"))
