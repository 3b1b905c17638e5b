"""The Pacemaker/Corosync configuration of the HA P-Rep pair, as plain data.

One model serves the bootstrap (rendered to a pcs script), the offline simulation, the lab
and the policy pack (which parses the rendered script back into this model). Every tunable
below carries the reason for its value, because operators will compare it with the guide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prep_ha.config import StackConfig

PEER_GROUP = "Peer"
# Installed by the node user-data (cloud-init/files/).
HOLDS_PEER = "/usr/local/sbin/prep-ha-holds-peer"
FENCE_RESTART = "/usr/local/sbin/prep-ha-fence-restart"
ALERT_AGENT = "/usr/local/sbin/prep-ha-alert"
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
class QuorumDevice:
    """The third vote: corosync-qdevice on both nodes, corosync-qnetd on the arbiter."""

    host: str  # the arbiter's address (pcs authenticates it under this name too)
    algorithm: str
    # qdevice's timeout with qnetd (heartbeats every 0.8 x): short enough that a frozen node's
    # client is declared dead about as fast as corosync declares the node lost.
    timeout_ms: int
    # name -> command: qdevice runs them at every membership change; in a 50:50 split the
    # partition whose heuristics pass gets the arbiter's vote.
    heuristics: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Corosync:
    cluster_name: str
    transport: str
    # From the stack (corosyncTokenMs): a lost node is noticed after token + consensus.
    token_ms: int
    # Corosync's own rule: consensus = 1.2 x token.
    consensus_ms: int
    # Without an arbiter: implies wait_for_all, a lone node after a cold start waits.
    two_node: bool
    qdevice: QuorumDevice | None = None


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
class Alert:
    id: str
    path: str


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
    alerts: tuple[Alert, ...] = ()

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
        # api_delay 0: the agent sleeps api_delay (default 3 s) after every assign and
        # unassign, and a takeover runs one of each in series (the citizen's VIP released,
        # then the peer's taken: Pacemaker orders the anti-colocated groups so), 6 s of a
        # node failover spent waiting. `--allow-reassignment` makes the assignment
        # independent of the release, and a failover makes four API calls, far below EC2's
        # request rate limits.
        Primitive(f"{prefix}-awsvip", "ocf:heartbeat:awsvip",
                  (("secondary_private_ip", vip), ("api_delay", "0")),
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


def consensus_ms(token_ms: int) -> int:
    """1.2 x token rounded up: corosync's rule is a lower bound."""
    return -(-token_ms * 12 // 10)


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
            # `off` (stonith-action below) returns once EC2 reports the instance stopped:
            # a forced stop takes seconds to about a minute, a stop-then-start reboot minutes.
            ("power_timeout", "240"),
            ("pcmk_off_timeout", "300"),
        ),
        host_map=tuple((n.name, n.instance_id_env) for n in nodes),
        # Each monitor is a DescribeInstances call: once a minute is enough to notice lost
        # API access (expired role, changed policy) long before a failover needs it.
        ops=(Op("monitor", "60s", "60s"),),
    )
    peer = Group(
        PEER_GROUP,
        # A validator misses blocks within seconds: a 2 s monitor (a D-Bus query of the unit)
        # instead of the guide's 1 min.
        _vip_members("peer", cfg.peer_vip, cfg.service_prefix_len, "peer",
                     Op("monitor", "2s", "30s")),
        # priority feeds priority-fencing-delay: the node holding Peer wins a fence race.
        meta=(("priority", "10"),),
    )
    ctz = Group(
        CTZ_GROUP,
        # The citizen only keeps the chain synced; a slower monitor is fine.
        _vip_members("ctz", cfg.citizen_vip, cfg.service_prefix_len, "ctz",
                     Op("monitor", "30s", "30s")),
    )
    if cfg.quorum_arbiter:
        qdevice = QuorumDevice(host=cfg.arbiter_ip, algorithm="ffsplit",
                               timeout_ms=max(3000, cfg.corosync_token_ms),
                               heuristics=(("peer", HOLDS_PEER),))
        # The partition without the arbiter's vote does not fence: no race to settle.
        split_rule: tuple[tuple[str, str], ...] = ()
    else:
        qdevice = None
        # In a split both nodes try to fence; the one holding Peer (priority 10) is fenced
        # only after this delay, so it wins. pcmk_delay_max would instead pick at random.
        split_rule = (("priority-fencing-delay", "15s"),)
    return ClusterModel(
        corosync=Corosync(cluster_name=cfg.cluster_name, transport="knet",
                          token_ms=cfg.corosync_token_ms,
                          consensus_ms=consensus_ms(cfg.corosync_token_ms),
                          two_node=qdevice is None, qdevice=qdevice),
        nodes=nodes,
        fence_devices=(fence,),
        groups=(peer, ctz),
        # 100 is below the stickiness, so a returning node 1 does not pull Peer back.
        locations=(Location(PEER_GROUP, node1, "100"),),
        # The peer and the citizen share the node's chain volume: never on one node.
        colocations=(Colocation(CTZ_GROUP, PEER_GROUP, "-" + INFINITY),),
        # Whichever role leaves a node releases the shared chain volume before the other
        # role starts there: the citizen on a takeover, the peer when it is moved away.
        # (Pacemaker orders the groups so anyway, for the -INFINITY colocation.)
        orders=(Order("stop", CTZ_GROUP, "start", PEER_GROUP),
                Order("stop", PEER_GROUP, "start", CTZ_GROUP)),
        properties=(
            ("stonith-enabled", "true"),
            # Fencing is done when the failed node is off; the fence-restart alert starts it
            # again (a reboot would hold the takeover until EC2 has started the node).
            ("stonith-action", "off"),
            *split_rule,
            # Without quorum (the arbiter lost, then a split) keep what runs where it runs:
            # the peer stays on its node and never starts on the other. Each node has its own
            # chain volume, so nothing is shared that freezing could corrupt.
            ("no-quorum-policy", "freeze"),
        ),
        resource_defaults=(
            # Greater than the Peer location score (100): a recovered node 1 stays backup.
            ("resource-stickiness", "200"),
            # One restart in place, the second failure within failure-timeout moves the group.
            ("migration-threshold", "2"),
            ("failure-timeout", "10min"),
        ),
        op_defaults=(("timeout", "60s"),),
        # fence-restart starts a fenced instance again once it is off (EC2 StartInstances); it
        # boots and rejoins as the citizen. notify tells the operator (SNS, CloudWatch) of
        # every fence, Peer start/stop, failed operation and lost node: the cluster acts
        # alone, and an unattended takeover or a fence loop must not go unseen. Two agents,
        # not one: the power-on must not wait on, or fail with, a notification.
        alerts=(Alert("fence-restart", FENCE_RESTART), Alert("notify", ALERT_AGENT)),
    )
