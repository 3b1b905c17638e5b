"""Platform weather: what AWS does to healthy nodes, made to happen on the lab.

- stall: a healthy guest paused whole (host maintenance, a live update, an EBS or scheduling
  stall): every process of the node frozen, then thawed. The node itself did nothing wrong.
- api_outage: the AWS APIs unreachable from the nodes (a NAT gateway or endpoint outage, a
  regional API brownout): their packets to the endpoint are dropped, as a blackhole does, so
  every call times out. The arbiter and the lab's controller still reach it.
- set_hung_stop_wait: how long EC2 waits for a hung guest's OS shutdown before it forces a
  stop without SkipOsShutdown (lab/cloud.py models the wait).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.cloud import HUNG_STOP_WAIT, CloudConfig
from lab.netns import in_ns
from lab.node import NodeSpec, freeze, thaw
from lab.topology import CLOUD_NS

OUTAGE_CHAIN = "prep-ha-api-outage"
NODE_SUBNETS = ("svc", "hb", "mgmt")


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
    for bridge in NODE_SUBNETS:
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
