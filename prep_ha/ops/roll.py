"""Roll the stack's node software through the pair, with at most one peer interruption: the
ICON image and each node's payload (prep_ha/payload.py), as `pulumi up` runs it.

What a node must stop for is asked of the node itself (`prep-ha-payload plan DIGEST`, which
compares the payload with its files and says which of peer, ctz and node its changes touch;
the installer refuses a change to what runs):
- nothing: files read at each use, units restarted in place (pcsd, the firewall, the
  exporter), and a change for the role the node does not hold now -- installed in place;
- its role: what the running ICON container reads (its compose file, its unit, the image):
  on the standby the citizen stops while it changes; on the active node Peer moves first
  (a planned switchover to the standby, already updated) and the former active is then
  updated as the standby, so its citizen may start twice;
- the node: its network, its container runtime or new packages -- the node leaves the
  cluster cleanly while it changes (the active one after the switchover).
Standby first; a node already current is left alone, so the roll is idempotent, finishes a
half-done roll (the node keeps what an interrupted install began) and brings a replaced
node up to date without moving Peer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from prep_ha.cluster.model import CTZ_GROUP
from prep_ha.config import ICON_IMAGE_REPO, ICON_IMAGE_TAG
from prep_ha.ops.pair import Pair
from prep_ha.ops.shell import OpsError
from prep_ha.ops.switchover import MOVE_TIMEOUT_S, switchover

# As stack config admits the tag and prep-ha-image checks the reference on the node.
IMAGE = re.compile(f"{re.escape(ICON_IMAGE_REPO)}:{ICON_IMAGE_TAG}")
DIGEST = re.compile(r"[0-9a-f]{64}")
PAYLOAD = "sudo /usr/local/sbin/prep-ha-payload"
SETTLE = f"sudo pcs status wait {MOVE_TIMEOUT_S}"


@dataclass(frozen=True)
class NodeState:
    node: str
    role: str  # "peer" or "ctz": what runs there now
    configured: str  # /etc/prep-ha/icon-image.env
    running: str  # the running container's image
    # `prep-ha-payload plan` of the digest to roll ({} when no payload rolls).
    plan: dict = field(default_factory=dict)

    def image_current(self, image: str) -> bool:
        return self.configured == image and self.running == image

    @property
    def files_current(self) -> bool:
        return not (self.plan.get("changed") or self.plan.get("removed")
                    or self.plan.get("packages"))

    def current(self, image: str) -> bool:
        return self.image_current(image) and self.files_current and (
            not self.plan or self.plan["current"] == self.plan["digest"])

    def stop(self, image: str) -> str:
        """What must not run here while it changes: "node", "role" or ""."""
        if self.plan.get("node"):
            return "node"
        return "role" if self.plan.get(self.role) or not self.image_current(image) else ""


def survey(pair: Pair, image: str, payloads: Mapping[str, str]) -> list[NodeState]:
    """Active node first."""
    active = pair.peer_node()
    states = []
    for node, role in ((active, "peer"), (pair.shell.other(active), "ctz")):
        plan = (json.loads(pair.shell.out(node, f"{PAYLOAD} plan {payloads[node]}",
                                          timeout=300)) if node in payloads else {})
        states.append(NodeState(node, role, pair.current_image(node),
                                pair.running_image(node, role), plan))
    return states


def describe(states: list[NodeState], image: str) -> str:
    lines = []
    for s in states:
        what = [] if s.image_current(image) else [f"image {s.configured} -> {image}"]
        if s.plan and not s.files_current:
            what.append(f"files {', '.join(s.plan['changed'] + s.plan['removed']) or '-'}"
                        + (f", packages {', '.join(s.plan['packages'])}"
                           if s.plan["packages"] else ""))
        stop = s.stop(image)
        lines.append(f"  {s.node} ({s.role}): {'; '.join(what) or 'current'}"
                     + (f" [stops its {stop}]" if what and stop else ""))
    return "\n".join(lines)


def _install(pair: Pair, state: NodeState, payloads: Mapping[str, str], image: str) -> None:
    if state.plan:
        pair.shell.run(state.node, f"{PAYLOAD} install {payloads[state.node]}", timeout=1800)
    if not state.image_current(image):
        pair.shell.run(state.node, f"sudo prep-ha-image set {image}")


def _update_standby(pair: Pair, state: NodeState, payloads: Mapping[str, str],
                    image: str) -> None:
    """Bring the node that does not hold Peer up to date, stopping what the change needs;
    whatever happens, what it stopped starts again (the pair keeps its standby)."""
    if pair.peer_node() == state.node:  # a failover since the survey: nothing stops here
        raise OpsError(f"roll: Peer moved to {state.node} during the roll; run it again")
    stop = state.stop(image)
    run = pair.shell.run
    if not stop:
        _install(pair, state, payloads, image)
        return
    if stop == "node":
        # Out of the cluster cleanly (no fence): the other node and the arbiter keep quorum.
        leave, rejoin = "sudo pcs cluster stop --request-timeout=300", \
            "sudo pcs cluster start --wait=300"
    else:
        leave, rejoin = (f"sudo pcs resource {verb} {CTZ_GROUP} && {SETTLE}"
                         for verb in ("disable", "enable"))
    run(state.node, leave, timeout=MOVE_TIMEOUT_S + 100)
    try:
        _install(pair, state, payloads, image)
    finally:
        run(state.node, rejoin, timeout=MOVE_TIMEOUT_S + 100)
    problems = pair.health_problems(wait_s=MOVE_TIMEOUT_S)
    if problems:
        raise OpsError(f"roll: {state.node} is updated, but the cluster is not healthy "
                       f"afterwards: {problems}")
    pair.wait_serving(state.node, "ctz", image)


def roll(pair: Pair, image: str, payloads: Mapping[str, str] | None = None) -> bool:
    """`image` and node -> payload digest through the pair; True if anything changed."""
    # Both travel in SSH command lines: only plain values get that far.
    if not IMAGE.fullmatch(image):
        raise OpsError(f"{image!r} is not an iconloop/icon2-node:TAG reference")
    payloads = dict(payloads or {})
    bad = {n: d for n, d in payloads.items()
           if n not in pair.shell.hosts or not DIGEST.fullmatch(d)}
    if bad:
        raise OpsError(f"payloads must be NODE=SHA256 for {pair.shell.names}, not {bad}")
    pair.require_healthy(f"roll to {image}")
    active, standby = survey(pair, image, payloads)
    if active.current(image) and standby.current(image):
        pair.echo(f"roll: both nodes run {image} and their payloads, nothing to roll")
        return False
    pair.echo(f"roll: {image} and the nodes' payloads through the pair\n"
              f"{describe([active, standby], image)}")
    for state in (active, standby):
        if not state.image_current(image):
            pair.shell.run(state.node, f"sudo prep-ha-image pull {image}", timeout=1800)
    if not standby.current(image):
        _update_standby(pair, standby, payloads, image)
        pair.echo(f"roll: {standby.node} is up to date; the citizen serves with {image}")
    if not active.current(image):
        if not active.stop(image):
            _install(pair, active, payloads, image)
        else:
            # The image is read at the next start: the citizen's there, after the move. The
            # files wait: the installer refuses what Peer uses while it runs.
            if not active.image_current(image):
                pair.shell.run(active.node, f"sudo prep-ha-image set {image}")
            switchover(pair, checked=True)
            pair.wait_serving(standby.node, "peer", image)
            former = survey(pair, image, payloads)[1]
            if former.current(image):
                pair.wait_serving(former.node, "ctz", image)
            else:
                _update_standby(pair, former, payloads, image)
    pair.echo(f"roll: done, both nodes run {image} and their payloads; Peer on "
              f"{pair.peer_node()}")
    return True
