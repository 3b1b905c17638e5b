"""The Pacemaker/Corosync configuration of the HA P-Rep pair, as plain data.

One model serves the bootstrap (rendered to a pcs script), the offline simulation, the lab
and the policy pack (which parses the rendered script back into this model). Every tunable
below carries the reason for its value, because operators will compare it with the guide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prep_ha.config import StackConfig

PEER_GROUP = "Peer"
CTZ_GROUP = "Ctz"
FENCE_DEVICE = "fence-aws"
INFINITY = "INFINITY"


@dataclass(frozen=True)
class ClusterNode:
    name: str
    node_id: int
    heartbeat_ip: str  # knet link 0
    service_ip: str  # knet link 1
    # The instance id is only known once EC2 created the node; the script reads it from this
    # environment variable so that the script itself is known at `pulumi preview` time.
    instance_id_env: str


@dataclass(frozen=True)
class Corosync:
    cluster_name: str
    transport: str
    # Corosync 3 default is 3 s. AWS' SAP/RHEL guidance uses 30 s to ride out hypervisor
    # maintenance pauses, but a validator misses blocks while nobody holds the peer role.
    # 10 s still outlasts the short packet loss seen inside one AZ, and with two knet links
    # one path failing never counts as a node failure at all.
    token_ms: int
    # Corosync's own rule: consensus = 1.2 x token.
    consensus_ms: int
    two_node: bool  # implies wait_for_all: a lone node after a cold start waits for its peer


@dataclass(frozen=True)
class Op:
    name: str
    interval: str
    timeout: str


@dataclass(frozen=True)
class Primitive:
    id: str
    agent: str  # pcs agent spec, e.g. ocf:heartbeat:awsvip, systemd:peer
    params: tuple[tuple[str, str], ...] = ()
    ops: tuple[Op, ...] = ()


@dataclass(frozen=True)
class Group:
    id: str
    members: tuple[Primitive, ...]
    meta: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class FenceDevice:
    id: str
    agent: str
    params: tuple[tuple[str, str], ...]
    host_map: tuple[tuple[str, str], ...]  # node name -> environment variable of its instance id
    ops: tuple[Op, ...] = ()


@dataclass(frozen=True)
class Location:
    resource: str
    node: str
    score: str


@dataclass(frozen=True)
class Colocation:
    resource: str
    with_resource: str
    score: str


@dataclass(frozen=True)
class Order:
    first_action: str
    first: str
    then_action: str
    then: str
    kind: str = "Mandatory"
    # Non-symmetrical: a symmetrical "stop Ctz then start Peer" would restart Peer whenever
    # Ctz stops, e.g. when node 2 fails (a needless interruption of the validator).
    symmetrical: bool = False


@dataclass(frozen=True)
class ClusterModel:
    corosync: Corosync
    nodes: tuple[ClusterNode, ...]
    fence_devices: tuple[FenceDevice, ...]
    groups: tuple[Group, ...]
    locations: tuple[Location, ...] = ()
    colocations: tuple[Colocation, ...] = ()
    orders: tuple[Order, ...] = ()
    properties: tuple[tuple[str, str], ...] = ()
    resource_defaults: tuple[tuple[str, str], ...] = ()
    op_defaults: tuple[tuple[str, str], ...] = field(default=())

    def group(self, group_id: str) -> Group:
        return next(g for g in self.groups if g.id == group_id)

    def property(self, name: str) -> str | None:
        return dict(self.properties).get(name)


def _vip_members(prefix: str, vip: str, prefix_len: int, unit: str,
                 unit_monitor: Op) -> tuple[Primitive, ...]:
    return (
        # awsvip moves the secondary IP to this instance's primary ENI through the EC2 API.
        # A 20 s monitor keeps DescribeNetworkInterfaces calls well under EC2's API rate limits;
        # the IPaddr2 monitor below notices a lost address in the OS sooner.
        Primitive(f"{prefix}-awsvip", "ocf:heartbeat:awsvip",
                  (("secondary_private_ip", vip),),
                  (Op("start", "0s", "60s"), Op("stop", "0s", "60s"),
                   Op("monitor", "20s", "40s"))),
        # IPaddr2 brings the address up in the OS and sends gratuitous ARP. No `nic`: the
        # interface is the one routing the service subnet, whatever the kernel named it
        # (`ens5` on Nitro); a fixed name that does not exist makes IPaddr2 fail fatally.
        Primitive(f"{prefix}-ip", "ocf:heartbeat:IPaddr2",
                  (("ip", vip), ("cidr_netmask", str(prefix_len))),
                  (Op("start", "0s", "20s"), Op("stop", "0s", "20s"),
                   Op("monitor", "10s", "20s"))),
        # Start and stop timeouts cover `docker-compose up/down` of a node with a large chain.
        Primitive(f"{prefix}-service", f"systemd:{unit}", (),
                  (Op("start", "0s", "180s"), Op("stop", "0s", "180s"), unit_monitor)),
    )


def build_model(cfg: StackConfig) -> ClusterModel:
    """The cluster of the guide, rebuilt for AWS, for the stack described by `cfg`."""
    nodes = tuple(
        ClusterNode(name=name, node_id=i + 1, heartbeat_ip=addr.heartbeat_ip,
                    service_ip=addr.service_ip, instance_id_env=f"PREP_HA_INSTANCE_ID_{i + 1}")
        for i, (name, addr) in enumerate(zip(cfg.node_names, cfg.nodes, strict=True))
    )
    node1 = nodes[0].name
    fence = FenceDevice(
        id=FENCE_DEVICE,
        agent="fence_aws",
        params=(
            ("region", cfg.region),
            # EC2 takes 30-90 s to stop an instance; give a stop-then-start reboot room.
            ("power_timeout", "240"),
            ("pcmk_reboot_timeout", "600"),
            ("pcmk_reboot_retries", "4"),
            ("pcmk_off_timeout", "300"),
        ),
        host_map=tuple((n.name, n.instance_id_env) for n in nodes),
        # Each monitor is a DescribeInstances call: once a minute is enough to notice lost
        # API access (expired role, changed policy) long before a failover needs it.
        ops=(Op("monitor", "60s", "60s"),),
    )
    peer = Group(
        PEER_GROUP,
        # A validator misses blocks within seconds: 10 s monitor instead of the guide's 1 min.
        _vip_members("peer", cfg.peer_vip, cfg.service_prefix_len, "peer",
                     Op("monitor", "10s", "30s")),
        # priority feeds priority-fencing-delay: the node holding Peer wins a fence race.
        meta=(("priority", "10"),),
    )
    ctz = Group(
        CTZ_GROUP,
        # The citizen only keeps the chain synced; a slower monitor is fine.
        _vip_members("ctz", cfg.citizen_vip, cfg.service_prefix_len, "ctz",
                     Op("monitor", "30s", "30s")),
    )
    return ClusterModel(
        corosync=Corosync(cluster_name=cfg.cluster_name, transport="knet", token_ms=10000,
                          consensus_ms=12000, two_node=True),
        nodes=nodes,
        fence_devices=(fence,),
        groups=(peer, ctz),
        # 100 is below the stickiness, so a returning node 1 does not pull Peer back.
        locations=(Location(PEER_GROUP, node1, "100"),),
        # The peer and the citizen share the node's chain volume: never on one node.
        colocations=(Colocation(CTZ_GROUP, PEER_GROUP, "-" + INFINITY),),
        # Whichever role leaves a node releases the shared chain volume before the other
        # role starts there: the citizen on a takeover, the peer when it is moved away.
        orders=(Order("stop", CTZ_GROUP, "start", PEER_GROUP),
                Order("stop", PEER_GROUP, "start", CTZ_GROUP)),
        properties=(
            ("stonith-enabled", "true"),
            # In a split both nodes try to fence; the one holding Peer (priority 10) is fenced
            # only after this delay, so it wins. pcmk_delay_max would instead pick at random.
            ("priority-fencing-delay", "15s"),
            ("no-quorum-policy", "stop"),
        ),
        resource_defaults=(
            # Greater than the Peer location score (100): a recovered node 1 stays backup.
            ("resource-stickiness", "200"),
            # One restart in place, the second failure within failure-timeout moves the group.
            ("migration-threshold", "2"),
            ("failure-timeout", "10min"),
        ),
        op_defaults=(("timeout", "60s"),),
    )
