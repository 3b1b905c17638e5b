"""Offline failover scenarios on Pacemaker's own scheduler (crm_simulate).

The CIB is built by running the rendered bootstrap script's `build-cib` step (real `pcs -f`),
checked with `crm_verify`, then each scenario injects events with `crm_simulate` and reads
back what the scheduler did: the transition in execution order, the dependency graph, and
where every resource runs afterwards. Every tool is the nodes' own (prep_ha/nodetools.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prep_ha.cluster.model import CTZ_GROUP, PEER_GROUP, ROUTE_TABLES_ENV, ClusterModel
from prep_ha.cluster.pcs import render_script
from prep_ha.nodetools import NodeTools, node_tools


class SimulationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Step:
    kind: str  # "fence", "start", "stop", "monitor", ... as the scheduler names it
    target: str  # resource id, or the fenced node
    node: str = ""  # where a resource action runs
    fence_action: str = ""  # reboot, off, on

    def words(self) -> str:
        if self.kind == "fence":
            return f"fence {self.target} through the EC2 API ({self.fence_action})"
        return f"{self.kind} {self.target} on {self.node}"


@dataclass
class Transition:
    steps: list[Step]
    before: dict[str, tuple[str, ...]]
    after: dict[str, tuple[str, ...]]
    online_after: tuple[str, ...]
    # operation_key of each graph action -> keys it waits for (Pacemaker's transition graph)
    # The CIB after the transition, input of the next event.
    output_cib: Path
    graph: dict[str, set[str]] = field(default_factory=dict)

    def fenced(self) -> list[str]:
        return [s.target for s in self.steps if s.kind == "fence"]

    def index(self, kind: str, target: str, node: str | None = None) -> int:
        for i, s in enumerate(self.steps):
            if s.kind == kind and s.target == target and (node is None or s.node == node):
                return i
        raise KeyError(f"no step {kind} {target} {node or ''}")

    def depends_on(self, key: str, prerequisite: str) -> bool:
        """Whether graph action `key` (transitively) waits for `prerequisite`."""
        seen, todo = set(), [key]
        while todo:
            for dep in self.graph.get(todo.pop(), ()):
                if dep == prerequisite:
                    return True
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return False

    def blocked_by(self, prerequisite: str) -> set[str]:
        """Graph actions that never run if `prerequisite` fails (the transition aborts)."""
        return {k for k in self.graph if self.depends_on(k, prerequisite)}


def _run(tools: NodeTools, argv: list[str], workdir: Path,
         env: dict[str, str] | None = None) -> str:
    proc = tools.run(argv, env=env, paths=[workdir])
    if proc.returncode != 0:
        raise SimulationError(f"{' '.join(argv)} failed ({proc.returncode}) on "
                              f"{tools.where}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _placements(status: ET.Element | None) -> dict[str, tuple[str, ...]]:
    if status is None:
        return {}
    return {r.get("id", ""): tuple(n.get("name", "") for n in r.findall("node"))
            for r in status.iter("resource") if r.get("active") == "true"}


class Simulator:
    """A scratch directory holding CIB files derived from one cluster model."""

    def __init__(self, model: ClusterModel, workdir: str | os.PathLike[str] | None = None,
                 tools: NodeTools | None = None):
        self.model = model
        self.tools = tools or node_tools()
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="prep-ha-sim-")
            workdir = self._tmp.name
        self.dir = Path(workdir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.node1, self.node2 = (n.name for n in model.nodes)
        self._count = 0
        self._steady: Transition | None = None

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> str:
        """A tool of the nodes on files of this simulator; SimulationError if it fails."""
        return _run(self.tools, argv, self.dir, env)

    def build_cib(self) -> Path:
        """An empty CIB, configured by the bootstrap script's own `build-cib` step."""
        script = self.dir / "bootstrap.sh"
        script.write_text(render_script(self.model, hacluster_secret_id="simulation"))
        cib = self.dir / "configured.xml"
        cib.write_text(self.run(["cibadmin", "--empty"]))
        self.run(["bash", str(script), "build-cib", str(cib)],
                 env=placeholder_environment(self.model))
        # Check the configuration as pushed, before simulated nodes (with no status) exist.
        self.run(["crm_verify", "--xml-file", str(cib)])
        for n in self.model.nodes:
            self.run(["cibadmin", "--create", "--scope", "nodes", "--xml-text",
                      f'<node id="{n.node_id}" uname="{n.name}"/>'], env={"CIB_file": str(cib)})
        return cib

    def steady(self) -> Transition:
        """Both nodes join a freshly configured cluster (built once: pcs is slow to start)."""
        if self._steady is None:
            self._steady = self.simulate(self.build_cib(), "--node-up", self.node1,
                                         "--node-up", self.node2)
        return self._steady

    def set_node_attribute(self, cib: Path, node: str, name: str, value: str) -> Path:
        out = self._next(f"attr-{name}")
        shutil.copy(cib, out)
        self.run(["crm_attribute", "--node", node, "--name", name, "--update", value],
                 env={"CIB_file": str(out)})
        return out

    def _next(self, label: str) -> Path:
        self._count += 1
        return self.dir / f"{self._count:02d}-{label}.xml"

    def simulate(self, cib: Path, *events: str, quorum: bool = True) -> Transition:
        """`events` on `cib`; quorum=False plays the side of a split without the arbiter's vote.

        Two calls: the events are injected and saved first, then the scheduler runs on the
        result with nothing injected. Pacemaker 2.1.8 and later (Debian 13's 3.0.0 included)
        drop the transition and the revised status from `--output-as xml` whenever events are
        injected in the same call, with exit code 0 (lib/pacemaker/pcmk_injections.c pops the
        document's root; upstream since commit 2c61eb0c73)."""
        injected, out, graph = self._next("in"), self._next("out"), self._next("graph")
        self.run(["crm_simulate", "--xml-file", str(cib), "--quorum", str(int(quorum)),
                  *events, "--save-input", str(injected)])
        xml = self.run(["crm_simulate", "--xml-file", str(injected), "--simulate",
                        "--save-output", str(out), "--save-graph", str(graph),
                        "--output-as", "xml"])
        root = ET.fromstring(xml)
        steps = []
        transition = root.find("transition")
        for a in transition if transition is not None else ():
            if a.tag == "fencing_action":
                steps.append(Step("fence", a.get("target", ""), fence_action=a.get("op", "")))
            elif a.tag == "rsc_action":
                steps.append(Step(a.get("op", ""), a.get("resource", ""), a.get("node", "")))
        before = root.find("cluster_status")
        # A run that changes nothing has no revised status: the input status stands.
        after = root.find("revised_cluster_status")
        if after is None:
            after = before
        if after is None:
            raise SimulationError(f"crm_simulate printed no cluster status:\n{xml}")
        online = tuple(n.get("name", "") for n in after.iter("node")
                       if n.get("online") == "true" and n.get("standby") != "true")
        return Transition(
            steps=steps,
            before=_placements(before),
            after=_placements(after),
            online_after=online,
            graph=_graph(graph),
            output_cib=out,
        )


