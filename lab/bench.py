"""Failover time of the product's settings against the guide's, measured on the lab.

Two failures, each timed from injection until the peer VIP answers again from a client:
  node    - the active node hangs (detection, fencing, takeover)
  service - the peer process dies once (monitor detection, restart in place)
The guide variant differs only in corosync's default token (3 s) and a 1 min service monitor,
built with dataclasses.replace on the same model; the lab pipes its script to the bootstrap
Commands instead of the program's (the one substitution of the benchmark).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lab.cluster import RUN_DIR, Lab, running_lab
from lab.deploy import Command
from lab.drill import Drill
from lab.node import freeze, kill_matching
from lab.observe import is_role
from prep_ha.cluster.model import ClusterModel, Group, build_model
from prep_ha.cluster.pcs import render_script
from prep_ha.config import StackConfig

# The guide's settings: corosync's default token (3 s, consensus 1.2x), 1 min service monitor.
GUIDE_TOKEN_MS, GUIDE_CONSENSUS_MS, GUIDE_MONITOR = 3000, 3600, "60s"


def guide_model(cfg: StackConfig) -> ClusterModel:
    """The product's cluster with the guide's timings."""
    model = build_model(cfg)
    corosync = dataclasses.replace(model.corosync, token_ms=GUIDE_TOKEN_MS,
                                   consensus_ms=GUIDE_CONSENSUS_MS)

    def slow(group: Group) -> Group:
        members = tuple(dataclasses.replace(r, ops=tuple(
            dataclasses.replace(o, interval=GUIDE_MONITOR)
            if o.name == "monitor" and r.agent.startswith("systemd:") else o for o in r.ops))
            for r in group.members)
        return dataclasses.replace(group, members=members)

    return dataclasses.replace(model, corosync=corosync,
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
    runs: dict[str, list[float]] = field(default_factory=dict)


def _node_failure(d: Drill) -> float:
    d.restore()
    active, other = d.active()
    t0 = time.time()
    freeze(active)
    return d.answers_from(other.name) - t0


def _service_failure(d: Drill) -> float:
    d.restore()
    active, _ = d.active()
    t0 = time.time()
    kill_matching(active, lambda a: is_role(a, "peer"))
    return d.answers_from(active.name) - t0


FAILURES: dict[str, Callable[[Drill], float]] = {"node": _node_failure,
                                                 "service": _service_failure}


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
            for i in range(runs):
                took = fn(drill)
                v.runs.setdefault(failure, []).append(took)
                echo(f"[{name}] {failure} failure run {i + 1}/{runs}: {took:.1f} s")
    return v


def _summary(xs: list[float]) -> str:
    spread = f"{min(xs):.1f}-{max(xs):.1f}"
    sd = f", sd {statistics.stdev(xs):.1f}" if len(xs) > 1 else ""
    return f"median {statistics.median(xs):5.1f} s (range {spread}{sd}, n={len(xs)})"


def report(variants: list[Variant]) -> str:
    product, guide = variants
    lines = ["", "== failover time: failure injected until the peer VIP answers again"]
    for failure in FAILURES:
        p, g = product.runs[failure], guide.runs[failure]
        lines.append(f"   {failure:8} product {_summary(p)}")
        lines.append(f"   {'':8} guide   {_summary(g)}")
        lines.append(f"   {'':8} guide/product = "
                     f"{statistics.median(g) / statistics.median(p):.2f}")
    for v in variants:
        lines.append(f"   bring-up ({v.name}): {v.bring_up['total']:.1f} s")
    return "\n".join(lines)


def bench(cfg: StackConfig, runs: int, run_dir: Path = RUN_DIR,
          echo: Callable[[str], None] = print) -> list[Variant]:
    variants = [measure(cfg, "product", None, runs, run_dir, echo),
                measure(cfg, "guide", guide_model(cfg), runs, run_dir, echo)]
    echo(report(variants))
    return variants
