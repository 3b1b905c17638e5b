"""Drill cases for a multi-AZ stack: an availability zone is the unit AWS fails in.

  az-lost          the active node's AZ lost whole (node, subnets, endpoints, NLB node): the
                   peer answers again from the other AZ, never on two nodes; the lost node
                   stays off until its AZ is back, then rejoins as the citizen
  az-cut           the active node's AZ cut off from the other two: the other side (node and
                   arbiter) keeps quorum, fences it and takes the peer; zero samples with the
                   peer on both nodes
  az-arbiter-lost  the arbiter's AZ lost: nothing moves, the quorum device stops voting
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from lab.caseresult import CaseResult, corosync_timeouts
from lab.node import NodeSpec, exec_in, is_on
from lab.observe import Prober, Sampler
from lab.weather import heal_zones, zone_cut_off, zone_lost

if TYPE_CHECKING:
    from lab.drill import Drill


def _zone(d: Drill, spec: NodeSpec) -> str:
    return d.lab.cfg.nodes[d.lab.cfg.node_names.index(spec.name)].zone.name


def zone_lost_case(d: Drill) -> CaseResult:
    d.restore()
    active, standby = d.active()
    zone = _zone(d, active)
    r = CaseResult(f"the active node's AZ {zone} lost whole (node, subnets, endpoints, NLB "
                   "node)", active.name)
    with Sampler(tuple(d.lab.nodes)) as sampler, Prober(d.vip) as prober:
        t0 = time.time()
        zone_lost(d.lab.run_dir, zone, [active])
        t_moved = d.answers_from(standby.name)
        r.failover_s = t_moved - t0
        r.check(f"the peer answers from {standby.name} in the other AZ through the NLB "
                f"(+{r.failover_s:.1f} s)", True)
        d._placement(r, standby, sampler)
        d._fencing(r, t0, active, standby, expect=True)
        time.sleep(10)  # what fence-restart would do meanwhile: EC2 has no capacity there
        r.check(f"{active.name} stays off while {zone} is lost", not is_on(active))
        heal_zones(d.lab.run_dir)
        d.ec2("start", active.name)  # the operator, once the AZ is back
        d._rejoin(r, t0, active, standby, sampler, prober, t_moved)
    return r


def zone_cut_case(d: Drill) -> CaseResult:
    d.restore()
    active, standby = d.active()
    zone = _zone(d, active)
    r = CaseResult(f"the active node's AZ {zone} cut off from the other two", active.name)
    with Sampler(tuple(d.lab.nodes)) as sampler, Prober(d.vip) as prober:
        t0 = time.time()
        zone_cut_off(d.lab.run_dir, zone)
        t_moved = d.answers_from(standby.name)
        r.failover_s = t_moved - t0
        r.check(f"the side with the arbiter took the peer: it answers from {standby.name} "
                f"(+{r.failover_s:.1f} s)", True)
        d._placement(r, standby, sampler)
        d._fencing(r, t0, active, standby, expect=True)
        heal_zones(d.lab.run_dir)
        d._rejoin(r, t0, active, standby, sampler, prober, t_moved)
    return r


def arbiter_zone_lost_case(d: Drill) -> CaseResult:
    d.restore()
    active, standby = d.active()
    arbiter = d.lab.arbiter
    assert arbiter is not None
    zone = d.lab.cfg.arbiter_zone
    r = CaseResult(f"the arbiter's AZ {zone} lost whole", active.name)
    observe = sum(corosync_timeouts(active)) / 1000 + 10
    with Sampler(tuple(d.lab.nodes)) as sampler, Prober(d.vip) as prober:
        t0 = time.time()
        zone_lost(d.lab.run_dir, zone, [arbiter])
        time.sleep(observe)
        quorum = exec_in(active, "corosync-quorumtool", "-s", check=False)
        status = d.lab.status()
    heal_zones(d.lab.run_dir)
    answers = prober.since(t0)
    r.check(f"peer VIP answered from {active.name} in all {len(answers)} probes over "
            f"{observe:.0f} s", answers and all(a and a["node"] == active.name for a in answers))
    r.check("both nodes stayed online, nobody was fenced",
            status is not None and len(status.online) == 2 and not d.stops(t0))
    local = next((ln.split() for ln in quorum.splitlines() if "(local)" in ln), [])
    flags = local[2].split(",") if len(local) > 2 else []
    r.check(f"corosync-quorumtool: the quorum device is not voting ({','.join(flags)})",
            "NV" in flags)
    r.check("peer never restarted, never on two nodes",
            len(sampler.peer_pids.get(active.name, [])) == 1
            and not sampler.peer_pids.get(standby.name))
    return r


def cases(d: Drill) -> dict[str, Callable[[], CaseResult]]:
    if not d.lab.cfg.multi_az:
        return {}
    return {"az-lost": lambda: zone_lost_case(d), "az-cut": lambda: zone_cut_case(d),
            "az-arbiter-lost": lambda: arbiter_zone_lost_case(d)}
