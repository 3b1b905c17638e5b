"""A planned switchover: Peer moves to the other node with no fencing, and nothing stays behind.

pcs's `resource move` bans the current node, waits for the move and removes its constraint
again; stickiness (200, above node 1's preference of 100) then keeps Peer where it went.
The citizen is stopped before the move and started after it: its stop (container, address,
an EC2 API call) would otherwise sit inside the peer's interruption, because Pacemaker frees
the target node before it starts Peer there.
"""

from __future__ import annotations

import time

from prep_ha.cluster.model import CTZ_GROUP, PEER_GROUP
from prep_ha.ops.pair import Pair
from prep_ha.ops.shell import OpsError

MOVE_TIMEOUT_S = 300


def switchover(pair: Pair, *, checked: bool = False) -> str:
    """Moves Peer to the other node; returns that node. `checked`: the caller has just
    found the cluster healthy."""
    if not checked:
        pair.require_healthy("switchover")
    source = pair.peer_node()
    target = pair.shell.other(source)
    pair.echo(f"switchover: moving Peer from {source} to {target}")
    # pcs 0.12 deprecates --wait on disable/enable (kept on move): `pcs status wait` waits
    # for the cluster to settle instead.
    settle = f"sudo pcs status wait {MOVE_TIMEOUT_S}"
    pair.shell.run(source, f"sudo pcs resource disable {CTZ_GROUP} && {settle}",
                   timeout=MOVE_TIMEOUT_S + 60)
    t0 = time.monotonic()
    try:
        pair.shell.run(source, f"sudo pcs resource move {PEER_GROUP} {target} "
                               f"--wait={MOVE_TIMEOUT_S}", timeout=MOVE_TIMEOUT_S + 60)
    finally:
        # A move that could not verify its cleanup leaves the constraint: never leave one.
        pair.shell.run(source, f"sudo pcs resource clear {PEER_GROUP}")
        pair.shell.run(source, f"sudo pcs resource enable {CTZ_GROUP} && {settle}",
                       timeout=MOVE_TIMEOUT_S + 60)
    if pair.peer_node() != target:
        raise OpsError(f"switchover: Peer is not on {target} after the move "
                       "(`pcs status --full`)")
    pair.wait_serving(target, "peer")
    pair.echo(f"switchover: the peer serves on {target} ({time.monotonic() - t0:.1f} s)")
    left = pair.move_constraints()
    if left:
        raise OpsError(f"switchover: move constraints remain: {left} "
                       f"(`pcs resource clear {PEER_GROUP}`)")
    problems = pair.health_problems(wait_s=MOVE_TIMEOUT_S)
    if problems:
        raise OpsError(f"switchover: Peer runs on {target}, but the cluster is not healthy "
                       f"afterwards: {problems}")
    return target
