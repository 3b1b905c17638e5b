"""The multi-AZ peer address as the VPC routes it: the overlay IP follows EC2's route tables.

aws-vpc-move-ip moves the peer by ReplaceRoute in moto; this thread of the cloud host (which
runs moto, lab/cloud.py) reads the tables of the NLB's subnets and routes the overlay IP to
the ENI they name, as the NLB's traffic to its `ip` target would go. The NLB sits in both node
zones: its traffic follows the first zone's table whose AZ is not lost (lab/azloss.py).
The service subnets' own tables (a node reaching the overlay IP) are not followed: nothing of
the product sends traffic that way.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from pathlib import Path
from typing import Any

from lab.cloud import ACCOUNT, CloudConfig, lost_zones

POLL_S = 0.2


def nlb_next_hop(backend: Any, cfg: CloudConfig, lost: set[str]) -> str | None:  # noqa: ANN401
    """The private IP of the ENI the NLB's route to the overlay IP names, or None."""
    subnets = {str(s.cidr_block): s for s in backend.describe_subnets()}
    destination = f"{cfg.overlay_ip}/32"
    for cidr in cfg.nlb_subnets:
        subnet = subnets.get(cidr)
        if subnet is None or subnet.availability_zone in lost:
            continue
        for table in backend.route_tables.values():
            if subnet.id not in table._associations.values():  # noqa: SLF001 - moto's model
                continue
            for route in table.routes:
                if route.destination_cidr_block == destination and route.interface is not None:
                    return route.interface.private_ip_address
    return None


def route(overlay_ip: str, next_hop: str | None) -> None:
    """The cloud host's (the VPC router's) route to the overlay IP."""
    if next_hop is None:
        subprocess.run(["ip", "route", "del", f"{overlay_ip}/32"], check=False,
                       capture_output=True)
    else:
        subprocess.run(["ip", "route", "replace", f"{overlay_ip}/32", "via", next_hop],
                       check=True, capture_output=True)


def follow_overlay_routes(cfg: CloudConfig, run_dir: Path) -> None:
    from moto.backends import get_backend

    backend = get_backend("ec2")[ACCOUNT][cfg.region]
    assert cfg.overlay_ip and ipaddress.ip_address(cfg.overlay_ip)
    current: str | None = None
    route(cfg.overlay_ip, None)
    while True:
        hop = nlb_next_hop(backend, cfg, lost_zones(run_dir))
        if hop != current:
            route(cfg.overlay_ip, hop)
            current = hop
        time.sleep(POLL_S)
