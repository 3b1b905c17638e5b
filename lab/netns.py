"""The lab's wiring: network namespaces on private bridges, nothing in the host namespace.

A "switch" namespace holds the bridges (one per subnet, plus the internet side), so that every
lab address, route and ARP entry lives in namespaces the lab created; pulling a node's cable is
`ip link set down` on its switch port.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

# Every lab namespace starts with this; a second lab on the same machine needs its own
# (and its own PREP_HA_LAB_DIR).
PREFIX = os.environ.get("PREP_HA_LAB_NS", "phl-")
SWITCH = PREFIX + "sw"
# The bridges are the stack's subnets, named by role (svc, hb, mgmt; node 2's zone's of a
# multi-AZ stack with the suffix 2: svc2, ...; arb), and inet: the internet side (client,
# Elastic IPs). lab/topology.py cloud_config.

T = TypeVar("T")


class LabError(RuntimeError):
    pass


def run_proc(argv: Sequence[str], *, timeout: float = 60, input: str | None = None,
             env: dict[str, str] | None = None,
             cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command, bounded in time, and return whatever it did."""
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              input=input, env=env, cwd=cwd, check=False)
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{' '.join(argv)} timed out after {timeout}s") from e


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 60,
        input: str | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command, bounded in time; a failure carries its output."""
    proc = run_proc(argv, timeout=timeout, input=input, env=env)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def wait_for(pred: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll `pred` until it returns something truthy; bounded, like every wait of the lab."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def ns_argv(ns: str, *argv: str) -> list[str]:
    """argv run in the network namespace `ns`, in the host's mount namespace.

    Not `ip netns exec`: that also gives the command a private mount namespace, and the node
    root filesystems (overlay mounts) must be the same for every lab process.
    """
    return ["nsenter", f"--net=/run/netns/{ns}", "--", *argv]


def in_ns(ns: str, *argv: str, check: bool = True, timeout: float = 60) -> str:
    return run(ns_argv(ns, *argv), check=check, timeout=timeout)


@dataclass(frozen=True)
class Port:
    """One veth: `inner` in the host namespace `ns`, its peer `outer` on `bridge` in the switch.

    Node ports carry the MAC EC2 gave the ENI and no address (DHCP and the node's own network
    configuration bring them up); the cloud and client ports are configured here.
    """

    ns: str
    inner: str
    outer: str
    bridge: str
    addresses: tuple[str, ...] = ()  # address/prefix inside ns
    mac: str | None = None


def namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def add_hosts(hosts: Sequence[str]) -> None:
    for ns in hosts:
        run(["ip", "netns", "add", ns])
        in_ns(ns, "ip", "link", "set", "lo", "up")


def bridge_role(bridge: str) -> str:
    """svc2 -> svc."""
    return bridge.rstrip("0123456789")


def create_switch(bridges: Sequence[str]) -> None:
    add_hosts([SWITCH])
    for br in bridges:
        in_ns(SWITCH, "ip", "link", "add", br, "type", "bridge")
        in_ns(SWITCH, "ip", "link", "set", br, "up")


def plug(ports: Sequence[Port]) -> None:
    for p in ports:
        # Created in the switch namespace so that no lab link ever appears in the host's.
        in_ns(SWITCH, "ip", "link", "add", p.outer, "type", "veth", "peer", "name", p.inner,
              "netns", p.ns)
        in_ns(SWITCH, "ip", "link", "set", p.outer, "master", p.bridge, "up")
        if p.mac:
            in_ns(p.ns, "ip", "link", "set", p.inner, "address", p.mac)
        for address in p.addresses:
            in_ns(p.ns, "ip", "addr", "add", address, "dev", p.inner)
        if p.addresses:
            in_ns(p.ns, "ip", "link", "set", p.inner, "up")


def set_cable(outer: str, up: bool) -> None:
    in_ns(SWITCH, "ip", "link", "set", outer, "up" if up else "down")


SPLIT_TABLE = "prep-ha-lab-split"


def split(a: Sequence[str], b: Sequence[str]) -> None:
    """The switch drops every frame between ports `a` and ports `b`; the rest still flows."""
    rules = [f"add table bridge {SPLIT_TABLE}",
             f"add chain bridge {SPLIT_TABLE} forward "
             "{ type filter hook forward priority 0; policy accept; }"]
    rules += [f"add rule bridge {SPLIT_TABLE} forward iifname {x} oifname {y} drop"
              for x, y in [*((x, y) for x in a for y in b), *((y, x) for x in a for y in b)]]
    run(ns_argv(SWITCH, "nft", "-f", "-"), input="\n".join(rules) + "\n")


def heal() -> None:
    in_ns(SWITCH, "nft", "delete", "table", "bridge", SPLIT_TABLE, check=False)


def destroy() -> None:
    """Delete every lab namespace; their veths and bridges go with them. Safe to run any time."""
    for ns in namespaces():
        run(["ip", "netns", "delete", ns], check=False)
