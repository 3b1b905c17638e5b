"""Failover time of the product's settings against the guide's, measured on the lab.

Failures, each timed from injection until the peer VIP answers again from a client, with
where the time goes (from the EC2 API's log and the client's probes):
  node    - the active node hangs: detection (until fence_aws calls StopInstances), fencing
            (until awsvip moves the VIP), starts (until the peer answers)
  service - the peer process dies once: detection and restart, then answering
  split   - the nodes lose each other with the arbiter reachable (product only): the drill's
            own checks, zero failed peer probes
The guide variant is the same cluster with the guide's settings (lab.bench.guide_model); the
lab pipes its script to the bootstrap Commands instead of the program's (the one substitution
of the benchmark).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lab.cloud import read_events
from lab.cluster import RUN_DIR, Lab, running_lab
from lab.deploy import Command
from lab.drill import Drill
from lab.netns import wait_for
from lab.node import freeze, kill_matching
from lab.observe import is_role, roles_on
from prep_ha.cluster.model import ClusterModel, Group, build_model
from prep_ha.cluster.pcs import render_script
from prep_ha.config import StackConfig

# The guide's settings: corosync's default token (3 s, consensus 1.2x), 1 min service monitor.
GUIDE_TOKEN_MS, GUIDE_MONITOR = 3000, "60s"


def guide_model(cfg: StackConfig) -> ClusterModel:
    """The guide's settings on the product's cluster: no arbiter (two_node with the fence-race
    delay), corosync's default token, reboot fencing, 1 min service monitors."""
    model = build_model(dataclasses.replace(cfg, quorum_arbiter=False,
                                            corosync_token_ms=GUIDE_TOKEN_MS))
    properties = tuple((k, "reboot" if k == "stonith-action" else v)
                       for k, v in model.properties)

    def slow(group: Group) -> Group:
        members = tuple(dataclasses.replace(r, ops=tuple(
            dataclasses.replace(o, interval=GUIDE_MONITOR)
            if o.name == "monitor" and r.agent.startswith("systemd:") else o for o in r.ops))
            for r in group.members)
        return dataclasses.replace(group, members=members)

    return dataclasses.replace(model, properties=properties, alerts=(),
                               groups=tuple(slow(g) for g in model.groups))


def script_for(cfg: StackConfig, model: ClusterModel | None) -> Callable[[Command], str | None]:
    """stdin for the bootstrap Commands: the program's own (None) or `model`'s rendering."""
    if model is None:
        return lambda c: None
    script = render_script(model, hacluster_secret_id=cfg.hacluster_secret_name)
    return lambda c: script if c.stdin else None


@dataclass
class Variant:
    name: str
    bring_up: dict[str, float] = field(default_factory=dict)
    # failure -> one {phase: seconds} per run; "total" is injection to the VIP answering
    runs: dict[str, list[dict[str, float]]] = field(default_factory=dict)


def _node_failure(d: Drill) -> dict[str, float]:
    """Where a node failover spends its time, from the EC2 API's log (moto) and the client."""
    d.restore()
    active, other = d.active()
    t0 = time.time()
    freeze(active)
    t_answer = d.answers_from(other.name)
    events = read_events(d.lab.run_dir, t0)
    t_stop = next(e["t"] for e in events if e.get("action") == "StopInstances")
    t_vip = min(d._vip_moves(t0))
    return {"detection": t_stop - t0, "fencing": t_vip - t_stop,
            "starts": t_answer - t_vip, "total": t_answer - t0}


def _service_failure(d: Drill) -> dict[str, float]:
    d.restore()
    active, _ = d.active()
    old = roles_on(active)["peer"]
    t0 = time.time()
    kill_matching(active, lambda a: is_role(a, "peer"))
    wait_for(lambda: roles_on(active).get("peer") not in (None, old), 120,
             "the peer to be started again", 0.1)
    t_started = time.time()
    t_answer = d.answers_from(active.name)
    return {"detection+restart": t_started - t0, "answering": t_answer - t_started,
            "total": t_answer - t0}


def _split(d: Drill) -> dict[str, float | int]:
    """The nodes lose each other with the arbiter reachable: failed peer probes (want 0)."""
    result = d.split_with_arbiter()
    bad = [what for what, ok in result.checks if not ok]
    if bad:
        raise RuntimeError(f"split case failed: {bad}")
    return {"failed peer probes": 0}


FAILURES: dict[str, Callable[[Drill], dict[str, float | int]]] = {
    "node": _node_failure, "service": _service_failure, "split": _split}


def measure(cfg: StackConfig, name: str, model: ClusterModel | None, runs: int,
            run_dir: Path, echo: Callable[[str], None]) -> Variant:
    v = Variant(name)
    with running_lab(Lab(cfg, run_dir, script_of=script_for(cfg, model)), echo=echo) as lab:
        v.bring_up = lab.timings
        echo(f"[{name}] cluster up in {v.bring_up['total']:.1f} s "
             f"(image {v.bring_up['image']:.1f}, deploy {v.bring_up['deploy']:.1f}, "
             f"boot to healthy {v.bring_up['boot_to_healthy']:.1f})")
        drill = Drill(lab)
        for failure, fn in FAILURES.items():
            if failure == "split" and (model is not None or lab.arbiter is None):
                continue  # the guide has no arbiter: its splits are fence races
            for i in range(runs):
                took = fn(drill)
                v.runs.setdefault(failure, []).append(took)
                echo(f"[{name}] {failure} failure run {i + 1}/{runs}: " + ", ".join(
                    f"{k} {t:.1f} s" if isinstance(t, float) else f"{k} {t}"
                    for k, t in took.items()))
    return v


def _summary(xs: list[float]) -> str:
    spread = f"{min(xs):.1f}-{max(xs):.1f}"
    sd = f", sd {statistics.stdev(xs):.1f}" if len(xs) > 1 else ""
    return f"median {statistics.median(xs):5.1f} s (range {spread}{sd}, n={len(xs)})"


def _phases(runs: list[dict[str, float]]) -> str:
    return ", ".join(f"{k} {statistics.median(r[k] for r in runs):.1f} s"
                     for k in runs[0] if k != "total")


def report(variants: list[Variant]) -> str:
    product, guide = variants
    lines = ["", "== failover time: failure injected until the peer VIP answers again"]
    for failure in ("node", "service"):
        p = [r["total"] for r in product.runs[failure]]
        g = [r["total"] for r in guide.runs[failure]]
        lines.append(f"   {failure:8} product {_summary(p)}")
        lines.append(f"   {'':8}         medians: {_phases(product.runs[failure])}")
        lines.append(f"   {'':8} guide   {_summary(g)}")
        lines.append(f"   {'':8}         medians: {_phases(guide.runs[failure])}")
        lines.append(f"   {'':8} product/guide = "
                     f"{statistics.median(p) / statistics.median(g):.2f}")
    if "split" in product.runs:
        lines.append(f"   split    product: {len(product.runs['split'])} runs, 0 failed peer "
                     "probes, only the standby fenced (each run checked by the drill)")
    for v in variants:
        lines.append(f"   bring-up ({v.name}): {v.bring_up['total']:.1f} s")
    return "\n".join(lines)


def bench(cfg: StackConfig, runs: int, run_dir: Path = RUN_DIR,
          echo: Callable[[str], None] = print) -> list[Variant]:
    variants = [measure(cfg, "product", None, runs, run_dir, echo),
                measure(cfg, "guide", guide_model(cfg), runs, run_dir, echo)]
    echo(report(variants))
    return variants
