"""The failover drill: fail the node holding Peer in several ways and check what the cluster did.

Every case starts from a healthy pair; the "active" node is whichever holds Peer (stickiness
keeps it where the previous case left it). Evidence comes from three independent places:
moto's EC2 API log (fencing = an instance stop, the VIP = an AssignPrivateIpAddresses), the
client's view of the peer VIP, and a sampler of the stand-ins running on each node.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lab.cloud import read_events
from lab.cluster import Lab
from lab.netns import set_cable, wait_for
from lab.node import NodeSpec, exec_in, is_on, kill_matching, power_on
from lab.observe import Sampler, probe, roles_on

FAILOVER_TIMEOUT = 300
RESTORE_TIMEOUT = 300


@dataclass
class CaseResult:
    name: str
    active: str
    checks: list[tuple[str, bool]] = field(default_factory=list)
    failover_s: float | None = None

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.checks)

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, bool(ok)))

    def report(self) -> str:
        took = f", peer answers again after {self.failover_s:.1f} s" if self.failover_s else ""
        lines = [f"== {self.name} (Peer was on {self.active}){took}: "
                 f"{'PASS' if self.passed else 'FAIL'}"]
        lines += [f"   {'ok ' if ok else 'BAD'} {what}" for what, ok in self.checks]
        return "\n".join(lines)


def is_daemon(argv: list[str]) -> bool:
    name = argv[0].rsplit("/", 1)[-1]
    return name in ("corosync", "pacemakerd") or name.startswith("pacemaker-")


def is_peer(argv: list[str]) -> bool:
    return len(argv) >= 2 and argv[-1] == "peer" and argv[-2].endswith("standin.py")


class Drill:
    def __init__(self, lab: Lab):
        self.lab = lab
        self.vip = lab.cfg.peer_vip
        self.eni = {i["node"]: i["eni_id"] for i in lab.inventory()}
        self.instance = {i["node"]: i["instance_id"] for i in lab.inventory()}

    # ---- state
    def active(self) -> tuple[NodeSpec, NodeSpec]:
        status = wait_for(self.lab.status, 60, "cluster status")
        holder = status.where("peer-service")[0]
        other = next(n for n in self.lab.nodes if n.name != holder)
        return self.lab.node(holder), other

    def restore(self) -> None:
        """Back to two healthy nodes: cables in, nodes on, no standby, failures cleared."""
        for node in self.lab.nodes:
            for cable in self.lab.topo.cables(node):
                set_cable(cable, True)
            if not is_on(node):
                power_on(node)
        self.lab.wait_members(RESTORE_TIMEOUT)
        admin = next(n for n in self.lab.nodes if is_on(n))
        exec_in(admin, "pcs", "node", "unstandby", "--all")
        exec_in(admin, "pcs", "resource", "cleanup")
        self.lab.wait_healthy(RESTORE_TIMEOUT)

    def answers_from(self, node: str, timeout: float = FAILOVER_TIMEOUT) -> float:
        wait_for(lambda: (a := probe(self.vip)) is not None and a["role"] == "peer"
                 and a["node"] == node, timeout, f"the peer VIP answering from {node}", 0.2)
        return time.time()

    # ---- checks shared by the cases
    def _fencing(self, r: CaseResult, t0: float, active: NodeSpec, other: NodeSpec,
                 expect: bool) -> None:
        events = read_events(self.lab.run_dir, t0)
        stops = [e["t"] for e in events if e.get("power") == "off"]
        moves = [e["t"] for e in events if e.get("action") == "AssignPrivateIpAddresses"
                 and e["params"].get("PrivateIpAddress.1") == self.vip
                 and e["params"].get("NetworkInterfaceId") == self.eni[other.name]]
        if not expect:
            r.check("nobody was fenced (no EC2 stop)", not stops)
            return
        own = [e["t"] for e in events if e.get("power") == "off" and e["node"] == active.name]
        r.check(f"{active.name} was fenced: EC2 stopped {self.instance[active.name]} "
                f"(+{own[0] - t0:.1f} s)" if own else f"{active.name} was fenced", own)
        r.check(f"{other.name} was not fenced", not [e for e in events if e.get("power") == "off"
                                                     and e["node"] == other.name])
        r.check("the fence came before the VIP moved" +
                (f" (+{moves[0] - t0:.1f} s)" if moves else " (VIP never moved)"),
                own and moves and own[0] < moves[0])

    def _placement(self, r: CaseResult, new: NodeSpec, sampler: Sampler,
                   ctz_everywhere: bool = False) -> None:
        answer = probe(self.vip)
        r.check(f"peer VIP {self.vip}:9000 answers {answer}", answer is not None
                and answer["role"] == "peer" and answer["node"] == new.name)
        r.check(f"citizen not running on {new.name}", "ctz" not in roles_on(new))
        if ctz_everywhere:
            status = self.lab.status()
            r.check("citizen stopped on every node", status is not None
                    and not status.where("ctz-service"))
        r.check(f"peer never ran on both nodes ({sampler.samples} samples)",
                not sampler.peer_on_both)
        r.check("peer and citizen never ran on one node", not sampler.peer_with_ctz)

    # ---- cases
    def _failover(self, name: str, inject: Callable[[NodeSpec], None], fenced: bool,
                  ctz_everywhere: bool = False) -> CaseResult:
        self.restore()
        active, other = self.active()
        r = CaseResult(name, active.name)
        with Sampler(self.lab.nodes) as sampler:
            t0 = time.time()
            inject(active)
            r.failover_s = self.answers_from(other.name) - t0
            self._placement(r, other, sampler, ctz_everywhere)
        self._fencing(r, t0, active, other, fenced)
        return r

    def kill_daemons(self) -> CaseResult:
        return self._failover("kill corosync and pacemaker on the active node",
                              lambda n: kill_matching(n, is_daemon), fenced=True)

    def cut_links(self) -> CaseResult:
        def cut(n: NodeSpec) -> None:
            for cable in self.lab.topo.cables(n):
                set_cable(cable, False)
        return self._failover("cut both corosync links of the active node", cut, fenced=True)

    def standby(self) -> CaseResult:
        return self._failover(
            "put the active node in standby",
            lambda n: exec_in(n, "pcs", "node", "standby", n.name), fenced=False,
            ctz_everywhere=True)

    def peer_dies(self) -> CaseResult:
        """The stand-in dies twice: restarted in place, then moved (migration-threshold 2)."""
        self.restore()
        active, other = self.active()
        r = CaseResult("the peer service dies (twice)", active.name)
        with Sampler(self.lab.nodes) as sampler:
            t0 = time.time()
            kill_matching(active, is_peer)
            t1 = self.answers_from(active.name)
            r.check(f"first failure: restarted in place on {active.name} (+{t1 - t0:.1f} s)", True)
            kill_matching(active, is_peer)
            r.failover_s = self.answers_from(other.name) - t0
            self._placement(r, other, sampler)
        self._fencing(r, t0, active, other, expect=False)
        return r

    def heartbeat_cut(self) -> CaseResult:
        """Only link 0 fails: link 1 carries the membership, so nothing may happen."""
        self.restore()
        active, _ = self.active()
        r = CaseResult("cut only the heartbeat link of the active node", active.name)
        corosync = self.lab.model.corosync
        observe = (corosync.token_ms + corosync.consensus_ms) / 1000 + 5
        answers = []
        with Sampler(self.lab.nodes) as sampler:
            t0 = time.time()
            set_cable(self.lab.topo.cables(active)[0], False)
            while time.time() - t0 < observe:
                answers.append(probe(self.vip))
                time.sleep(0.5)
            status = self.lab.status()
        set_cable(self.lab.topo.cables(active)[0], True)
        r.check(f"peer VIP answered from {active.name} in all {len(answers)} probes over "
                f"{observe:.0f} s", all(a and a["node"] == active.name for a in answers))
        r.check("both nodes stayed online", status is not None and len(status.online) == 2)
        r.check("peer never ran on both nodes", not sampler.peer_on_both)
        self._fencing(r, t0, active, active, expect=False)
        return r

    def cases(self) -> dict[str, Callable[[], CaseResult]]:
        return {"heartbeat": self.heartbeat_cut, "service": self.peer_dies,
                "standby": self.standby, "kill": self.kill_daemons, "links": self.cut_links}

    def run(self, names: list[str] | None = None,
            echo: Callable[[str], None] = print) -> list[CaseResult]:
        results = []
        for name, case in self.cases().items():
            if names and name not in names:
                continue
            result = case()
            echo(result.report())
            results.append(result)
        self.restore()
        return results
