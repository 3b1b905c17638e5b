"""Drill cases for the nodes' payloads (prep_ha/payload.py): a changed node file rolled through
the pair by `pulumi up`, and a node booting a payload that does not match its digest.

What the next `pulumi up` does to the cloud after a node file changes is what the program
declares (tests/test_operations.py shows it): a new payload object per node, named by its
digest, each instance's tag naming it, and the roll Command with the new digests on its
command line. The lab has no Pulumi state to diff against, so it takes each node's stored
payload, changes the one file, and makes those same three changes in moto before it runs the
deployed roll Command with the new digests put in.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import TYPE_CHECKING

from lab.bootstrap import run_command
from lab.deploy import Command
from lab.netns import LabError, ns_argv, run
from lab.node import exec_in
from lab.observe import Prober, roles_on
from lab.operations import (
    PROBE_INTERVAL,
    ROLL_COMMAND,
    checks_around_a_move,
    start_case,
    watched,
)
from lab.replacement import replace_instance
from lab.topology import CLOUD_NS
from prep_ha.payload import TAG, Payload, object_key

if TYPE_CHECKING:
    from lab.drill import CaseResult, Drill

INSTALLED = "/var/lib/prep-ha/payload/current"
# A file read at each use (no restart), one the citizen and one the peer reads when it starts.
USE_FILE = "/usr/local/sbin/prep-ha-alert"
CTZ_FILE = "/etc/prep-ha/ctz.yml"
PEER_FILE = "/etc/prep-ha/peer.yml"
# What sets up the node's interfaces: the node leaves the cluster while it changes.
NODE_FILE = "/usr/local/sbin/prep-ha-network"


def _cloud(drill: Drill, *argv: str) -> str:
    return run(ns_argv(CLOUD_NS, sys.executable, "-m", "lab.cloud", argv[0],
                       str(drill.lab.run_dir), *argv[1:]), timeout=120)


def stored_payload(drill: Drill, node: str) -> Payload:
    """The payload the node's tag names, as the bucket holds it."""
    deployment = drill.lab.deployment()
    path = drill.lab.run_dir / f"payload-{node}.tar.gz"
    _cloud(drill, "get-object", deployment.payload_bucket,
           object_key(_tagged(drill, node)), str(path))
    return Payload.from_archive(path.read_bytes())


def _tagged(drill: Drill, node: str) -> str:
    return drill.lab.deployment().node(node).payload_digest


def publish(drill: Drill, node: str, payload: Payload) -> str:
    """As `pulumi up` after a template change: the new object, then the instance's tag."""
    deployment = drill.lab.deployment()
    path = drill.lab.run_dir / f"payload-{node}.tar.gz"
    path.write_bytes(payload.archive())
    _cloud(drill, "put-object", deployment.payload_bucket, object_key(payload.digest),
           str(path))
    _cloud(drill, "tag", TAG, payload.digest, drill.instance[node])
    # The deployment describes what the next `up` leaves: the new tag.
    described = drill.lab.run_dir / "deployment.json"
    described.write_text(described.read_text().replace(_tagged(drill, node), payload.digest))
    return payload.digest


def with_file(payload: Payload, path: str, append: str) -> Payload:
    files = tuple(dataclasses.replace(f, content=f.content + append) if f.path == path else f
                  for f in payload.files)
    return dataclasses.replace(payload, files=files)


def roll_command(drill: Drill, digests: dict[str, str]) -> Command:
    """The program's roll Command as the next `pulumi up` runs it with these digests."""
    cmd = next(c for c in drill.lab.deployment().commands if c.name == ROLL_COMMAND)
    create, update = cmd.create, cmd.update or cmd.create
    for node in drill.lab.cfg.node_names:
        old = f"--payload {node}="
        current = create.split(old, 1)[1].split()[0]
        create = create.replace(old + current, old + digests[node])
        update = update.replace(old + current, old + digests[node])
    return dataclasses.replace(cmd, create=create, update=update)


def _roll_file(drill: Drill, r: CaseResult, path: str, line: str,
               expect_move: bool) -> float | None:
    """Change `path` on both nodes by `pulumi up`; the peer's interruption (None: none)."""
    source, target = drill.active()
    digests = {n: publish(drill, n, with_file(stored_payload(drill, n), path, line))
               for n in drill.lab.cfg.node_names}
    t0, out, sampler, prober = watched(drill, lambda: run_command(
        roll_command(drill, digests), drill.lab.key, update=True))
    r.check(f"`pulumi up` rolled {path} in {out.seconds:.0f} s", "roll: done" in out.stdout)
    for spec in drill.lab.nodes:
        installed = exec_in(spec, "cat", INSTALLED, check=False).strip()
        has = line in exec_in(spec, "cat", path, check=False)
        r.check(f"{spec.name} installed {installed[:12]} and runs the new {path}",
                installed == digests[spec.name] and has)
    if expect_move:
        return checks_around_a_move(drill, r, t0, source.name, target.name, sampler, prober,
                                    None)
    missed = [a for t, a in prober.answers if t >= t0 and (not a or a["node"] != source.name)]
    r.check(f"the peer answered from {source.name} in all {len(prober.answers)} probes "
            f"({len(missed)} missed)", prober.answers and not missed)
    pids = sampler.peer_pids.get(source.name, [])
    r.check(f"the peer never restarted (pids {pids})", len(pids) == 1)
    r.check("nobody was fenced (no EC2 stop)", not drill.stops(t0))
    again = run_command(roll_command(drill, digests), drill.lab.key, update=True)
    r.check("a second `pulumi up` changes nothing", "nothing to roll" in again.stdout)
    return None


