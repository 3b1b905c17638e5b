"""Where everything of the lab lives: namespaces, links and addresses, from the stack and EC2.

The lab uses the stack's own addresses (its subnets, node IPs, VIPs): the model, corosync.conf
and every agent parameter are exactly what that stack deploys, and those 10.x addresses exist
only inside the lab's namespaces. The internet side is TEST-NET-3 (203.0.113.0/24), where the
client and the stack's Elastic IPs live, again only inside the lab.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from lab.cloud import CloudConfig
from lab.deploy import Deployment
from lab.netns import PREFIX, Port
from lab.node import Nic, NodeSpec, nic_name
from prep_ha.config import StackConfig

CLOUD_NS = PREFIX + "cloud"
CLIENT_NS = PREFIX + "client"
INTERNET = ipaddress.ip_network("203.0.113.0/24")
# Inside the stacks' adminCidrs (203.0.113.0/28): the operator's address.
CLIENT_IP = str(INTERNET.network_address + 5)


def cloud_config(cfg: StackConfig, mirror: Path) -> CloudConfig:
    """One bridge per subnet a node or the arbiter has: named by role, node 2's zone's with
    the suffix 2 (multi-AZ), each in its AZ."""
    subnets: dict[str, str] = {}
    zones: dict[str, str] = {}
    for n, zone in enumerate(cfg.zones, 1):
        suffix = "" if n == 1 else str(n)
        for role, cidr in (("svc", zone.service_cidr), ("hb", zone.heartbeat_cidr),
                           ("mgmt", zone.management_cidr)):
            subnets[role + suffix], zones[role + suffix] = cidr, zone.name
    subnets["arb"], zones["arb"] = cfg.arbiter_subnet_cidr, cfg.arbiter_zone
    subnets["inet"] = str(INTERNET)
    overlay = cfg.peer_vip if cfg.multi_az else None
    return CloudConfig(region=cfg.region, mirror=str(mirror), subnets=subnets, zones=zones,
                       overlay_ip=overlay,
                       nlb_subnets=tuple(z.public_cidr for z in cfg.zones) if overlay else ())


def cloud_ports(cloud: CloudConfig) -> list[Port]:
    """The VPC router: .1 of every subnet (AWS puts the router there), and the internet side."""
    return [Port(CLOUD_NS, bridge, f"cl-{bridge}", bridge,
                 (f"{cloud.router(bridge)}/{ipaddress.ip_network(cidr).prefixlen}",))
            for bridge, cidr in cloud.subnets.items()]


def client_ports() -> list[Port]:
    return [Port(CLIENT_NS, "eth0", "client-inet", "inet", (f"{CLIENT_IP}/{INTERNET.prefixlen}",))]


def node_specs(deployment: Deployment, cloud: CloudConfig, run_dir: Path) -> list[NodeSpec]:
    """One host per instance EC2 holds for the stack (the nodes, then the arbiter), its NICs as
    its ENIs are attached."""
    bridge_of = {cidr: bridge for bridge, cidr in cloud.subnets.items()}
    specs = []
    # Sorted by name: prep-ha-testnet-1, -2, then -arbiter.
    for index, inst in enumerate(sorted(deployment.instances, key=lambda n: n.node), 1):
        nics = tuple(Nic(nic_name(e.device_index), e.mac, bridge_of[e.subnet_cidr],
                         f"n{index}-{bridge_of[e.subnet_cidr]}")
                     for e in sorted(inst.enis, key=lambda e: e.device_index))
        specs.append(NodeSpec(name=inst.node, index=index, instance_id=inst.instance_id,
                              ns=f"{PREFIX}n{index}", state=str(run_dir / f"node{index}"),
                              nics=nics, volume_id=next(
                                  (v.volume_id for v in inst.data_volumes), None)))
    return specs


@dataclass(frozen=True)
class Cables:
    """The switch ports of a node: pulling them is a network failure."""

    heartbeat: str
    service: str
    management: str

    @classmethod
    def of(cls, spec: NodeSpec) -> Cables:
        return cls(spec.nic("hb").outer, spec.nic("svc").outer, spec.nic("mgmt").outer)
