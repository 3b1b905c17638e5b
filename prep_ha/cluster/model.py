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
# The node's own agents (cloud-init/files/): the packaged awsvip and fence_aws, made to ride out
# an EC2 API outage and a hung guest (see their headers).
AWSVIP_AGENT = "ocf:prep-ha:awsvip"
# Multi-AZ: the peer's overlay IP, routed to the active node's service ENI in every route table
# that must reach it (the tables' ids reach the bootstrap as this environment variable).
OVERLAY_AGENT = "ocf:heartbeat:aws-vpc-move-ip"
ROUTE_TABLES_ENV = "PREP_HA_ROUTE_TABLES"
# The service ENI (device index 0) by the alternative name prep-ha-network gives it at boot:
# the kernel's own name depends on the instance type and systemd's naming scheme.
SERVICE_NIC = "prep-ha-service"
# The AWS CLI with bounded timeouts (cloud-init/files/prep-ha-aws).
AWS_CLI = "/usr/local/sbin/prep-ha-aws"
FENCE_AGENT = "fence_aws_skip_os_shutdown"
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
class Knet:
    """How knet uses and watches the two links (corosync.conf link_mode, interface{}
    knet_ping_*, the same for both links)."""

    link_mode: str  # active: every packet on both links
    # A link is declared dead after ping_timeout without a pong; one pong brings it back.
    ping_interval_ms: int
    ping_timeout_ms: int
    pong_count: int


@dataclass(frozen=True)
class Corosync:
    cluster_name: str
    transport: str
    # From the stack (corosyncTokenMs): a lost node is noticed after token + consensus.
    token_ms: int
    consensus_ms: int
    # Without an arbiter: implies wait_for_all, a lone node after a cold start waits.
    two_node: bool
    qdevice: QuorumDevice | None = None
    knet: Knet | None = None
    # totem token_retransmits_before_loss_const: how often, within one token, a lost token
    # is sent again.
    token_retransmits: int | None = None
    # quorum { expected_votes }: set with a quorum device, whose explicit vote stops corosync
    # from counting it in the expected votes (votequorum.c), see build_model.
    expected_votes: int | None = None


@dataclass(frozen=True)
class Op:
    name: str
    interval: str
    timeout: str
    on_fail: str | None = None


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

    @property
    def environment(self) -> tuple[str, ...]:
        """The variables the bootstrap script needs, known only once AWS created what they
        name: the nodes' instance ids, then (multi-AZ) the overlay IP's route tables."""
        expand = f"${{{ROUTE_TABLES_ENV}}}"
        routes = any(v == expand for g in self.groups for r in g.members for _, v in r.params)
        return (*(n.instance_id_env for n in self.nodes), *((ROUTE_TABLES_ENV,) if routes else ()))

    def property(self, name: str) -> str | None:
        return dict(self.properties).get(name)


def _service(prefix: str, unit: str, monitor: Op) -> Primitive:
    # Start and stop timeouts cover `docker-compose up/down` of a node with a large chain.
    return Primitive(f"{prefix}-service", f"systemd:{unit}", (),
                     (Op("start", "0s", "180s"), Op("stop", "0s", "180s"), monitor))


def _vip_members(prefix: str, vip: str, prefix_len: int, region: str) -> tuple[Primitive, ...]:
    """Single-AZ: the address is a secondary IP of the service subnet."""
    return (
        # The VIP is a secondary IP of this instance's primary ENI, moved through the EC2 API
        # (AssignPrivateIpAddresses --allow-reassignment). The monitor reads the instance
        # metadata, not the API: an API outage must not look like a lost address (the
        # packaged awsvip would restart the peer, then fail its start for want of the API).
        # A 20 s monitor is plenty for an address that moves only when Pacemaker moves it.
        Primitive(f"{prefix}-awsvip", AWSVIP_AGENT,
                  (("secondary_private_ip", vip), ("region", region)),
                  (Op("start", "0s", "60s"), Op("stop", "0s", "60s"),
                   Op("monitor", "20s", "40s"))),
        # IPaddr2 brings the address up in the OS and sends gratuitous ARP. No `nic`: the
        # interface is the one routing the service subnet, whatever the kernel named it
        # (`ens5` on Nitro); a fixed name that does not exist makes IPaddr2 fail fatally.
        Primitive(f"{prefix}-ip", "ocf:heartbeat:IPaddr2",
                  (("ip", vip), ("cidr_netmask", str(prefix_len))),
                  (Op("start", "0s", "20s"), Op("stop", "0s", "20s"),
                   Op("monitor", "10s", "20s"))),
    )


