"""Where everything of the lab lives: namespaces, links and addresses, derived from a stack.

The lab uses the stack's own addresses (node service/heartbeat IPs, VIPs): the model, the
corosync.conf and the IPaddr2 parameters are then exactly what that stack deploys, and those
10.x addresses exist only inside the lab's namespaces. The cloud and client hosts take two
addresses at the top of the service subnet, which the stack never assigns.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from lab.netns import PREFIX, Port
from lab.node import NodeSpec
from prep_ha.config import StackConfig

CLOUD_NS = PREFIX + "cloud"
CLIENT_NS = PREFIX + "client"


@dataclass(frozen=True)
class Topology:
    run_dir: Path
    cfg: StackConfig
    nodes: tuple[NodeSpec, NodeSpec]
    cloud_ip: str
    client_ip: str
    ports: tuple[Port, ...]

    def cables(self, node: NodeSpec) -> tuple[str, str]:
        """The switch-side ends of the node's heartbeat and service links."""
        return (f"n{node.index}-hb", f"n{node.index}-svc")


def topology(cfg: StackConfig, run_dir: Path) -> Topology:
    svc = ipaddress.ip_network(cfg.service_subnet_cidr)
    hb = ipaddress.ip_network(cfg.heartbeat_subnet_cidr)
    cloud_ip, client_ip = str(svc.broadcast_address - 2), str(svc.broadcast_address - 3)
    aws = run_dir / "aws"
    env = (
        ("AWS_CA_BUNDLE", str(run_dir / "ca.pem")),
        ("AWS_CONFIG_FILE", str(aws / "config")),
        ("AWS_SHARED_CREDENTIALS_FILE", str(aws / "credentials")),
        ("AWS_DEFAULT_REGION", cfg.region),
    )
    nodes = tuple(
        NodeSpec(name=name, index=i, ns=f"{PREFIX}n{i}", state=str(run_dir / f"node{i}"),
                 service_ip=addr.service_ip, heartbeat_ip=addr.heartbeat_ip,
                 prefix_len=svc.prefixlen, cloud_ip=cloud_ip, env=env)
        for i, (name, addr) in enumerate(zip(cfg.node_names, cfg.nodes, strict=True), 1)
    )
    ports = [Port(CLOUD_NS, "eth0", "cloud-svc", "svc", f"{cloud_ip}/{svc.prefixlen}"),
             Port(CLIENT_NS, "eth0", "client-svc", "svc", f"{client_ip}/{svc.prefixlen}")]
    for n in nodes:
        ports += [Port(n.ns, "hb0", f"n{n.index}-hb", "hb", f"{n.heartbeat_ip}/{hb.prefixlen}"),
                  Port(n.ns, "eth0", f"n{n.index}-svc", "svc", f"{n.service_ip}/{svc.prefixlen}")]
    return Topology(run_dir, cfg, nodes, cloud_ip, client_ip, tuple(ports))  # type: ignore[arg-type]


def hosts_file(topo: Topology) -> str:
    lines = ["127.0.0.1 localhost",
             f"{topo.cloud_ip} ec2.{topo.cfg.region}.amazonaws.com"]
    lines += [f"{n.heartbeat_ip} {n.name}" for n in topo.nodes]
    return "\n".join(lines) + "\n"
