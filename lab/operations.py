"""Drill cases for day-2 operations on the real nodes: switchover, image roll, refused roll,
and both refused while a snapshot restore runs.

The roll runs as `pulumi up` runs it after `pulumi config set iconImageTag`: the program's own
image-roll Command with the new image on its command line (tests/test_operations.py shows a
new tag changes nothing else in the program), from the client, over SSH with the pinned host
keys. The switchover runs prep_ha.ops as `python -m prep_ha switchover` does (the lab has no
`pulumi stack output`; the addresses come from its deployment instead).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from lab.bootstrap import run_command
from lab.client import probe
from lab.deploy import Command
from lab.netns import LabError, ns_argv
from lab.node import exec_in
from lab.observe import Prober, Sampler, roles_on
from lab.topology import CLIENT_NS
from prep_ha.ops.pair import Pair
from prep_ha.ops.shell import NodeShell, OpsError
from prep_ha.ops.switchover import switchover

if TYPE_CHECKING:
    from lab.drill import CaseResult, Drill
    from lab.node import NodeSpec

ROLL_COMMAND = "pacemaker-node-roll"
T = TypeVar("T")
# A data volume's restore marks (cloud-init/files/prep-ha-chain-sync).
RESTORE_PENDING = "/app/icon/restore-pending"
RESTORED = "/app/icon/data/restore/RESTORED"
PROBE_INTERVAL = 0.1


def watched(drill: Drill, action: Callable[[], T]) -> tuple[float, T, Sampler, Prober]:
    """`action`, with the roles sampled on the nodes and the peer VIP probed from a second
    before it to two seconds after: (its start time, its result, the sampler, the prober)."""
    with Sampler(tuple(drill.lab.nodes)) as sampler, \
            Prober(drill.vip, interval=PROBE_INTERVAL) as prober:
        t0 = time.time()
        time.sleep(1)
        result = action()
        time.sleep(2)
    return t0, result, sampler, prober


def lab_pair(drill: Drill) -> Pair:
    deployment = drill.lab.deployment()
    known = drill.lab.run_dir / "known_hosts"
    known.write_text(deployment.outputs["sshKnownHosts"])
    hosts = {n.node: n.management_eip.public_ip for n in deployment.nodes if n.management_eip}
    shell = NodeShell(hosts, str(drill.lab.key), str(known), wrap=tuple(ns_argv(CLIENT_NS)))
    return Pair(shell, drill.lab.cfg, echo=lambda line: None)


def roll_command(drill: Drill, image: str) -> Command:
    """The program's roll Command as the next `pulumi up` runs it with iconImageTag changed."""
    cmd = next(c for c in drill.lab.deployment().commands if c.name == ROLL_COMMAND)
    deployed = drill.lab.cfg.icon_image
    return dataclasses.replace(cmd, create=cmd.create.replace(deployed, image),
                               update=(cmd.update or cmd.create).replace(deployed, image))


def window(answers: list[tuple[float, dict | None]], source: str, target: str,
           image: str | None = None) -> tuple[float | None, list[str]]:
    """The one interruption: from the last answer of the peer on `source` to the first one
    on `target` (running `image`). Every other probe must have an answer from the right side:
    a gap outside the window, a citizen answering or a second switch is reported."""
    first = next((t for t, a in answers if a and a["node"] == target), None)
    last = max((t for t, a in answers if a and first and t < first), default=None)
    if first is None or last is None:
        return None, [f"the peer did not answer from {source}, then from {target}"]
    problems = []
    for t, a in answers:
        if t <= last:
            expected = a and a["role"] == "peer" and a["node"] == source
        elif t >= first:
            expected = a and a["role"] == "peer" and a["node"] == target and (
                image is None or a["image"] == image)
        else:
            expected = a is None
        if not expected:
            problems.append(f"+{t - answers[0][0]:.1f} s: {a}")
    return first - last, problems


def checks_around_a_move(drill: Drill, r: CaseResult, t0: float, source: str, target: str,
                         sampler: Sampler, prober: Prober, image: str | None) -> float | None:
    """The peer moved from `source` to `target` once, safely, with nobody fenced. Returns the
    interruption."""
    gap, problems = window([(t, a) for t, a in prober.answers if t >= t0], source, target,
                           image)
    r.check(f"the peer answered from {source}, then from {target}"
            f"{f' with {image}' if image else ''}, with one interruption of "
            f"{gap:.1f} s" if gap is not None else "one interruption", gap is not None
            and not problems)
    for problem in problems[:5]:
        r.check(f"unexpected answer {problem}", False)
    r.check("nobody was fenced (no EC2 stop)", not drill.stops(t0))
    r.check(f"peer never ran on both nodes ({sampler.samples} samples)",
            not sampler.peer_on_both)
    r.check("peer and citizen never ran on one node", not sampler.peer_with_ctz)
    pids = sampler.peer_pids.get(target, [])
    r.check(f"peer started once on {target} (pids {pids})", len(pids) == 1)
    return gap


def start_case(drill: Drill, title: str) -> tuple[CaseResult, NodeSpec, NodeSpec, Pair]:
    """A healthy pair to start from: the case's result, the active node, the other, the pair."""
    from lab.drill import CaseResult

    drill.restore()
    active, other = drill.active()
    return CaseResult(title, active.name), active, other, lab_pair(drill)


