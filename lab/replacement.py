"""Node replacement on the real nodes: `pulumi up --replace` of a node's instance.

The engine's order for a delete-before-replace instance (components/node.py, cluster.py):
1. the dependents that must be replaced are deleted first: the node's membership Command
   runs its `delete` (`retire`, on the other node); its ready wait has nothing to delete;
2. EC2: the volume and ENI attachments go (a stop first, for the volume), the instance is
   terminated, a new one runs on the same primary ENI with the same inputs and is attached
   again (lab/cloud.py `replace`); it boots a fresh root volume with the old data volume;
3. the Commands whose inputs name the instance run again in declared order: replaced ones
   (the id is a trigger) run `create`, updated ones (the id is on the command line) `update`.

Substitution: the lab has no Pulumi state, so step 3 takes the deployed Commands with the old
instance id replaced by the new one, which is what the program would declare next (its
inputs name the instance only by id).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from lab.bootstrap import run_command
from lab.deploy import Command
from lab.netns import ns_argv, run, set_cable, wait_for
from lab.node import exec_in, power_on, renew_root
from lab.observe import Prober, roles_on
from lab.operations import PROBE_INTERVAL, checks_around_a_move, start_case, watched
from lab.topology import CLOUD_NS
from prep_ha.cluster.model import FENCE_DEVICE

if TYPE_CHECKING:
    from lab.drill import CaseResult, Drill

DATA_MARK = "/app/icon/prep-ha-lab-replacement-mark"


def commands_after(commands: list[Command], instance_id: str) -> list[tuple[Command, bool]]:
    """(Command, update?) for each Command the next `up` runs once `instance_id` is new."""
    runs = []
    for cmd in commands:
        if instance_id in json.dumps(cmd.triggers or []):
            runs.append((cmd, False))
        elif instance_id in (cmd.update or cmd.create):
            runs.append((cmd, True))
    return runs


def replace_instance(drill: Drill, node: str, terminated: Callable[[], None] = lambda: None
                     ) -> tuple[str, str, list[str]]:
    """Replace `node`'s instance as `pulumi up --replace` does: (old id, new id, the output
    of each Command run). `terminated` runs once the old instance is gone."""
    lab = drill.lab
    deployment = lab.deployment()
    old_id = deployment.node(node).instance_id
    membership = next(c for c in deployment.commands if c.name.endswith(f"-{node}-membership"))
    retire = run_command(dataclasses.replace(membership, create=membership.delete or ""),
                         lab.key)
    outputs = [retire.stdout + retire.stderr]
    drill.replaced[old_id] = time.time()
    new_id = run(ns_argv(CLOUD_NS, sys.executable, "-m", "lab.cloud", "replace",
                         str(lab.run_dir), old_id), timeout=300).strip()
    terminated()
    # The next `up` declares the same resources with the new id wherever the old one was.
    for name in ("deployment.json", "nodes.json"):
        path = lab.run_dir / name
        path.write_text(path.read_text().replace(old_id, new_id))
    spec = lab.node(node)
    renew_root(spec, lab.run_dir / "ca.pem")
    power_on(spec)
    drill.instance[node] = new_id
    for cmd, update in commands_after(lab.deployment().commands, new_id):
        outputs.append(run_command(cmd, lab.key, update=update).stdout)
    return old_id, new_id, outputs


def _after_replacement(drill: Drill, r: CaseResult, node: str, stays: str, old_id: str,
                       new_id: str, outputs: list[str], seconds: float) -> None:
    """What every replacement leaves: the node back as the citizen on its new instance, with
    its data, known to fencing by the new id, and a healthy cluster."""
    r.check(f"{node}: {old_id} replaced by {new_id} in {seconds:.0f} s", old_id != new_id)
    said = next((ln for ln in outputs[0].splitlines() if f"{node} retired" in ln), "")
    r.check(f"retire ran on the node that stays: {said or 'no'}", said)
    spec, other = drill.lab.node(node), drill.lab.node(stays)
    roles = sorted(roles_on(spec))
    r.check(f"the new instance runs the citizen ({roles})", roles == ["ctz"])
    booted = exec_in(spec, "cat", "/var/lib/cloud/data/instance-id", check=False).strip()
    r.check(f"cloud-init booted it as {booted}", booted == new_id)
    host_map = exec_in(other, "crm_resource", "--resource", FENCE_DEVICE, "--get-parameter",
                       "pcmk_host_map", check=False).strip()
    r.check(f"fencing maps {node} to the new instance ({host_map})",
            f"{node}:{new_id}" in host_map and old_id not in host_map)
    r.check("the cluster is healthy (the health check, run again)", drill.lab.healthy())


def lost_replacement_case(drill: Drill) -> CaseResult:
    """The standby's instance is lost (its network cut: the cluster fences it, and it stays
    out when it boots again), then replaced: retire takes the node out without reaching it,
    and the peer is never interrupted. The new instance's ENIs work again."""
    r, active, other, _ = start_case(drill, "replace a lost standby's instance")
    cables = [nic.outer for nic in other.nics]
    for cable in cables:
        set_cable(cable, False)
    wait_for(lambda: (s := drill.lab.status(active)) is not None and other.name not in s.online
             and s.where("peer-service") == (active.name,), 120,
             f"{other.name} offline, the peer on {active.name}", 1)
    with Prober(drill.vip, interval=PROBE_INTERVAL) as prober:
        t0 = time.monotonic()
        old_id, new_id, outputs = replace_instance(
            drill, other.name, terminated=lambda: [set_cable(c, True) for c in cables])
        seconds = time.monotonic() - t0
    r.check("retire took it out without reaching it (pcs: --skip-offline)",
            "skip" in outputs[0].lower() or "unable to connect" in outputs[0].lower())
    missed = [a for _, a in prober.answers if not a or a["node"] != active.name]
    r.check(f"the peer answered from {active.name} in all {len(prober.answers)} probes "
            f"({len(missed)} missed)", prober.answers and not missed)
    _after_replacement(drill, r, other.name, active.name, old_id, new_id, outputs, seconds)
    return r


def replacement_case(drill: Drill) -> CaseResult:
    """Replace the active node's instance: the peer moves once, the new instance rejoins as
    the citizen with the chain data it had, and fencing knows its new id."""
    r, active, other, pair = start_case(drill, "replace the active node's instance "
                                               "(pulumi up --replace)")
    mark = exec_in(active, "sh", "-c", f"date +%s.%N | tee {DATA_MARK}").strip()
    def replace() -> tuple[tuple[str, str, list[str]], float]:
        start = time.time()
        return replace_instance(drill, active.name), time.time() - start

    t0, ((old_id, new_id, outputs), seconds), sampler, prober = watched(drill, replace)
    r.failover_s = checks_around_a_move(drill, r, t0, active.name, other.name, sampler,
                                        prober, None)
    _after_replacement(drill, r, active.name, other.name, old_id, new_id, outputs, seconds)
    r.check("its data volume kept the chain data (a mark written before)",
            exec_in(drill.lab.node(active.name), "cat", DATA_MARK, check=False).strip() == mark)
    left = pair.move_constraints()
    r.check(f"no move constraint left ({left or 'none'})", not left)
    return r