def _overlay_member(vip: str, region: str) -> Primitive:
    """Multi-AZ: a private IP belongs to one subnet, so one AZ; the peer's address is an
    overlay IP outside the VPC instead, routed to the active node's service ENI. Start
    replaces the /32 route in each table (the routes exist: Pulumi creates them) and adds the
    address to the NIC; the regular monitor only looks at the NIC (monapi=false, no API call),
    so an EC2 API outage never looks like a lost address; stop makes no API call at all."""
    return Primitive(
        "peer-overlay", OVERLAY_AGENT,
        (("ip", vip), ("interface", SERVICE_NIC), ("routing_table", f"${{{ROUTE_TABLES_ENV}}}"),
         ("region", region), ("awscli", AWS_CLI),
         # The route names the ENI (device 0) the address is on; an instance id would also
         # match a route to the instance's other ENIs.
         ("lookup_type", "NetworkInterfaceId")),
        # Start: one ReplaceRoute per table (four, each at most 20 s with prep-ha-aws's
        # timeouts, one second apart).
        (Op("start", "0s", "120s"), Op("stop", "0s", "30s"), Op("monitor", "10s", "30s")))


def consensus_ms(token_ms: int, nodes: int = 2) -> int:
    """Corosync's default is 1.2 x token, which it requires of three nodes or more. For two
    nodes corosync.conf(5) calls anything between join (50 ms) and the token safe, and every
    millisecond of it is detection time on a real failure: a sixth of the token (2 s at 12 s)."""
    return -(-token_ms * 12 // 10) if nodes > 2 else max(1000, token_ms // 6)


def knet(token_ms: int) -> Knet:
    """Both links carry every packet; a link is declared dead only after a whole token.

    With corosync's defaults (passive links, ping_timeout token / 2, two pongs to come back) a
    node paused for half a token found its links declared dead, and they came back too late
    for the token: a pause of half the token broke the membership. In active mode a cut link
    costs nothing (the other carries the same packets), so the dead-link timeout no longer
    has to beat the token: at a whole token, a paused node's links are never declared dead
    while the token can still be saved, and what the survivor sent meanwhile waits in the
    paused node's socket buffer, read the moment it runs again.
    """
    return Knet(link_mode="active", ping_interval_ms=500, ping_timeout_ms=token_ms,
                pong_count=1)


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
        # The packaged fence_aws with SkipOsShutdown: EC2 powers a hung guest off at once
        # instead of waiting out its graceful-shutdown timeout (minutes).
        agent=FENCE_AGENT,
        params=(
            ("region", cfg.region),
            # `off` (stonith-action below) returns once EC2 reports the instance stopped.
            # Under Pacemaker only pcmk_off_timeout bounds it (power_timeout is not applied).
            ("power_timeout", "240"),
            ("pcmk_off_timeout", "300"),
        ),
        host_map=tuple((n.name, n.instance_id_env) for n in nodes),
        # Each monitor is a DescribeInstances call: once a minute is enough to notice lost
        # API access (an outage, an expired role, a changed policy) long before a failover
        # needs it. on-fail=ignore: a failed monitor is alerted (prep-ha-alert), not acted on;
        # restarting or banning the device during an API outage would leave the cluster
        # without fencing once the API is back.
        ops=(Op("monitor", "60s", "60s", on_fail="ignore"),),
    )
    if cfg.citizen_vip is None:  # multi-AZ
        peer_address: tuple[Primitive, ...] = (_overlay_member(cfg.peer_vip, cfg.region),)
        # The citizen serves nothing inbound: its node's own address is enough.
        ctz_address: tuple[Primitive, ...] = ()
    else:
        peer_address = _vip_members("peer", cfg.peer_vip, cfg.service_prefix_len, cfg.region)
        ctz_address = _vip_members("ctz", cfg.citizen_vip, cfg.service_prefix_len, cfg.region)
    peer = Group(
        PEER_GROUP,
        # A validator misses blocks within seconds: a 2 s monitor (a D-Bus query of the unit)
        # instead of the guide's 1 min.
        (*peer_address, _service("peer", "peer", Op("monitor", "2s", "30s"))),
        # priority feeds priority-fencing-delay: the node holding Peer wins a fence race.
        meta=(("priority", "10"),),
    )
    ctz = Group(
        CTZ_GROUP,
        # The citizen only keeps the chain synced; a slower monitor is fine.
        (*ctz_address, _service("ctz", "ctz", Op("monitor", "30s", "30s"))),
    )
    if cfg.quorum_arbiter:
        # The qdevice timeout is the token: qnetd drops a frozen node's client no sooner than
        # corosync would drop the node, and no later than a lost node's takeover needs.
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
                          consensus_ms=consensus_ms(cfg.corosync_token_ms, len(nodes)),
                          two_node=qdevice is None, qdevice=qdevice,
                          knet=knet(cfg.corosync_token_ms),
                          # A lost token is sent again every token / 10.2 (1.2 s at 12 s)
                          # instead of token / 4.2: SUSE's, Azure's and Google's setting.
                          token_retransmits=10,
                          # pcs writes the device's `votes: 1`, and with an explicit device
                          # vote corosync takes expected_votes from the nodes alone (2): a
                          # node started alone reached it with the arbiter's vote, ended
                          # wait_for_all and fenced the partner it had never seen. With 3, a
                          # cold start waits for both nodes (or `pcs quorum unblock`).
                          expected_votes=len(nodes) + 1 if qdevice else None),
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
            # A fence that fails (the EC2 API unreachable) is tried again for as long as it
            # takes: the default (10) gives up after a few minutes of an API outage and leaves
            # a failed node's peer down until someone intervenes.
            ("stonith-max-attempts", "100000"),
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