def switchover_case(drill: Drill) -> CaseResult:
    r, active, other, pair = start_case(drill, "planned switchover (python -m prep_ha switchover)")
    t0, moved_to, sampler, prober = watched(drill, lambda: switchover(pair))
    r.check(f"switchover reports Peer on {other.name}", moved_to == other.name)
    r.failover_s = checks_around_a_move(drill, r, t0, active.name, other.name, sampler,
                                         prober, None)
    r.check(f"citizen runs on {active.name}", "ctz" in roles_on(active))
    left = pair.move_constraints()
    r.check(f"no move constraint left ({left or 'none'})", not left)
    return r


def _images(pair: Pair) -> dict[str, tuple[str, str]]:
    """node -> (configured image, image of the running role)."""
    where = pair.peer_node()
    return {n: (pair.current_image(n), pair.running_image(n, "peer" if n == where else "ctz"))
            for n in pair.shell.names}


def upgrade_case(drill: Drill, runs: int = 3) -> CaseResult:
    """`runs` rolls (two new tags, then back to the deployed one): the median window."""
    r, _, _, pair = start_case(drill, f"roll the ICON image through the pair by `pulumi up` "
                                  f"({runs} times)")
    tag = drill.lab.cfg.icon_image
    images = [f"{tag}-lab{i}" for i in range(1, runs)] + [tag]
    gaps = []
    for image in images:
        source, target = drill.active()
        t0, out, sampler, prober = watched(drill, lambda image=image: run_command(
            roll_command(drill, image), drill.lab.key, update=True))
        r.check(f"roll to {image} done in {out.seconds:.0f} s", "roll: done" in out.stdout)
        gap = checks_around_a_move(drill, r, t0, source.name, target.name, sampler, prober,
                                    image)
        now = _images(pair)
        r.check(f"both nodes configured and running {image}: {now}",
                all(v == (image, image) for v in now.values()))
        if gap is not None:
            gaps.append(gap)
    again = run_command(roll_command(drill, images[-1]), drill.lab.key, update=True)
    r.check("a second `pulumi up` with the same tag changes nothing",
            "nothing to roll" in again.stdout)
    if len(gaps) == runs:
        r.failover_s = statistics.median(gaps)
    r.check(f"peer interruption per roll: median {r.failover_s:.1f} s "
            f"(runs: {', '.join(f'{g:.1f}' for g in gaps)} s)" if r.failover_s is not None
            else "every roll's interruption measured", r.failover_s is not None)
    return r


def refused_while_restoring_case(drill: Drill) -> CaseResult:
    """The standby's first snapshot restore has not finished (its volume's marks as
    prep-ha-chain-sync reads them): Pacemaker calls the pair healthy, but a switchover or a
    roll would put the peer, or restart the citizen, on a node without a chain."""
    r, active, other, pair = start_case(drill, "a switchover or roll during the standby's "
                                               "snapshot restore is refused")
    before = {n: pair.current_image(n) for n in pair.shell.names}
    exec_in(other, "sh", "-c", f"mv {RESTORED} {RESTORED}.lab && date -u > {RESTORE_PENDING}")
    try:
        for what, refused in (("switchover", _refusal(lambda: switchover(pair))),
                              ("`pulumi up` with a new image", _refused_roll(drill))):
            r.check(f"{what} fails: {_refused_line(refused)}",
                    "snapshot restore" in refused and "nothing changed" in refused)
    finally:
        exec_in(other, "sh", "-c", f"mv {RESTORED}.lab {RESTORED} && rm -f {RESTORE_PENDING}")
    _nothing_changed(drill, r, pair, before, active.name)
    return r


def _nothing_changed(drill: Drill, r: CaseResult, pair: Pair, before: dict[str, str],
                     active: str) -> None:
    after = {n: pair.current_image(n) for n in pair.shell.names}
    r.check(f"no node's image changed ({after})", after == before)
    answer = probe(drill.vip)
    r.check(f"the peer still answers from {active}", answer is not None
            and answer["node"] == active)


def _refused_roll(drill: Drill) -> str:
    """`pulumi up` with a new image tag: the error it failed with ('' if it rolled)."""
    return _refusal(lambda: run_command(
        roll_command(drill, f"{drill.lab.cfg.icon_image}-refused"), drill.lab.key, update=True))


def _refused_line(error: str) -> str:
    return next((ln for ln in error.splitlines() if "refused" in ln), "(it did not fail)")


def _refusal(attempt: Callable[[], object]) -> str:
    """The error an operation failed with; '' if it went through."""
    try:
        attempt()
    except (LabError, OpsError) as e:
        return str(e)
    return ""


def refused_roll_case(drill: Drill) -> CaseResult:
    """A roll on an unhealthy cluster (the standby in standby mode) changes nothing."""
    r, active, other, pair = start_case(drill, "a roll while the cluster is unhealthy is refused")
    before = {n: pair.current_image(n) for n in pair.shell.names}
    exec_in(active, "pcs", "node", "standby", other.name)
    refused = _refused_roll(drill)
    r.check(f"`pulumi up` fails: {_refused_line(refused)}", "nothing changed" in refused)
    _nothing_changed(drill, r, pair, before, active.name)
    return r
