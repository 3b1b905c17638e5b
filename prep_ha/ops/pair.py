"""The running pair as the operations see it: health, where Peer runs, what each node runs.

Health is the bootstrap script's own `health` step (rendered from the one cluster model), so
an operation refuses exactly what `pulumi up` would call unhealthy.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

from prep_ha.cluster.model import CTZ_GROUP, PEER_GROUP, build_model
from prep_ha.cluster.pcs import render_script
from prep_ha.config import StackConfig
from prep_ha.ops.shell import NodeShell, OpsError

ROLES = {PEER_GROUP: "peer", CTZ_GROUP: "ctz"}  # group -> its container (icon2-<role>)
# goloop's chain list on the RPC port (node/rest.go ChainView): the node serves the chain.
CHAIN_STATUS = "curl -sf -m 3 http://127.0.0.1:9000/admin/chain"
# The node's own answer (cloud-init/files/prep-ha-chain-sync): exit 0 while its data volume's
# first snapshot restore is under way, i.e. there is no chain to serve from yet.
RESTORING = "sudo /usr/local/sbin/prep-ha-chain-sync --restoring /app/icon"
# Move constraints pcs and crm_resource leave behind (`move`, `ban`) until `clear`.
MOVE_CONSTRAINT = re.compile(r'id="(cli-(?:prefer|ban)-[^"]+)"')


class Pair:
    def __init__(self, shell: NodeShell, cfg: StackConfig,
                 echo: Callable[[str], None] = print) -> None:
        self.shell = shell
        self.cfg = cfg
        self.script = render_script(build_model(cfg), hacluster_secret_id=cfg.hacluster_secret_name)
        self.echo = echo
        if sorted(shell.hosts) != sorted(cfg.node_names):
            raise OpsError(f"the nodes {sorted(shell.hosts)} are not the stack's "
                           f"{cfg.node_names}")

    def health_problems(self, wait_s: int = 0) -> str:
        """'' when healthy; else what is wrong, as the bootstrap's health step says it."""
        proc = self.shell.run(self.shell.names[0],
                              f"sudo env HEALTH_TIMEOUT={wait_s} bash -s health",
                              stdin=self.script, check=False, timeout=wait_s + 120)
        if proc.returncode == 0:
            return ""
        # The step prints its verdict, then `pcs status --full`: the verdict is enough here.
        return proc.stderr.split("\nCluster name:")[0].strip() or f"exit {proc.returncode}"

    def require_healthy(self, what: str) -> None:
        problems = self.health_problems()
        if problems:
            raise OpsError(f"{what} refused, nothing changed: {problems}\nFix the cluster "
                           "first (`pcs status --full` on a node), then run it again.")
        # Healthy to Pacemaker, but a node still restoring has no chain: moving the peer
        # there, or restarting its role, would cost hours.
        answers = {n: self.shell.run(n, RESTORING, check=False, timeout=30)
                   for n in self.shell.names}
        restoring = [f"{n}: {a.stdout.strip()}" for n, a in answers.items() if a.returncode == 0]
        if restoring:
            raise OpsError(f"{what} refused, nothing changed: {'; '.join(restoring)}\nRun it "
                           "again once the restore is done (`journalctl -u ctz -u peer` there).")

    def peer_node(self) -> str:
        out = self.shell.out(self.shell.names[0],
                             f"sudo crm_resource --locate --resource {PEER_GROUP}")
        running = [n for n in self.shell.names if re.search(rf"running on: {re.escape(n)}$",
                                                            out, re.M)]
        if len(running) != 1:
            raise OpsError(f"Peer is not running on exactly one node: {out!r}")
        return running[0]

    def current_image(self, node: str) -> str:
        return self.shell.out(node, "sudo prep-ha-image current")

    def running_image(self, node: str, role: str) -> str:
        return self.shell.out(node, f"sudo prep-ha-image running {role}")

    def serves(self, node: str) -> bool:
        proc = self.shell.run(node, CHAIN_STATUS, check=False, timeout=30)
        try:
            chains = json.loads(proc.stdout)
        except ValueError:
            return False
        return any(c.get("state") == "started" and not c.get("lastError") for c in chains)

    def wait_serving(self, node: str, role: str, image: str | None = None,
                     timeout: float = 300) -> None:
        """Until the role's container runs (`image`, if given) and serves the chain."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = self.running_image(node, role)
            if running and (image is None or running == image) and self.serves(node):
                return
            time.sleep(1)
        raise OpsError(f"{node}: the {role} does not serve the chain "
                       f"{f'with {image} ' if image else ''}after {timeout:.0f} s "
                       f"(`journalctl -u {role}` there)")

    def move_constraints(self) -> list[str]:
        xml = self.shell.out(self.shell.names[0], "sudo cibadmin --query --scope constraints")
        return MOVE_CONSTRAINT.findall(xml)