def _graph(path: Path) -> dict[str, set[str]]:
    deps: dict[str, set[str]] = {}
    for synapse in ET.parse(path).getroot().iter("synapse"):
        actions, waits = synapse.find("action_set"), synapse.find("inputs")
        keys = [e.get("operation_key", "") for e in (actions if actions is not None else ())]
        inputs = {e.get("operation_key", "") for t in (waits if waits is not None else ())
                  for e in t}
        for k in keys:
            deps.setdefault(k, set()).update(inputs)
    return deps


def fence_key(model: ClusterModel, node: str) -> str:
    """The transition graph's key of fencing `node` with the model's stonith-action."""
    return f"stonith-{node}-{model.property('stonith-action') or 'reboot'}"


def members(model: ClusterModel, group: str) -> list[str]:
    return [r.id for r in model.group(group).members]


@dataclass
class Scenario:
    title: str
    explain: str
    run: Callable[[Simulator], Transition]


def _monitor_key(model: ClusterModel, rsc: str) -> str:
    for g in model.groups:
        for r in g.members:
            if r.id == rsc:
                op = next(o for o in r.ops if o.name == "monitor")
                ms = int(op.interval.rstrip("s")) * 1000
                return f"{rsc}_monitor_{ms}"
    raise KeyError(rsc)


