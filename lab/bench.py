"""Failover time of the product's settings against the guide's, measured on the lab.

Two failures, each timed from injection until the peer VIP answers again from a client:
  node    - corosync and pacemaker killed on the active node (detection, fencing, takeover)
  service - the peer stand-in dies once (monitor detection, restart in place)
The guide variant differs only in corosync's default token (3 s) and a 1 min service monitor,
built with dataclasses.replace on the same model (lab.model.guide_model).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lab.cluster import RUN_DIR, Lab, running_lab
from lab.drill import Drill, is_daemon, is_peer
from lab.model import guide_model, product_model
from lab.node import kill_matching
from prep_ha.config import StackConfig


@dataclass
class Variant:
    name: str
    bring_up: dict[str, float] = field(default_factory=dict)
    runs: dict[str, list[float]] = field(default_factory=dict)


def _node_failure(d: Drill) -> float:
    d.restore()
    active, other = d.active()
    t0 = time.time()
    kill_matching(active, is_daemon)
    return d.answers_from(other.name) - t0


def _service_failure(d: Drill) -> float:
    d.restore()
    active, _ = d.active()
    t0 = time.time()
    kill_matching(active, is_peer)
    return d.answers_from(active.name) - t0


FAILURES: dict[str, Callable[[Drill], float]] = {"node": _node_failure,
                                                 "service": _service_failure}


def measure(cfg: StackConfig, name: str, model_of: Callable, runs: int,  # noqa: ANN001
            run_dir: Path, echo: Callable[[str], None]) -> Variant:
    v = Variant(name)
    with running_lab(Lab(cfg, run_dir, model_of(cfg))) as lab:
        v.bring_up = lab.timings
        echo(f"[{name}] cluster up in {v.bring_up['total']:.1f} s "
             f"(cloud {v.bring_up['cloud']:.1f}, quorum {v.bring_up['quorum']:.1f}, "
             f"push to healthy {v.bring_up['push_to_healthy']:.1f})")
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
    variants = [measure(cfg, "product", product_model, runs, run_dir, echo),
                measure(cfg, "guide", guide_model, runs, run_dir, echo)]
    echo(report(variants))
    return variants
