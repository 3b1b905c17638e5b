"""Failover time and stall tolerance of the product's settings against the guide's, on the lab.

    sudo python3 -m lab bench --runs 3      # brings the lab up three times, torn down after

Variants, each its own lab:
  product         the stack as deployed (fence_aws_skip_os_shutdown), single-AZ (--stack)
  product, multi-AZ
                  the multi-AZ stack (--multi-az-stack): the same cluster, the peer's address
                  an overlay IP whose four routes aws-vpc-move-ip replaces; node takeover only
  product, packaged fence_aws
                  the same cluster fencing with Debian's fence_aws (no SkipOsShutdown): only
                  the node takeover, to show what EC2's wait for a hung guest costs
  guide           the guide's settings (lab.bench.guide_model): no arbiter, token 3 s,
                  reboot fencing, 1 min service monitors, the packaged fence_aws
Measured:
  stall   - the active node frozen whole for a growing share of the token (a platform pause),
            then thawed: kept if nobody was fenced and the peer did not move
  node    - the active node hangs: detection (until the fence agent calls StopInstances),
            fencing (until the VIP moves: its first AssignPrivateIpAddresses, or ReplaceRoute
            of the overlay IP), starts (until the peer answers); EC2 waits
            HUNG_WAIT_S for the hung guest's OS shutdown unless the stop skips it (the guide's
            runs: no wait, as the lab measured it before it modelled the wait)
  service - the peer process dies once: detection and restart, then answering
  split   - the nodes lose each other with the arbiter reachable (product only): the drill's
            own checks, zero failed peer probes
The lab pipes each variant's script to the bootstrap Commands instead of the program's (the
one substitution of the benchmark).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lab.cloud import HUNG_STOP_WAIT_S, read_events
from lab.cluster import RUN_DIR, Lab, running_lab
from lab.deploy import Command
from lab.drill import Drill
from lab.netns import wait_for
from lab.node import freeze, kill_matching
from lab.observe import is_role, roles_on
from lab.tokens import ring_id
from lab.weather import set_hung_stop_wait, stall
from prep_ha.cluster.model import ClusterModel, Group, build_model
from prep_ha.cluster.pcs import render_script
from prep_ha.config import StackConfig

# The guide's settings: corosync's default token (3 s, consensus 1.2x), 1 min service monitor.
GUIDE_TOKEN_MS, GUIDE_MONITOR = 3000, "60s"
PACKAGED_FENCE_AGENT = "fence_aws"
HUNG_WAIT_S = HUNG_STOP_WAIT_S
# Stalls of the active node, as shares of the token, until one breaks the membership.
STALL_SHARES = (1 / 6, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 5 / 6, 11 / 12, 1, 13 / 12)


def guide_model(cfg: StackConfig) -> ClusterModel:
    """The guide's settings on the product's cluster: no arbiter (two_node with the fence-race
    delay), corosync's default token, reboot fencing, 1 min service monitors."""
    model = build_model(dataclasses.replace(cfg, quorum_arbiter=False,
                                            corosync_token_ms=GUIDE_TOKEN_MS))
    properties = tuple((k, "reboot" if k == "stonith-action" else v)
                       for k, v in model.properties)
    model = packaged_fence_agent(model)

    def slow(group: Group) -> Group:
        members = tuple(dataclasses.replace(r, ops=tuple(
            dataclasses.replace(o, interval=GUIDE_MONITOR)
            if o.name == "monitor" and r.agent.startswith("systemd:") else o for o in r.ops))
            for r in group.members)
        return dataclasses.replace(group, members=members)

    return dataclasses.replace(model, properties=properties, alerts=(),
                               groups=tuple(slow(g) for g in model.groups))


def packaged_fence_agent(model: ClusterModel) -> ClusterModel:
    """The same cluster fencing with Debian's fence_aws (no SkipOsShutdown)."""
    return dataclasses.replace(model, fence_devices=tuple(
        dataclasses.replace(f, agent=PACKAGED_FENCE_AGENT) for f in model.fence_devices))


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
    token_ms: int = 0
    stalls: list[tuple[float, bool]] = field(default_factory=list)  # (seconds, kept)
    hung_wait_s: float = 0

    @property
    def tolerated(self) -> float:
        return max((sec for sec, kept in self.stalls if kept), default=0.0)


def _stall_series(d: Drill, token_ms: int, echo: Callable[[str], None],
                  name: str) -> list[tuple[float, bool]]:
    """Freeze the active node for a growing share of the token; stop at the first stall after
    which the membership changed (a fence follows, maybe after the guide's 15 s fence delay),
    a node was fenced or the peer moved."""
    settle = token_ms * 2.2 / 1000 + 10
    out = []
    for share in STALL_SHARES:
        d.restore()
        active, standby = d.active()
        seconds = round(token_ms * share / 1000, 2)
        ring = ring_id(standby)
        t0 = time.time()
        stall(active, seconds)
        time.sleep(settle)
        kept = (ring_id(standby) == ring and not d.stops(t0) and not d._vip_moves(t0)
                and d.active()[0].name == active.name)
        out.append((seconds, kept))
        echo(f"[{name}] active node frozen {seconds:.2f} s: "
             f"{'kept (nobody fenced, the peer stayed)' if kept else 'BROKEN'}")
        if not kept:
            break
    return out


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
            run_dir: Path, echo: Callable[[str], None], failures: tuple[str, ...],
            hung_wait_s: float, stalls: bool) -> Variant:
    v = Variant(name, hung_wait_s=hung_wait_s)
    with running_lab(Lab(cfg, run_dir, script_of=script_for(cfg, model)), echo=echo) as lab:
        set_hung_stop_wait(lab.run_dir, hung_wait_s)
        v.bring_up = lab.timings
        echo(f"[{name}] cluster up in {v.bring_up['total']:.1f} s "
             f"(image {v.bring_up['image']:.1f}, deploy {v.bring_up['deploy']:.1f}, "
             f"boot to healthy {v.bring_up['boot_to_healthy']:.1f})")
        drill = Drill(lab)
        v.token_ms = (model or build_model(cfg)).corosync.token_ms
        if stalls:
            v.stalls = _stall_series(drill, v.token_ms, echo, name)
        for failure in failures:
            if failure == "split" and lab.arbiter is None:
                continue  # without an arbiter a split is a fence race
            for i in range(runs):
                took = FAILURES[failure](drill)
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