def _citizen_pid(drill: Drill, node: str) -> str:
    return exec_in(drill.lab.node(node), "systemctl", "show", "--property=MainPID", "--value",
                   "ctz.service", check=False).strip()


def payload_roll_case(drill: Drill) -> CaseResult:
    """A fix to a script the nodes run at each use rolls with no interruption at all; a fix to
    what the citizen reads when it starts restarts the citizen on the standby only; a fix to
    what the peer reads, with one planned switchover; a fix to the node's network, with each
    node out of the cluster in turn and one planned switchover."""
    r, _, standby, _ = start_case(drill, "roll changed node files through the pair by "
                                         "`pulumi up`")
    _roll_file(drill, r, USE_FILE, "# lab: a fixed script\n", expect_move=False)
    before = _citizen_pid(drill, standby.name)
    _roll_file(drill, r, CTZ_FILE, "# lab: a fixed citizen compose file\n", expect_move=False)
    after = _citizen_pid(drill, standby.name)
    r.check(f"the citizen on {standby.name} restarted for its file (pid {before} -> {after}) "
            "and serves", before != after and drill.lab.healthy())
    r.failover_s = _roll_file(drill, r, PEER_FILE, "# lab: a fixed peer compose file\n",
                              expect_move=True)
    node_move = _roll_file(drill, r, NODE_FILE, "# lab: a fixed network script\n",
                           expect_move=True)
    r.check(f"peer interruption for the peer's file: {r.failover_s:.1f} s, for the node's: "
            f"{node_move:.1f} s (none for the others)"
            if r.failover_s is not None and node_move is not None
            else "both switchovers measured", None not in (r.failover_s, node_move))
    return r


def corrupt_payload_case(drill: Drill) -> CaseResult:
    """The standby's instance is replaced while its payload object does not match the digest
    its tag names: the new instance installs nothing and its readiness check says why, and the
    peer stays where it runs. With the object restored, the next replacement rejoins it."""
    r, active, other, _ = start_case(drill, "a replaced node boots a payload that does not match "
                                            "its digest")
    deployment = drill.lab.deployment()
    digest = _tagged(drill, other.name)
    good = drill.lab.run_dir / "payload-good.tar.gz"
    _cloud(drill, "get-object", deployment.payload_bucket, object_key(digest), str(good))
    bad = drill.lab.run_dir / "payload-bad.tar.gz"
    bad.write_bytes(good.read_bytes()[:-64] + bytes(64))
    _cloud(drill, "put-object", deployment.payload_bucket, object_key(digest), str(bad))
    with Prober(drill.vip, interval=PROBE_INTERVAL) as prober:
        t0 = time.time()
        try:
            replace_instance(drill, other.name)
            failure = ""
        except LabError as e:
            failure = str(e)
    named = next((ln.strip() for ln in failure.splitlines() if "digest mismatch" in ln), "")
    r.check(f"`pulumi up` stops at the new instance's readiness: {named or failure[-300:]}",
            digest in named and "-ready" in failure)
    r.check("cloud-init reports the failed first boot", "did not finish cleanly" in failure)
    missed = [a for _, a in prober.answers if not a or a["node"] != active.name]
    r.check(f"the peer answered from {active.name} in all {len(prober.answers)} probes "
            f"({len(missed)} missed)", prober.answers and not missed)
    r.check("nobody was fenced (no EC2 stop)", not drill.stops(t0))
    spec = drill.lab.node(other.name)
    roles, installed = roles_on(spec), exec_in(spec, "cat", INSTALLED, check=False)
    r.check(f"{other.name} installed nothing (roles {sorted(roles)}, installed payload "
            f"{installed.strip()[:12] or 'none'})", not roles and installed == "")
    _cloud(drill, "put-object", deployment.payload_bucket, object_key(digest), str(good))
    replace_instance(drill, other.name)
    r.check(f"with the object restored, a new instance of {other.name} rejoins as the citizen",
            sorted(roles_on(drill.lab.node(other.name))) == ["ctz"] and drill.lab.healthy())
    return r
