"""The failover drill: fail the node holding Peer in several ways and check what the cluster did.

Every case starts from a healthy pair; the "active" node is whichever holds Peer (stickiness
keeps it where the previous case left it). Evidence comes from independent places: the EC2
API's log in moto (fencing = an instance stop, the VIP move = AssignPrivateIpAddresses, or
ReplaceRoute of the overlay IP's routes on a multi-AZ stack), the
client's view of the peer VIP, and a sampler of the role processes on each node. A fenced node
is started again by fence_aws (stop, then start) and must boot and rejoin as the citizen
without the peer being stopped or started again.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

from lab import az_drill, operations, payloads, replacement, weather_drill
from lab.caseresult import CaseResult, corosync_timeouts
from lab.client import probe
from lab.cloud import read_events
from lab.cluster import Lab
from lab.leakscan import scan_lab
from lab.netns import heal, ns_argv, run, set_cable, split, wait_for
from lab.node import NodeSpec, exec_in, exec_proc, freeze, is_on, kill_matching
from lab.observe import Prober, Sampler, is_role, roles_on
from lab.topology import CLOUD_NS, Cables
from lab.weather import heal_zones, route_split

FAILOVER_TIMEOUT = 300
RESTORE_TIMEOUT = 600


class Drill:
    def __init__(self, lab: Lab):
        self.lab = lab
        self.vip = lab.cfg.peer_vip
        deployment = lab.deployment()
        self.eni = {n.node: n.eni(0).eni_id for n in deployment.instances}
        self.instance = {n.node: n.instance_id for n in deployment.instances}
        # instance id -> when lab/replacement.py began to terminate it (after its retire)
        self.replaced: dict[str, float] = {}

    # ---- state
    def active(self) -> tuple[NodeSpec, NodeSpec]:
        status = wait_for(self.lab.status, 60, "cluster status")
        holder = status.where("peer-service")[0]
        other = next(n for n in self.lab.nodes if n.name != holder)
        return self.lab.node(holder), other

    def restore(self) -> None:
        """Back to two healthy nodes: every AZ back, cables in, instances started, no standby,
        no failures."""
        heal_zones(self.lab.run_dir)
        for spec in self.lab.hosts:
            for nic in spec.nics:
                set_cable(nic.outer, True)
        heal()
        stopped = [n.name for n in self.lab.hosts if not is_on(n)]
        if stopped:
            self.ec2("start", *stopped)
        self.lab.wait_members(RESTORE_TIMEOUT)
        # Online in the DC's view can come a moment before a rejoined node's own controller
        # takes requests ("Connection refused"): try each live node until one does.
        wait_for(self._clear_standby_and_failures, 60, "pcs unstandby and cleanup to run", 2)
        self.lab.wait_healthy(RESTORE_TIMEOUT)

    def _clear_standby_and_failures(self) -> bool:
        for admin in (n for n in self.lab.nodes if is_on(n)):
            if exec_proc(admin, "pcs", "node", "unstandby", "--all").returncode == 0 and \
                    exec_proc(admin, "pcs", "resource", "cleanup").returncode == 0:
                return True
        return False

    def ec2(self, action: str, *names: str) -> None:
        """Start or stop instances through the EC2 API (moto), as an operator or AWS would."""
        run(ns_argv(CLOUD_NS, sys.executable, "-m", "lab.cloud", action, str(self.lab.run_dir),
                    *(self.instance[n] for n in names)))

    def stops(self, since: float) -> list[str]:
        """Nodes EC2 stopped since `since` (fencing, or the drill stopping the arbiter); not
        the stop of an instance a replacement terminates (a fence before it counts)."""
        return [e["node"] for e in read_events(self.lab.run_dir, since)
                if e.get("power") == "off"
                and e["t"] < self.replaced.get(e.get("instance"), float("inf"))]

    def answers_from(self, node: str, timeout: float = FAILOVER_TIMEOUT) -> float:
        wait_for(lambda: (a := probe(self.vip)) is not None and a["role"] == "peer"
                 and a["node"] == node, timeout, f"the peer VIP answering from {node}", 0.2)
        return time.time()

    # ---- checks shared by the cases
    def _fencing(self, r: CaseResult, t0: float, active: NodeSpec, other: NodeSpec,
                 expect: bool) -> None:
        events = read_events(self.lab.run_dir, t0)
        stops = [e for e in events if e.get("power") == "off"]
        moves = self._vip_moves(t0, to=other.name)
        if not expect:
            r.check("nobody was fenced (no EC2 stop)", not stops)
            return
        own = [e["t"] for e in stops if e["node"] == active.name]
        r.check(f"{active.name} was fenced: EC2 stopped {self.instance[active.name]} "
                f"(+{own[0] - t0:.1f} s)" if own else f"{active.name} was fenced", own)
        r.check(f"{other.name} was not fenced", not [e for e in stops
                                                     if e["node"] == other.name])
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

    def _rejoin(self, r: CaseResult, t0: float, fenced: NodeSpec, survivor: NodeSpec,
                sampler: Sampler, prober: Prober, t_moved: float) -> None:
        """The fenced instance boots again and comes back as the citizen, the peer untouched."""
        try:
            self.lab.wait_healthy(RESTORE_TIMEOUT)
        except Exception as e:  # noqa: BLE001 - reported as a failed check
            r.check(f"{fenced.name} booted again and rejoined: {e}", False)
            return
        status = self.lab.status()
        r.check(f"{fenced.name} booted again and rejoined as the citizen "
                f"(+{time.time() - t0:.0f} s)",
                status is not None and status.where("ctz-service") == (fenced.name,))
        after = prober.since(t_moved)
        bad = [a for a in after if not (a and a["node"] == survivor.name)]
        r.check(f"peer answered from {survivor.name} in all {len(after)} probes while "
                f"{fenced.name} rejoined", after and not bad)
        pids = sampler.peer_pids.get(survivor.name, [])
        r.check(f"peer started once on {survivor.name} and never restarted (pids {pids})",
                len(pids) == 1)

    # ---- cases
    def _failover(self, name: str, inject: Callable[[NodeSpec], None], fenced: bool,
                  ctz_everywhere: bool = False,
                  after: Callable[[NodeSpec], None] | None = None) -> CaseResult:
        self.restore()
        active, other = self.active()
        r = CaseResult(name, active.name)
        with Sampler(tuple(self.lab.nodes)) as sampler, Prober(self.vip) as prober:
            t0 = time.time()
            inject(active)
            t_moved = self.answers_from(other.name)
            r.failover_s = t_moved - t0
            self._placement(r, other, sampler, ctz_everywhere)
            self._fencing(r, t0, active, other, fenced)
            if fenced:
                if after:
                    after(active)
                self._rejoin(r, t0, active, other, sampler, prober, t_moved)
        return r

    def hang(self) -> CaseResult:
        # Not `kill corosync`: systemd restarts it within the token timeout, as it should.
        return self._failover("the active node hangs (every process frozen)", freeze,
                              fenced=True)

    def cut_links(self) -> CaseResult:
        def cut(n: NodeSpec) -> None:
            cables = Cables.of(n)
            set_cable(cables.heartbeat, False)
            set_cable(cables.service, False)

        def repair(n: NodeSpec) -> None:  # the network comes back; the node was rebooted
            cables = Cables.of(n)
            set_cable(cables.heartbeat, True)
            set_cable(cables.service, True)
        return self._failover("cut both corosync links of the active node", cut, fenced=True,
                              after=repair)

    def standby(self) -> CaseResult:
        return self._failover(
            "put the active node in standby",
            lambda n: exec_in(n, "pcs", "node", "standby", n.name), fenced=False,
            ctz_everywhere=True)

    def peer_dies(self) -> CaseResult:
        """The peer process dies twice: restarted in place, then moved (migration-threshold 2)."""
        self.restore()
        active, other = self.active()
        r = CaseResult("the peer service dies (twice)", active.name)
        with Sampler(tuple(self.lab.nodes)) as sampler:
            t0 = time.time()
            kill_matching(active, lambda a: is_role(a, "peer"))
            wait_for(lambda: probe(self.vip) is None or "peer" not in roles_on(active), 30,
                     "the peer to be noticed dead", 0.2)
            t1 = self.answers_from(active.name)
            r.check(f"first failure: restarted in place on {active.name} (+{t1 - t0:.1f} s)",
                    True)
            kill_matching(active, lambda a: is_role(a, "peer"))
            r.failover_s = self.answers_from(other.name) - t0
            self._placement(r, other, sampler)
        self._fencing(r, t0, active, other, expect=False)
        return r

    def heartbeat_cut(self) -> CaseResult:
        """Only link 0 fails: link 1 carries the membership, so nothing may happen."""
        self.restore()
        active, _ = self.active()
        r = CaseResult("cut only the heartbeat link of the active node", active.name)
        corosync = corosync_timeouts(active)
        observe = sum(corosync) / 1000 + 5
        cable = Cables.of(active).heartbeat
        with Sampler(tuple(self.lab.nodes)) as sampler, Prober(self.vip) as prober:
            t0 = time.time()
            set_cable(cable, False)
            time.sleep(observe)
            status = self.lab.status()
        set_cable(cable, True)
        answers = prober.since(t0)
        r.check(f"peer VIP answered from {active.name} in all {len(answers)} probes over "
                f"{observe:.0f} s", answers and all(a and a["node"] == active.name
                                                    for a in answers))
        r.check("both nodes stayed online", status is not None and len(status.online) == 2)
        r.check("peer never ran on both nodes", not sampler.peer_on_both)
        self._fencing(r, t0, active, active, expect=False)
        return r

    def _split_nodes(self, a: NodeSpec, b: NodeSpec) -> None:
        """Cut every link between the two nodes; both still reach the VPC and the arbiter.
        At the switch for the subnets they share, at the VPC router for the rest (multi-AZ)."""
        split([n.outer for n in a.nics], [n.outer for n in b.nics])
        deployment = self.lab.deployment()
        ips = [[ip for e in deployment.node(n.name).enis for ip in e.private_ips] for n in (a, b)]
        route_split(*ips)

    def split_with_arbiter(self) -> CaseResult:
        """The nodes lose each other: the arbiter's vote goes to the peer's side, so only the
        standby is fenced, and the peer never misses a probe."""
        self.restore()
        active, standby = self.active()
        r = CaseResult("cut every link between the nodes, both reach the arbiter", active.name)
        with Sampler(tuple(self.lab.nodes)) as sampler, Prober(self.vip) as prober:
            t0 = time.time()
            self._split_nodes(active, standby)
            wait_for(lambda: standby.name in self.stops(t0), FAILOVER_TIMEOUT,
                     f"{standby.name} to be fenced")
            r.check(f"{standby.name} was fenced (+{time.time() - t0:.1f} s)", True)
            heal()
            heal_zones(self.lab.run_dir)
            self._rejoin(r, t0, standby, active, sampler, prober, t0)
        r.check(f"{active.name} was not fenced", active.name not in self.stops(t0))
        r.check("the peer VIP never moved", not self._vip_moves(t0))
        r.check(f"peer never ran on both nodes ({sampler.samples} samples)",
                not sampler.peer_on_both)
        return r

    def arbiter_lost(self) -> CaseResult:
        """The arbiter stops: nothing moves, and the quorum status says the device is gone."""
        self.restore()
        active, _ = self.active()
        arbiter = self.lab.arbiter
        r = CaseResult("the arbiter is lost", active.name)
        observe = sum(corosync_timeouts(active)) / 1000 + 10
        with Sampler(tuple(self.lab.nodes)) as sampler, Prober(self.vip) as prober:
            t0 = time.time()
            self.ec2("stop", arbiter.name)
            time.sleep(observe)
            quorum = exec_in(active, "corosync-quorumtool", "-s", check=False)
            status = self.lab.status()
        answers = prober.since(t0)
        r.check(f"peer VIP answered from {active.name} in all {len(answers)} probes over "
                f"{observe:.0f} s", answers and all(a and a["node"] == active.name
                                                    for a in answers))
        r.check("both nodes stayed online", status is not None and len(status.online) == 2)
        r.check("nobody else was stopped", set(self.stops(t0)) == {arbiter.name})
        # The local node's line: "<id> <votes> <qdevice flags> <name> (local)".
        local = next((ln.split() for ln in quorum.splitlines() if "(local)" in ln), [])
        flags = local[2].split(",") if len(local) > 2 else []
        r.check(f"corosync-quorumtool: the quorum device is not voting ({','.join(flags)})",
                "NV" in flags)
        r.check("peer never restarted", len(sampler.peer_pids.get(active.name, [])) == 1)
        return r

    def arbiter_lost_then_split(self) -> CaseResult:
        """No arbiter and no link between the nodes: no side has quorum. The peer keeps
        running where it runs (no-quorum-policy=freeze), nobody is fenced."""
        self.restore()
        active, standby = self.active()
        r = CaseResult("the arbiter is lost, then the nodes split", active.name)
        observe = sum(corosync_timeouts(active)) / 1000 + 15
        with Sampler(tuple(self.lab.nodes)) as sampler, Prober(self.vip) as prober:
            t0 = time.time()
            self.ec2("stop", self.lab.arbiter.name)
            time.sleep(5)
            self._split_nodes(active, standby)
            time.sleep(observe)
            answers = prober.since(t0)
        r.check(f"peer VIP answered from {active.name} in all {len(answers)} probes",
                answers and all(a and a["node"] == active.name for a in answers))
        r.check("nobody was fenced", set(self.stops(t0)) == {self.lab.arbiter.name})
        r.check(f"peer never ran on both nodes ({sampler.samples} samples)",
                not sampler.peer_on_both)
        r.check(f"peer kept running on {active.name}, never restarted",
                len(sampler.peer_pids.get(active.name, [])) == 1
                and not sampler.peer_pids.get(standby.name))
        r.check(f"what runs: the peer on {active.name}; the citizen on {standby.name} "
                f"{'stopped' if 'ctz' not in roles_on(standby) else 'still running'}", True)
        return r

    def _vip_moves(self, since: float, to: str | None = None) -> list[float]:
        """When the peer's address was moved (to node `to`, or anywhere) through the EC2 API:
        AssignPrivateIpAddresses of the VIP, or (multi-AZ) ReplaceRoute of its /32."""
        def moved(params: dict) -> bool:
            if to is not None and params.get("NetworkInterfaceId") != self.eni[to]:
                return False
            return params.get("PrivateIpAddress.1") == self.vip or \
                params.get("DestinationCidrBlock") == f"{self.vip}/32"
        return [e["t"] for e in read_events(self.lab.run_dir, since)
                if e.get("action") in ("AssignPrivateIpAddresses", "ReplaceRoute")
                and moved(e["params"])]

    def cases(self) -> dict[str, Callable[[], CaseResult]]:
        cases = {"heartbeat": self.heartbeat_cut, "service": self.peer_dies,
                 "standby": self.standby, "hang": self.hang, "links": self.cut_links,
                 **weather_drill.cases(self), **az_drill.cases(self)}
        if self.lab.arbiter is not None:
            cases.update({"split": self.split_with_arbiter, "arbiter": self.arbiter_lost,
                          "arbiter-split": self.arbiter_lost_then_split})
        cases.update({"switchover": lambda: operations.switchover_case(self),
                      "upgrade": lambda: operations.upgrade_case(self),
                      "roll-refused": lambda: operations.refused_roll_case(self),
                      "restore-refused": lambda: operations.refused_while_restoring_case(self),
                      "replace": lambda: replacement.replacement_case(self),
                      "replace-lost": lambda: replacement.lost_replacement_case(self),
                      "payload-roll": lambda: payloads.payload_roll_case(self),
                      "payload-corrupt": lambda: payloads.corrupt_payload_case(self)})
        return cases

    def run(self, names: list[str] | None = None, echo: Callable[[str], None] = print,
            leak_scan: bool = True) -> list[CaseResult]:
        """The cases (all, or `names`); with `leak_scan`, each case ends with a leak scan of
        the whole lab (lab/leakscan.py), the drill's own output included, and fails on a hit."""
        results: list[CaseResult] = []
        for name in self.cases():
            if names and name not in names:
                continue
            result = self.run_case(name)
            if leak_scan:
                self.leak_scan(result, [r.report() for r in results])
            echo(result.report())
            results.append(result)
        self.restore()
        if leak_scan and results:
            final = CaseResult("after the drill", self.active()[0].name)
            self.leak_scan(final, [r.report() for r in results])
            echo(final.report())
            results.append(final)
        return results

    def run_case(self, name: str) -> CaseResult:
        """One case, ending with what it told the operator (check_alerts)."""
        t0 = time.time()
        self.alerts_since(t0)  # subscribes the watch queue (first case) and empties it
        result = self.cases()[name]()
        self.check_alerts(result, t0)
        return result

    def alerts_since(self, since: float) -> dict:
        """{"alerts": [{subject, message, t}], "metrics": {name: sum}} from moto; each call
        drains the queue subscribed to the stack's topic (lab/alerts.py)."""
        return json.loads(run(ns_argv(
            CLOUD_NS, sys.executable, "-m", "lab.cloud", "alerts", str(self.lab.run_dir),
            self.lab.deployment().outputs["alertTopicArn"], self.lab.cfg.cluster_name,
            str(since)), timeout=120))

    def check_alerts(self, r: CaseResult, since: float, timeout: float = 90) -> None:
        """What the case told the operator (SNS, CloudWatch in moto): each fenced node named in
        a Fencing alert, and a PeerStart alert whenever the peer VIP moved."""
        fenced = [n for n in self.stops(since) if n in self.lab.cfg.node_names]
        moved = bool(self._vip_moves(since))
        subjects: list[str] = []
        metrics: dict[str, float] = {}
        deadline = time.time() + timeout
        while True:
            # Each call drains the watch queue: keep what earlier polls received.
            seen = self.alerts_since(since)
            subjects += [a["subject"] for a in seen["alerts"]]
            metrics = seen["metrics"]
            ok = all(any(f"{n} fenced" in s for s in subjects) for n in fenced) and (
                not moved or metrics.get("PeerStart", 0) >= 1)
            if ok or time.time() > deadline:
                break
            time.sleep(5)
        counts = ", ".join(f"{k} {v:.0f}" for k, v in sorted(metrics.items())) or "none"
        expected = [*(f"{n} fenced" for n in fenced), *(["PeerStart"] if moved else [])]
        r.check(f"alerts delivered (metrics: {counts}; expected: "
                f"{', '.join(expected) or 'nothing in particular'}): "
                f"{'; '.join(subjects) or 'no message'}", ok)

    def leak_scan(self, r: CaseResult, output: list[str]) -> None:
        scanner = scan_lab(self.lab, {"drill output": "\n".join(output)})
        held = "; ".join(scanner.allowed[:1]) or "no node runs the peer"
        r.check(f"leak scan: {sum(scanner.scanned.values())} places, "
                f"{len(scanner.hits)} hits of {', '.join(scanner.secrets)} ({held})",
                not scanner.hits)
        for hit in scanner.hits:
            r.check(f"leak: {hit.secret} in {hit.category}: {hit.where}", False)