def peer_monitor_failures(sim: Simulator, count: int) -> list[Transition]:
    """The peer service's monitor finds it dead `count` times in a row on node 1."""
    key = _monitor_key(sim.model, "peer-service")
    state = sim.steady()
    results = []
    for _ in range(count):
        state = sim.simulate(state.output_cib, "--op-inject",
                             f"{key}@{sim.node1}=7")
        results.append(state)
    return results


def scenarios() -> list[Scenario]:
    """The drills of the guide and DESIGN.md, in the order an operator would walk them."""
    return [
        Scenario("both nodes up", "Fresh cluster: where does everything start?",
                 lambda s: s.steady()),
        Scenario("node 1 fails", "The active node stops answering on both corosync links.",
                 lambda s: s.simulate(s.steady().output_cib, "--node-fail", s.node1)),
        Scenario("node 2 fails", "The backup node stops answering on both corosync links.",
                 lambda s: s.simulate(s.steady().output_cib, "--node-fail", s.node2)),
        Scenario("peer service fails once", "The peer's monitor finds it stopped on node 1.",
                 lambda s: peer_monitor_failures(s, 1)[-1]),
        Scenario("peer service fails twice",
                 "It fails again within failure-timeout: migration-threshold reached.",
                 lambda s: peer_monitor_failures(s, 2)[-1]),
        Scenario("node 1 returns after a failover", "Node 1 rejoins once node 2 took over.",
                 lambda s: s.simulate(
                     s.simulate(s.steady().output_cib, "--node-fail", s.node1).output_cib,
                     "--node-up", s.node1)),
        Scenario("node 1 in standby", "Maintenance: `pcs node standby` on node 1.",
                 lambda s: s.simulate(s.set_node_attribute(
                     s.steady().output_cib, s.node1, "standby", "on"))),
        Scenario("split, node 2's side", "The nodes lose each other; the arbiter's vote goes\n"
                 "   to node 1 (it holds the peer VIP), so node 2 has no quorum.",
                 lambda s: s.simulate(s.steady().output_cib, "--node-fail", s.node1,
                                      quorum=False)),
        Scenario("split, node 1's side", "Node 1 keeps quorum with the arbiter's vote.",
                 lambda s: s.simulate(s.steady().output_cib, "--node-fail", s.node2)),
        Scenario("arbiter lost, then a split, node 1's side",
                 "Neither side has quorum (one vote of three each).",
                 lambda s: s.simulate(s.steady().output_cib, "--node-fail", s.node2,
                                      quorum=False)),
    ]


def describe(model: ClusterModel, title: str, explain: str, t: Transition) -> str:
    """A transition in plain words, for operators."""
    lines = [f"== {title}", f"   {explain}"]
    # Probes and recurring monitors are bookkeeping; operators want the moves.
    moves = [s for s in t.steps if s.kind != "monitor"]
    if not moves:
        lines.append("   the cluster does nothing")
    for i, step in enumerate(moves, 1):
        lines.append(f"   {i:2}. {step.words()}")
    for group in (PEER_GROUP, CTZ_GROUP):
        nodes = {n for r in members(model, group) for n in t.after.get(r, ())}
        where = ", ".join(sorted(nodes)) if nodes else "stopped"
        lines.append(f"   -> {group}: {where}")
    fencers = [r.id for r in model.fence_devices]
    fence_nodes = sorted({n for r in fencers for n in t.after.get(r, ())})
    lines.append(f"   -> fencing device: {', '.join(fence_nodes) or 'stopped'}")
    return "\n".join(lines)


def fencing_failure_report(model: ClusterModel, sim: Simulator) -> tuple[Transition, set[str]]:
    """Node 1 fails and fencing it fails: which actions of the transition can never run."""
    t = sim.simulate(sim.steady().output_cib, "--node-fail", sim.node1)
    return t, t.blocked_by(fence_key(model, sim.node1))


def placeholder_environment(model: ClusterModel) -> dict[str, str]:
    """Stand-ins for what AWS names at deploy time (ClusterModel.environment), for building a
    CIB without a cloud."""
    env = {n.instance_id_env: f"i-sim{n.node_id:013d}" for n in model.nodes}
    if ROUTE_TABLES_ENV in model.environment:
        env[ROUTE_TABLES_ENV] = "rtb-sim00000000000001,rtb-sim00000000000002"
    return env
