"""How long a stall each corosync token survives, measured on the lab's real corosync.

    sudo python3 -m lab bench --tokens        # on a fresh lab, torn down after

For each token (consensus and knet timeouts as the model derives them) the standby node, never
the one running the peer, is frozen whole (every process SIGSTOPped, like a hypervisor pause) for a
growing share of the token, then thawed. It survived if corosync kept the membership: the
ring id seen from the peer's node did not change. The first stall that breaks the membership
ends that token's series: the partition with the arbiter's vote fences the standby, which is
started again and rejoins before the next token. Each token gets a cluster restart with it
in corosync.conf on both nodes (a reload would keep knet's link timeouts, which corosync
derives from the token at start).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from lab.cluster import Lab
from lab.drill import Drill
from lab.netns import wait_for
from lab.node import NodeSpec, cluster_start, exec_in
from lab.weather import stall
from prep_ha.cluster.model import consensus_ms, knet

TOKENS_MS = (3000, 6000, 12000)
STALL_SHARES = (0.3, 0.5, 0.7, 0.9, 1.2)  # of the token


@dataclass(frozen=True)
class Stall:
    token_ms: int
    stall_s: float
    survived: bool


def set_token(lab: Lab, token_ms: int) -> None:
    """Corosync restarted on both nodes with this token, as a stack deployed with it runs.
    Not a reload: knet keeps the link timeouts it derived from the token at start (a 1 s
    token set by `corosync-cfgtool -R` over 2 s survived a 0.8 s stall; restarted with it,
    0.5 s broke it)."""
    consensus, ping_timeout = consensus_ms(token_ms), knet(token_ms).ping_timeout_ms
    for spec in lab.nodes:
        exec_in(spec, "sed", "-i", "-E", f"s/^([[:space:]]*token:).*/\\1 {token_ms}/; "
                f"s/^([[:space:]]*consensus:).*/\\1 {consensus}/; "
                f"s/^([[:space:]]*knet_ping_timeout:).*/\\1 {ping_timeout}/",
                "/etc/corosync/corosync.conf")
    exec_in(lab.nodes[0], "pcs", "cluster", "stop", "--all", "--request-timeout=300",
            timeout=360)
    cluster_start(lab.nodes[0], "--all", "--wait=300")
    lab.wait_healthy(600)
    for spec in lab.nodes:
        runtime = exec_in(spec, "corosync-cmapctl", "-g", "runtime.config.totem.token")
        if int(runtime.rsplit("=", 1)[1]) != token_ms:
            raise RuntimeError(f"{spec.name}: corosync runs token {runtime.strip()}")


def ring_id(spec: NodeSpec) -> str:
    out = exec_in(spec, "corosync-quorumtool", "-s")
    return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.startswith("Ring ID"))


def sweep(lab: Lab, tokens: tuple[int, ...] = TOKENS_MS,
          echo: Callable[[str], None] = print) -> list[Stall]:
    drill = Drill(lab)
    results = []
    for token_ms in tokens:
        drill.restore()
        set_token(lab, token_ms)
        for share in STALL_SHARES:
            active, standby = drill.active()
            before = ring_id(active)
            seconds = token_ms * share / 1000
            stall(standby, seconds)
            # Long enough for corosync to notice and reform: token + consensus + margin.
            time.sleep(token_ms * 2.2 / 1000 + 2)
            survived = wait_for(lambda a=active: ring_id(a), 30, "corosync status") == before
            results.append(Stall(token_ms, seconds, survived))
            echo(f"token {token_ms} ms: standby frozen {seconds:.1f} s -> "
                 f"{'membership kept' if survived else 'membership broken, standby fenced'}")
            if not survived:
                break
    drill.restore()
    return results


def report(results: list[Stall]) -> str:
    lines = ["", "== stall tolerance: standby frozen, membership kept?"]
    for token_ms in sorted({r.token_ms for r in results}):
        row = [r for r in results if r.token_ms == token_ms]
        lines.append(f"   token {token_ms / 1000:.1f} s: " + ", ".join(
            f"{r.stall_s:.1f} s {'kept' if r.survived else 'BROKEN'}" for r in row))
    return "\n".join(lines)
