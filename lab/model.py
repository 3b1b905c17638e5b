"""The product's cluster model, with the one change the lab cannot avoid.

Pacemaker's `systemd:` class talks D-Bus to systemd, which does not run here, so the two
service primitives get the lab's `ocf:prep-ha-lab:service` stand-in instead. Ids, operations,
groups, constraints, properties, fencing and the corosync settings stay the product's; the
change is made on the model (dataclasses.replace) before rendering, never on the script text.
"""

from __future__ import annotations

import dataclasses

from prep_ha.cluster.model import ClusterModel, Group, build_model
from prep_ha.config import StackConfig

LAB_AGENT = "ocf:prep-ha-lab:service"
# The guide's settings: corosync's default token (3 s, consensus 1.2x) and a 1 min service monitor.
GUIDE_TOKEN_MS, GUIDE_CONSENSUS_MS, GUIDE_MONITOR = 3000, 3600, "60s"


def _standin(group: Group) -> Group:
    members = tuple(
        dataclasses.replace(r, agent=LAB_AGENT, params=(("role", r.agent.split(":", 1)[1]),))
        if r.agent.startswith("systemd:") else r
        for r in group.members)
    return dataclasses.replace(group, members=members)


def lab_model(model: ClusterModel) -> ClusterModel:
    return dataclasses.replace(model, groups=tuple(_standin(g) for g in model.groups))


def product_model(cfg: StackConfig) -> ClusterModel:
    return lab_model(build_model(cfg))


def guide_model(cfg: StackConfig) -> ClusterModel:
    """The same cluster with the guide's timings, for the benchmark's comparison."""
    model = product_model(cfg)
    corosync = dataclasses.replace(model.corosync, token_ms=GUIDE_TOKEN_MS,
                                   consensus_ms=GUIDE_CONSENSUS_MS)

    def slow(group: Group) -> Group:
        members = tuple(dataclasses.replace(r, ops=tuple(
            dataclasses.replace(o, interval=GUIDE_MONITOR)
            if o.name == "monitor" and r.agent == LAB_AGENT else o for o in r.ops))
            for r in group.members)
        return dataclasses.replace(group, members=members)

    return dataclasses.replace(model, corosync=corosync,
                               groups=tuple(slow(g) for g in model.groups))
