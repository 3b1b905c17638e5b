"""Anti-colocation: the peer and the citizen never run on one machine.

They share the node's chain volume; both running on one node corrupts the chain or, after a
failover, leaves the validator down. Pacemaker keeps them apart only if it alone starts them,
the constraint says so, and there are exactly two separate machines to place them on.
"""

from __future__ import annotations

from pulumi_policy import (
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from prep_ha.cluster.model import ClusterModel

from .placement import instance_zone
from .props import (
    BUCKET_OBJECT,
    COMMANDS,
    INSTANCE,
    LAUNCH_TEMPLATE,
    PLACEMENT_GROUP,
    cluster_nodes,
    get,
    of_type,
)
from .refs import referenced
from .script import bootstraps, command_texts
from .userdata import autostart_problems, user_data

NODES = 2
_MINUS_INFINITY = ("-INFINITY", "-INF")


def _group_of(model: ClusterModel, unit: str) -> str | None:
    # The group is found by the service it runs, not by its name, which could be relabelled.
    return next((g.id for g in model.groups
                 if any(m.agent == f"systemd:{unit}" for m in g.members)), None)


def _constraint_problem(model: ClusterModel) -> str | None:
    peer, ctz = _group_of(model, "peer"), _group_of(model, "ctz")
    if peer is None or ctz is None:
        return "does not run both systemd:peer and systemd:ctz in Pacemaker groups"
    if peer == ctz:
        return f"puts systemd:peer and systemd:ctz in one group ({peer})"
    pair = {peer, ctz}
    scores = [c.score.upper() for c in model.colocations if {c.resource, c.with_resource} == pair]
    wanted = any(c.resource == ctz and c.with_resource == peer
                 and c.score.upper() in _MINUS_INFINITY for c in model.colocations)
    if not wanted:
        return f"has no `constraint colocation add {ctz} with {peer} score=-INFINITY`"
    if any(s not in _MINUS_INFINITY for s in scores):
        return f"also colocates {ctz} and {peer} with a score other than -INFINITY"
    return None


def _validate_constraint(args: StackValidationArgs, report: ReportViolation) -> None:
    for boot in bootstraps(args.resources):
        if boot.model is None:
            report(f"The cluster script cannot be read ({boot.error}), so the peer/citizen "
                   "anti-colocation cannot be verified. Fix: render it from the cluster "
                   "model (prep_ha.cluster.pcs.render_script).", boot.resource.urn)
            continue
        problem = _constraint_problem(boot.model)
        if problem:
            report(f"The cluster script {problem}: Pacemaker could start the peer and the "
                   "citizen on one node. Fix: keep the model's Colocation(Ctz, Peer, "
                   "-INFINITY) (prep_ha/cluster/model.py build_model).", boot.resource.urn)


anti_colocation_constraint = StackValidationPolicy(
    name="anti-colocation-constraint",
    description="The cluster script colocates the citizen group with the peer group at "
                "-INFINITY.",
    validate=_validate_constraint,
)


def _validate_two_nodes(args: StackValidationArgs, report: ReportViolation) -> None:
    instances = cluster_nodes(args.resources)
    arbiters = [r for r in of_type(args.resources, INSTANCE) if r not in instances]
    if len(arbiters) > 1:
        report(f"The stack declares {len(arbiters)} quorum arbiters; the cluster has one "
               "third vote. Fix: declare it only through components/arbiter.py.")
    if len(instances) != NODES:
        report(f"The stack declares {len(instances)} EC2 instances; an HA P-Rep pair is exactly "
               f"{NODES} (one peer, one citizen). Fix: declare the nodes only through "
               "components/node.py NodePair.")
    for boot in bootstraps(args.resources):
        if boot.model is not None and len(boot.model.nodes) != NODES:
            report(f"The `pcs cluster setup` line names {len(boot.model.nodes)} nodes; the "
                   f"cluster must have exactly {NODES}. Fix: render it from the stack's "
                   "two nodes (build_model).", boot.resource.urn)
    if len(instances) != NODES:
        return
    zones = [instance_zone(i, args.resources) for i in instances]
    if all(zones) and len(set(zones)) == NODES:
        return  # different AZs (multi-AZ): they cannot share hardware
    groups = of_type(args.resources, PLACEMENT_GROUP)
    placed = [referenced(i, "placementGroup", groups) for i in instances]
    shared = [g for g in placed[0] if any(g is h for h in placed[1])]
    if not any(get(g.props, "strategy") == "spread" for g in shared):
        for instance in instances:
            report("The two nodes are not in one `spread` placement group of this stack, so "
                   "AWS may put them on the same rack and one hardware failure takes down "
                   "both the peer and the citizen. Fix: place both in the NodePair's "
                   "PlacementGroup(strategy=\"spread\").", instance.urn)


anti_colocation_two_nodes = StackValidationPolicy(
    name="anti-colocation-two-nodes-spread",
    description="Exactly two nodes, in one spread placement group (or in different AZs).",
    validate=_validate_two_nodes,
)


def _validate_pacemaker_only(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type in COMMANDS:
        texts = list(command_texts(args.props))
    elif args.resource_type in (INSTANCE, LAUNCH_TEMPLATE, BUCKET_OBJECT):
        document = user_data(args.resource_type, args.props)
        texts = [document] if document else []
    else:
        return
    for text in texts:
        for problem in autostart_problems(text):
            report(f"It {problem}: peer/ctz would start outside Pacemaker, which then cannot "
                   "keep them on different nodes. Fix: leave peer.service and ctz.service "
                   "without [Install] and never enable or start them; Pacemaker "
                   "(systemd:peer, systemd:ctz) starts them.")


anti_colocation_pacemaker_only = ResourceValidationPolicy(
    name="anti-colocation-pacemaker-only",
    description="Only Pacemaker starts the peer and citizen services: user-data and commands "
                "never enable or start them, and their units cannot autostart.",
    validate=_validate_pacemaker_only,
)
