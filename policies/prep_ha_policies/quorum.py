"""Splits and fencing targets: who decides when the two nodes lose each other, and whom a
fence stops.

Two nodes alone cannot tell a dead peer from a cut link: without a rule, both fence, or both
run the validator. The cluster script must carry one: the arbiter's vote (corosync-qdevice,
with a heuristic favouring the partition that runs Peer), or a fence race the node holding
Peer wins (priority-fencing-delay plus a priority on Peer). And a host map that sends two
nodes' fences to one instance would stop the survivor instead of the failed node.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from pulumi_policy import (
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    StackValidationArgs,
    StackValidationPolicy,
)

from prep_ha.cluster.model import PEER_GROUP, ClusterModel
from prep_ha.config import MAINNET_MIN_TOKEN_MS, MAX_TOKEN_MS, MIN_TOKEN_MS

from .props import COMMANDS, UnknownValueError, get, of_type
from .script import bootstraps
from .settings import is_mainnet

_FIX = ("Fix: build the cluster from prep_ha.cluster.model.build_model with "
        "icon-prep-ha:quorumArbiter true (the default) and do not edit the rendered script.")
_ENV_ASSIGN = re.compile(r"\b(PREP_HA_INSTANCE_ID_\d+)=(\S+)")


def _split_problem(model: ClusterModel) -> str | None:
    if len(model.nodes) != 2:
        return None
    qdevice = model.corosync.qdevice
    if qdevice is not None:
        if not qdevice.heuristics:
            return ("the quorum device has no heuristics, so in a 50:50 split the arbiter's "
                    "vote may go to the partition without Peer")
        if model.corosync.expected_votes != len(model.nodes) + 1:
            return (f"expected_votes {model.corosync.expected_votes or 'unset'} with a quorum "
                    "device: pcs gives the device an explicit vote, and corosync then expects "
                    "the nodes' votes only (2), so a node started alone is quorate with the "
                    "arbiter and fences the partner it has not seen (set_expected_votes 3)")
        return None
    delay = model.property("priority-fencing-delay")
    priority = dict(model.group(PEER_GROUP).meta).get("priority") if any(
        g.id == PEER_GROUP for g in model.groups) else None
    if not delay or delay in ("0", "0s") or not priority or priority == "0":
        return ("two nodes and no quorum device, and no fence race favouring Peer "
                "(priority-fencing-delay with a priority on Peer): after a split both nodes "
                "fence each other, or both run the validator")
    return None


def _validate_split_rule(args: StackValidationArgs, report: ReportViolation) -> None:
    for boot in bootstraps(args.resources):
        if boot.model is not None and (problem := _split_problem(boot.model)):
            report(f"The cluster script has {problem}. {_FIX}", boot.resource.urn)


def _instance_ids(resources: Sequence[PolicyResource]) -> Mapping[str, str]:
    """PREP_HA_INSTANCE_ID_n -> value, as the push Command passes them (when known)."""
    ids: dict[str, str] = {}
    for command in of_type(resources, *COMMANDS):
        for key in ("create", "update"):
            try:
                text = get(command.props, key)
            except UnknownValueError:
                continue
            if isinstance(text, str):
                ids.update(_ENV_ASSIGN.findall(text))
    return ids


def _validate_host_map(args: StackValidationArgs, report: ReportViolation) -> None:
    ids = _instance_ids(args.resources)
    for boot in bootstraps(args.resources):
        if boot.model is None:
            continue
        for fence in boot.model.fence_devices:
            targets: dict[str, list[str]] = {}
            for node, target in fence.host_map:
                targets.setdefault(ids.get(target, target), []).append(node)
            for target, nodes in targets.items():
                if len(nodes) > 1:
                    report(f"Fence device {fence.id} maps nodes {', '.join(nodes)} to one "
                           f"instance ({target}): fencing one would stop the other. Fix: "
                           "pcmk_host_map names each node's own instance.", boot.resource.urn)
            unmapped = {n.name for n in boot.model.nodes} - {n for n, _ in fence.host_map}
            if unmapped:
                report(f"Fence device {fence.id} does not map {', '.join(sorted(unmapped))}. "
                       f"{_FIX}", boot.resource.urn)


def _validate_token(args: StackValidationArgs, report: ReportViolation) -> None:
    floor = MAINNET_MIN_TOKEN_MS if is_mainnet(args.get_config()) else MIN_TOKEN_MS
    for boot in bootstraps(args.resources):
        if boot.model is None:
            continue
        c = boot.model.corosync
        if not floor <= c.token_ms <= MAX_TOKEN_MS:
            report(f"corosync token {c.token_ms} ms is outside {floor}..{MAX_TOKEN_MS} ms for "
                   "this network: shorter fences healthy nodes on ordinary EC2 stalls, longer "
                   "leaves the validator without a leader. Fix: set "
                   "icon-prep-ha:corosyncTokenMs inside the bound (README: token and "
                   "consensus).", boot.resource.urn)
        if problem := _consensus_problem(c.token_ms, c.consensus_ms, len(boot.model.nodes)):
            report(f"corosync consensus {c.consensus_ms} ms {problem}. {_FIX}",
                   boot.resource.urn)
        if c.knet is not None and c.knet.link_mode == "passive" \
                and c.knet.ping_timeout_ms * 2 > c.token_ms:
            report(f"knet ping_timeout {c.knet.ping_timeout_ms} ms is over half the token "
                   f"({c.token_ms} ms) with passive links: a cut heartbeat link is declared "
                   f"dead too late for the token to move to the other link, and the node is "
                   f"lost. {_FIX}", boot.resource.urn)


def _consensus_problem(token_ms: int, consensus_ms: int, nodes: int) -> str | None:
    """corosync.conf(5): at least 1.2 x token for three nodes or more; for two, anything
    between join (50 ms) and the token."""
    if nodes > 2 and consensus_ms * 10 < token_ms * 12:  # integers: 1001 ms needs 1202
        return f"is below 1.2 x token ({token_ms} ms) with {nodes} nodes, corosync's rule"
    if nodes <= 2 and not 50 < consensus_ms < token_ms:
        return (f"is outside join (50 ms)..token ({token_ms} ms), the range corosync.conf(5) "
                "calls safe for two nodes; above it only delays every takeover")
    return None


quorum_split_rule = StackValidationPolicy(
    name="quorum-split-rule",
    description="A two-node cluster decides splits: the arbiter's vote with a heuristic "
                "following Peer, or a fence race the node holding Peer wins.",
    validate=_validate_split_rule,
)

stonith_host_map_distinct = StackValidationPolicy(
    name="stonith-host-map-distinct",
    description="pcmk_host_map maps every node to its own instance, no two nodes to one.",
    validate=_validate_host_map,
)

quorum_token_bounds = StackValidationPolicy(
    name="quorum-token-bounds",
    description=f"corosync token within {MIN_TOKEN_MS}..{MAX_TOKEN_MS} ms "
                f"({MAINNET_MIN_TOKEN_MS} ms on MainNet), consensus inside corosync's safe "
                "range, passive knet links declaring a dead link within half a token.",
    validate=_validate_token,
    config_schema=PolicyConfigSchema(properties={"iconNetwork": {"type": "string"}}),
)