def _stalls(v: Variant) -> str:
    series = ", ".join(f"{sec:g} s {'kept' if kept else 'BROKEN'}" for sec, kept in v.stalls)
    return (f"   {v.name:8} token {v.token_ms / 1000:g} s: tolerates {v.tolerated:g} s "
            f"({series})")


def _takeover(label: str, runs: list[dict[str, float]]) -> list[str]:
    return [f"   {label:36} {_summary([r['total'] for r in runs])}",
            f"   {'':36}   medians: {_phases(runs)}"]


def _median(v: Variant, failure: str) -> float:
    return statistics.median(r["total"] for r in v.runs[failure])


def _node_takeover(product: Variant, guide: Variant, multi_az: Variant | None) -> list[str]:
    lines = ["", "== node takeover: the active node hangs, until the peer answers from the "
             "other node (fence included)",
             *_takeover(f"product (EC2 waits {product.hung_wait_s:g} s, skipped)",
                        product.runs["node"]),
             *_takeover("guide (EC2 stops a hung guest at once)", guide.runs["node"]),
             f"   product/guide = {_median(product, 'node') / _median(guide, 'node'):.2f}"]
    if multi_az is not None:
        lines += [*_takeover("product, multi-AZ (wait skipped too)", multi_az.runs["node"]),
                  f"   multi-AZ/single-AZ = "
                  f"{_median(multi_az, 'node') / _median(product, 'node'):.2f}, "
                  f"multi-AZ/guide = {_median(multi_az, 'node') / _median(guide, 'node'):.2f}"]
    return lines


def _bring_up(*variants: Variant | None) -> list[str]:
    return [f"   bring-up ({v.name}): {v.bring_up['total']:.1f} s" for v in variants if v]


def node_report(product: Variant, guide: Variant, multi_az: Variant | None = None) -> str:
    return "\n".join([*_node_takeover(product, guide, multi_az),
                      *_bring_up(product, guide, multi_az)])


def report(product: Variant, packaged: Variant, guide: Variant,
           multi_az: Variant | None = None) -> str:
    lines = ["", "== stall tolerance: the longest freeze of the active node with nobody fenced "
             "and the peer unmoved", _stalls(product), _stalls(guide),
             *_node_takeover(product, guide, multi_az),
             "", f"== the same takeover when EC2 waits {product.hung_wait_s:g} s for a hung "
             "guest's OS shutdown (lab model)",
             *_takeover("product, SkipOsShutdown", product.runs["node"]),
             *_takeover("product, the packaged fence_aws", packaged.runs["node"]),
             "", "== service failure: the peer process dies, until it answers again",
             *_takeover("product", product.runs["service"]),
             *_takeover("guide", guide.runs["service"]),
             f"   product/guide = "
             f"{_median(product, 'service') / _median(guide, 'service'):.2f}"]
    if "split" in product.runs:
        lines.append(f"\n== split: {len(product.runs['split'])} runs, 0 failed peer probes, "
                     "only the standby fenced (each run checked by the drill)")
    return "\n".join([*lines, *_bring_up(product, packaged, guide, multi_az)])


def bench(cfg: StackConfig, runs: int, run_dir: Path = RUN_DIR,
          echo: Callable[[str], None] = print,
          multi_az_cfg: StackConfig | None = None, node_only: bool = False) -> list[Variant]:
    """`cfg` a single-AZ stack; `multi_az_cfg`, if given, a multi-AZ one measured too.
    `node_only`: the node takeover of the product (both topologies) and the guide, nothing
    else (no stall series, no service failure, no packaged fence_aws)."""
    product = measure(cfg, "product", None, runs, run_dir, echo,
                      ("node",) if node_only else ("node", "service", "split"), HUNG_WAIT_S,
                      stalls=not node_only)
    multi_az = None if multi_az_cfg is None else measure(
        multi_az_cfg, "multi-AZ", None, runs, run_dir, echo, ("node",), HUNG_WAIT_S,
        stalls=False)
    guide = measure(cfg, "guide", guide_model(cfg), runs, run_dir, echo,
                    ("node",) if node_only else ("node", "service"), 0, stalls=not node_only)
    if node_only:
        echo(node_report(product, guide, multi_az))
        return [product, guide, *([multi_az] if multi_az else [])]
    packaged = measure(cfg, "packaged", packaged_fence_agent(build_model(cfg)), runs, run_dir,
                       echo, ("node",), HUNG_WAIT_S, stalls=False)
    echo(report(product, packaged, guide, multi_az))
    return [product, packaged, guide, *([multi_az] if multi_az else [])]
