"""Roll a new ICON image through the pair with at most one peer interruption.

Order: pull on both nodes; the standby's citizen restarts on the new image and must serve
the chain; the active node is set to the new image (used at its next start); a planned
switchover moves Peer to the updated standby, which stops the old peer and starts the
citizen on the former active with the new image. Peer stays where it went. A node already
on the image is left alone, so the roll is idempotent and also finishes a half-done roll or
brings a replaced node (booted with an older user-data) up to date without moving Peer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from prep_ha.cluster.model import CTZ_GROUP
from prep_ha.config import ICON_IMAGE_REPO, ICON_IMAGE_TAG
from prep_ha.ops.pair import Pair
from prep_ha.ops.shell import OpsError
from prep_ha.ops.switchover import MOVE_TIMEOUT_S, switchover

# As stack config admits the tag and prep-ha-image checks the reference on the node.
IMAGE = re.compile(f"{re.escape(ICON_IMAGE_REPO)}:{ICON_IMAGE_TAG}")


@dataclass(frozen=True)
class NodeImage:
    node: str
    role: str  # "peer" or "ctz": what runs there now
    configured: str  # /etc/prep-ha/icon-image.env
    running: str  # the running container's image

    def current(self, image: str) -> bool:
        return self.configured == image and self.running == image


def survey(pair: Pair) -> list[NodeImage]:
    """Active node first."""
    active = pair.peer_node()
    nodes = []
    for node, role in ((active, "peer"), (pair.shell.other(active), "ctz")):
        nodes.append(NodeImage(node, role, pair.current_image(node),
                               pair.running_image(node, role)))
    return nodes


def describe(nodes: list[NodeImage], image: str) -> str:
    return "\n".join(f"  {n.node} ({n.role}): runs {n.running or 'nothing'}, configured "
                     f"{n.configured}{'' if n.current(image) else f' -> {image}'}"
                     for n in nodes)


def roll(pair: Pair, image: str) -> bool:
    """True if anything changed."""
    # The image travels in SSH command lines: only a plain reference gets that far.
    if not IMAGE.fullmatch(image):
        raise OpsError(f"{image!r} is not an iconloop/icon2-node:TAG reference")
    pair.require_healthy(f"roll to {image}")
    active, standby = survey(pair)
    if active.current(image) and standby.current(image):
        pair.echo(f"roll: both nodes run {image}, nothing to roll")
        return False
    pair.echo(f"roll: {image} through the pair\n{describe([active, standby], image)}")
    for node in (active, standby):
        if not node.current(image):
            pair.shell.run(node.node, f"sudo prep-ha-image pull {image}", timeout=1800)
    if not standby.current(image):
        pair.shell.run(standby.node, f"sudo prep-ha-image set {image}")
        pair.shell.run(standby.node, f"sudo pcs resource restart {CTZ_GROUP} "
                                     f"--wait={MOVE_TIMEOUT_S}", timeout=MOVE_TIMEOUT_S + 60)
        pair.wait_serving(standby.node, "ctz", image)
        pair.echo(f"roll: the citizen on {standby.node} serves with {image}")
    if not active.current(image):
        pair.shell.run(active.node, f"sudo prep-ha-image set {image}")
        switchover(pair, checked=True)
        pair.wait_serving(active.node, "ctz", image)
        pair.wait_serving(standby.node, "peer", image)
    pair.echo(f"roll: done, both nodes run {image}; Peer on {pair.peer_node()}")
    return True
