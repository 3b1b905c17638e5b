"""Drill cases for platform weather (lab/weather.py): what AWS does to healthy nodes must not
look like a failure, and a real failure right after it must still be taken over.

  freeze-active   the active node paused 8 s: nobody fenced, the peer never moves or restarts,
                  every probe after the thaw answered
  freeze-standby  the standby paused 8 s: nobody fenced, the peer answered throughout
  api-outage      the AWS APIs unreachable from both nodes for 5 minutes: the peer never stops,
                  nobody fenced, the outage alerted; then the active node hangs and is taken
                  over as usual
  lone-start      both nodes stopped, one started alone: it starts nothing and fences nobody
                  until the other is back (expected_votes 3, wait_for_all)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from lab.caseresult import CaseResult, corosync_timeouts
from lab.client import probe
from lab.node import cluster_start, exec_in, freeze
from lab.observe import Prober, Sampler, roles_on
from lab.weather import api_outage, stall

if TYPE_CHECKING:
    from lab.drill import Drill

STALL_S = 8.0
OUTAGE_S = 300.0
# After a thaw: a probe recorded this late was sent after the node ran again (1 s timeout).
PROBE_TIMEOUT_S = 1.5


def _settle(d: Drill) -> float:
    """Long enough for corosync and Pacemaker to act on anything: token + consensus + 10 s."""
    return sum(corosync_timeouts(d.active()[0])) / 1000 + 10


def stall_case(d: Drill, which: str) -> CaseResult:
    d.restore()
    active, standby = d.active()
    target = active if which == "active" else standby
    r = CaseResult(f"the {which} node paused whole for {STALL_S:g} s (platform weather)",
                   active.name)
    settle = _settle(d)
    with Sampler(tuple(d.lab.nodes)) as sampler, Prober(d.vip) as prober:
        t0 = time.time()
        stall(target, STALL_S)
        t_thaw = time.time()
        time.sleep(settle)
        status = d.lab.status()
    r.check("nobody was fenced (no EC2 stop)", not d.stops(t0))
    r.check("the peer VIP never moved", not d._vip_moves(t0))
    r.check("both nodes stayed online", status is not None and len(status.online) == 2)
    r.check(f"peer kept running on {active.name}, never restarted "
            f"(pids {sampler.peer_pids.get(active.name)})",
            len(sampler.peer_pids.get(active.name, [])) == 1
            and not sampler.peer_pids.get(standby.name))
    watched = prober.since(t_thaw + PROBE_TIMEOUT_S if target is active else t0)
    r.check(f"peer VIP answered from {active.name} in all {len(watched)} probes "
            f"{'after the thaw' if target is active else 'throughout'} ({settle:.0f} s)",
            watched and all(a and a["node"] == active.name for a in watched))
    return r


def api_outage_case(d: Drill) -> CaseResult:
    d.restore()
    active, standby = d.active()
    r = CaseResult(f"the AWS APIs unreachable from both nodes for {OUTAGE_S / 60:g} min, "
                   "then the active node hangs", active.name)
    with Sampler(tuple(d.lab.nodes)) as sampler, Prober(d.vip) as prober:
        t0 = time.time()
        with api_outage(d.lab.run_dir):
            time.sleep(OUTAGE_S)
            status = d.lab.status()
        answers = prober.since(t0)
        r.check(f"peer VIP answered from {active.name} in all {len(answers)} probes of the "
                "outage", answers and all(a and a["node"] == active.name for a in answers))
        r.check("nobody was fenced and the peer VIP never moved",
                not d.stops(t0) and not d._vip_moves(t0))
        r.check(f"peer never stopped or restarted (pids {sampler.peer_pids.get(active.name)})",
                len(sampler.peer_pids.get(active.name, [])) == 1)
        r.check("both nodes online, the peer and citizen still where they were",
                status is not None and len(status.online) == 2
                and status.where("peer-service") == (active.name,)
                and status.where("ctz-service") == (standby.name,))
        alert = _outage_alert(d, t0)
        r.check(f"the outage was alerted once the APIs answered: {alert}", alert is not None)
        # A real failure right after: fenced through the API that is back, taken over.
        t1 = time.time()
        freeze(active)
        t_moved = d.answers_from(standby.name)
        r.failover_s = t_moved - t1
        r.check(f"then the active node hung: the peer answers from {standby.name} "
                f"(+{t_moved - t1:.1f} s)", True)
        d._fencing(r, t1, active, standby, expect=True)
        d._rejoin(r, t1, active, standby, sampler, prober, t_moved)
    return r


def _outage_alert(d: Drill, since: float, timeout: float = 420) -> str | None:
    """The FencingUnavailable alert (fence-aws's failed monitor), delivered by the retries of
    prep-ha-alert once SNS answers again; polls, as the retries back off to 5 min."""
    deadline = time.time() + timeout
    while True:
        seen = d.alerts_since(since)
        subjects = [a["subject"] for a in seen["alerts"] if "EC2 API" in a["subject"]]
        if subjects and seen["metrics"].get("FencingUnavailable", 0) >= 1:
            return subjects[0]
        if time.time() > deadline:
            return None
        time.sleep(10)


def lone_start_case(d: Drill) -> CaseResult:
    d.restore()
    active, standby = d.active()
    r = CaseResult("both nodes stopped, then one started alone", active.name)
    settle = _settle(d)
    t0 = time.time()
    exec_in(active, "pcs", "cluster", "stop", "--all", "--request-timeout=300", timeout=360)
    t_start = time.time()
    cluster_start(standby)
    # Long enough for a quorate lone node to elect itself DC and fence the partner it has not
    # seen (startup fencing), as it did with expected_votes 2.
    time.sleep(settle + 30)
    quorum = exec_in(standby, "corosync-quorumtool", "-s", check=False)
    r.check(f"{standby.name} alone is not quorate (corosync-quorumtool: "
            f"{_line(quorum, 'Quorate')}, {_line(quorum, 'Flags')})",
            "Quorate:          No" in quorum)
    r.check(f"nobody was fenced (no EC2 stop) in {time.time() - t_start:.0f} s",
            not d.stops(t0))
    r.check(f"nothing started on {standby.name}: {sorted(roles_on(standby)) or 'no role'}",
            not roles_on(standby))
    r.check("the peer VIP does not answer", probe(d.vip) is None)
    cluster_start(active)
    d.lab.wait_healthy(600)
    answer = probe(d.vip)
    r.check(f"{active.name} started too: healthy, the peer VIP answers {answer}",
            answer is not None and answer["role"] == "peer")
    r.check("still nobody fenced", not d.stops(t0))
    return r


def _line(text: str, key: str) -> str:
    return next((ln.split(":", 1)[1].strip() for ln in text.splitlines()
                 if ln.startswith(key)), "?")


def cases(d: Drill) -> dict[str, Callable[[], CaseResult]]:
    out = {"freeze-active": lambda: stall_case(d, "active"),
           "freeze-standby": lambda: stall_case(d, "standby"),
           "api-outage": lambda: api_outage_case(d)}
    if d.lab.arbiter is not None:
        out["lone-start"] = lambda: lone_start_case(d)
    return out
