"""Platform weather: what AWS does to healthy nodes, made to happen on the lab.

- stall: a healthy guest paused whole (host maintenance, a live update, an EBS or scheduling
  stall): every process of the node frozen, then thawed. The node itself did nothing wrong.
- api_outage: the AWS APIs unreachable from the nodes (a NAT gateway or endpoint outage, a
  regional API brownout): their packets to the endpoint are dropped, as a blackhole does, so
  every call times out. The arbiter and the lab's controller still reach it.
- set_hung_stop_wait: how long EC2 waits for a hung guest's OS shutdown before it forces a
  stop without SkipOsShutdown (lab/cloud.py models the wait).
- zone_lost: an availability zone gone whole (power and network): its instances off, its
  subnets, endpoints and NLB node unreachable; EC2 starts nothing there until it is back.
- zone_cut_off: an AZ that runs but reaches neither other zone: its nodes see only their own
  subnets and their zone's endpoints (the regional EC2 API answers through them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.cloud import HUNG_STOP_WAIT, LOST_ZONES, CloudConfig
from lab.netns import bridge_role, in_ns
from lab.node import NodeSpec, freeze, power_off, thaw
from lab.topology import CLOUD_NS

OUTAGE_CHAIN = "prep-ha-api-outage"
ZONE_CHAIN = "prep-ha-az"
NODE_ROLES = ("svc", "hb", "mgmt")


def stall(spec: NodeSpec, seconds: float) -> None:
    """Freeze every process of the node for `seconds`, then let it run on."""
    pids = freeze(spec)
    time.sleep(seconds)
    thaw(pids)


@contextmanager
def api_outage(run_dir: Path) -> Iterator[None]:
    """The AWS API endpoint (every service: the lab serves them on one address, as a NAT
    gateway carries them all) silently drops the nodes' packets until the block exits."""
    cloud = CloudConfig.load(run_dir)
    in_ns(CLOUD_NS, "iptables", "-N", OUTAGE_CHAIN)
    for bridge in (b for b in cloud.subnets if bridge_role(b) in NODE_ROLES):
        in_ns(CLOUD_NS, "iptables", "-A", OUTAGE_CHAIN, "-s", cloud.subnets[bridge], "-j",
              "DROP")
    in_ns(CLOUD_NS, "iptables", "-I", "INPUT", "-p", "tcp", "--dport", "443", "-j",
          OUTAGE_CHAIN)
    try:
        yield
    finally:
        in_ns(CLOUD_NS, "iptables", "-D", "INPUT", "-p", "tcp", "--dport", "443", "-j",
              OUTAGE_CHAIN)
        in_ns(CLOUD_NS, "iptables", "-F", OUTAGE_CHAIN)
        in_ns(CLOUD_NS, "iptables", "-X", OUTAGE_CHAIN)


def set_hung_stop_wait(run_dir: Path, seconds: float) -> None:
    (run_dir / HUNG_STOP_WAIT).write_text(f"{seconds:g}\n")


def _zone_chain(rules: list[list[str]]) -> None:
    """The cloud host's (the VPC router's) filter for the drill's zone failures and splits,
    removed by heal_zones."""
    if in_ns(CLOUD_NS, "iptables", "-n", "-L", ZONE_CHAIN, check=False) == "":
        in_ns(CLOUD_NS, "iptables", "-N", ZONE_CHAIN)
        for hook in ("INPUT", "FORWARD"):
            in_ns(CLOUD_NS, "iptables", "-I", hook, "-j", ZONE_CHAIN)
    for rule in rules:
        in_ns(CLOUD_NS, "iptables", "-A", ZONE_CHAIN, *rule, "-j", "DROP")


def route_split(a: list[str], b: list[str]) -> None:
    """The VPC router forwards nothing between addresses `a` and `b` (hosts in different
    subnets, which a cut at the switch does not separate: multi-AZ nodes)."""
    _zone_chain([["-s", x, "-d", y] for x in a for y in b]
                + [["-s", y, "-d", x] for x in a for y in b])


def heal_zones(run_dir: Path) -> None:
    """Every zone back: the filter gone, EC2 starting instances everywhere again."""
    (run_dir / LOST_ZONES).unlink(missing_ok=True)
    if in_ns(CLOUD_NS, "iptables", "-n", "-L", ZONE_CHAIN, check=False) == "":
        return
    for hook in ("INPUT", "FORWARD"):
        in_ns(CLOUD_NS, "iptables", "-D", hook, "-j", ZONE_CHAIN, check=False)
    in_ns(CLOUD_NS, "iptables", "-F", ZONE_CHAIN)
    in_ns(CLOUD_NS, "iptables", "-X", ZONE_CHAIN)


def zone_lost(run_dir: Path, zone: str, hosts: list[NodeSpec]) -> None:
    """`zone` gone: `hosts` (its instances) lose power, nothing reaches or leaves its subnets,
    its endpoints (at its service subnet's router) stop answering, the NLB drops its node
    there (lab/overlay.py), and EC2 refuses to start an instance there (lab/cloud.py)."""
    cloud = CloudConfig.load(run_dir)
    (run_dir / LOST_ZONES).write_text(zone + "\n")
    bridges = cloud.bridges_of(zone)
    _zone_chain([*(["-i", b] for b in bridges), *(["-o", b] for b in bridges),
                 *(["-d", cloud.router(b)] for b in bridges if bridge_role(b) == "svc")])
    for spec in hosts:
        power_off(spec)


def zone_cut_off(run_dir: Path, zone: str) -> None:
    """`zone` cut off from the other zones: its subnets still reach each other, its own
    endpoints and the internet side; nothing passes between them and another zone's."""
    cloud = CloudConfig.load(run_dir)
    inside = cloud.bridges_of(zone)
    outside = [b for b in cloud.vpc_bridges() if b not in inside]
    _zone_chain([[*a, *b] for i in inside for o in outside
                 for a, b in ((["-i", i], ["-o", o]), (["-i", o], ["-o", i]))]
                + [["-i", o, "-d", cloud.router(i)] for i in inside for o in outside])
