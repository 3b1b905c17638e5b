"""STONITH: the cluster script enables fencing for every node, and the nodes can fence.

A two-node cluster without working fencing can run the peer on both nodes after a split:
two validators signing with one key. The guide disables STONITH while composing the CIB;
this project never does, and these policies keep it that way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pulumi_policy import (
    PolicyResource,
    ReportViolation,
    StackValidationArgs,
    StackValidationPolicy,
)

from .iam_doc import grants, is_allow, is_scoped, statements
from .props import (
    COMMANDS,
    IAM_POLICY,
    INSTANCE,
    INSTANCE_PROFILE,
    ROLE,
    ROLE_POLICY,
    ROLE_POLICY_ATTACHMENT,
    UnknownValueError,
    cluster_nodes,
    get,
    is_true,
    of_type,
)
from .refs import referenced
from .script import bootstraps, command_texts, stonith_off_lines

_TRUE = ("true", "yes", "on", "1", "y")
# What fence_aws (fence-agents 4.12, /usr/sbin/fence_aws) calls: status and list use
# DescribeInstances, off is StopInstances(Force), on is StartInstances; reboot is off+on,
# so RebootInstances is not needed.
FENCE_ACTIONS = ("ec2:DescribeInstances", "ec2:StopInstances", "ec2:StartInstances")
MUTATING_FENCE_ACTIONS = ("ec2:StopInstances", "ec2:StartInstances")
_FIX_SCRIPT = ("Fix: build the cluster from prep_ha.cluster.model.build_model (it sets "
               "stonith-enabled=true and one fence_aws device mapping every node) and do not "
               "edit the rendered script.")


def _validate_cluster_config(args: StackValidationArgs, report: ReportViolation) -> None:
    for command in of_type(args.resources, *COMMANDS):
        for text in command_texts(command.props):
            for line in stonith_off_lines(text):
                report(f"`{line}` would leave the cluster without fencing. Fix: remove it; "
                       "STONITH stays enabled at all times, also while the CIB is built "
                       "(the bootstrap builds it in a file and pushes it once).", command.urn)
    # An unknown stdin could be the script: judge it again with real values rather than
    # report it missing.
    scripts = bootstraps(args.resources, require_known=True)
    if not scripts and of_type(args.resources, INSTANCE):
        report("No Command carries the cluster script (a stdin with a `pcs cluster setup` "
               "line), so nothing shows that the nodes will run with STONITH. Fix: bootstrap "
               "the cluster with components/cluster.py PacemakerCluster.")
    for boot in scripts:
        if boot.model is None:
            report(f"The cluster script cannot be read ({boot.error}), so its fencing cannot "
                   f"be verified. {_FIX_SCRIPT}", boot.resource.urn)
            continue
        model = boot.model
        enabled = (model.property("stonith-enabled") or "").lower()
        if enabled not in _TRUE:
            report(f"The cluster script sets stonith-enabled={enabled or '(unset)'}; it must "
                   f"be true. {_FIX_SCRIPT}", boot.resource.urn)
        covered = {node for fence in model.fence_devices if fence.agent.startswith("fence_")
                   for node, target in fence.host_map if target}
        missing = [n.name for n in model.nodes if n.name not in covered]
        if missing:
            report(f"No fence device covers node(s) {', '.join(missing)} of the "
                   f"`pcs cluster setup` line (pcmk_host_map must name every node). "
                   f"{_FIX_SCRIPT}", boot.resource.urn)


stonith_cluster_config = StackValidationPolicy(
    name="stonith-cluster-config",
    description="The cluster script enables STONITH with a fence device for every node, and "
                "no Command ever sets stonith-enabled=false.",
    validate=_validate_cluster_config,
)


def role_documents(role: PolicyResource, resources: Sequence[PolicyResource]) -> Iterator[object]:
    """Policy documents attached to `role`: inline, RolePolicy, and attached managed policies."""
    for inline in get(role.props, "inlinePolicies") or ():
        yield get(inline, "policy")
    for rp in of_type(resources, ROLE_POLICY):
        if any(r is role for r in referenced(rp, "role", [role])):
            yield get(rp.props, "policy")
    managed = of_type(resources, IAM_POLICY)
    for attachment in of_type(resources, ROLE_POLICY_ATTACHMENT):
        if any(r is role for r in referenced(attachment, "role", [role])):
            for policy in referenced(attachment, "policyArn", managed):
                yield get(policy.props, "policy")


def _fence_problems(role: PolicyResource, resources: Sequence[PolicyResource]) -> list[str]:
    stmts = [s for doc in role_documents(role, resources) for s in statements(doc)]
    problems = []
    for action in FENCE_ACTIONS:
        allowed = [s for s in stmts if is_allow(s) and grants(s, action)]
        denied = [s for s in stmts if s.get("Effect") == "Deny" and grants(s, action)]
        if not allowed or denied:
            problems.append(f"does not allow {action}")
        if action in MUTATING_FENCE_ACTIONS and any(not is_scoped(s) for s in allowed):
            problems.append(f"allows {action} on instances beyond the cluster (Resource "
                            "\"*\" or instance/* without a resource-tag condition)")
    return problems


def instance_roles(instance: PolicyResource,
                   resources: Sequence[PolicyResource]) -> list[PolicyResource]:
    """The roles of the instance profile `instance` runs with."""
    profiles = referenced(instance, "iamInstanceProfile", of_type(resources, INSTANCE_PROFILE))
    roles = of_type(resources, ROLE)
    return [role for p in profiles for role in referenced(p, "role", roles)]


def _validate_fence_permissions(args: StackValidationArgs, report: ReportViolation) -> None:
    pending: list[UnknownValueError] = []
    # The arbiter is not fenced and fences nobody: its role reads one secret, nothing more.
    for instance in cluster_nodes(args.resources):
        if is_true(get(instance.props, "disableApiStop")):
            report("disableApiStop is true: fence_aws fences by StopInstances and would fail, "
                   "so Pacemaker could never recover the peer. Fix: set disable_api_stop=False.",
                   instance.urn)
        try:
            roles = instance_roles(instance, args.resources)
            problems = {role.urn: _fence_problems(role, args.resources) for role in roles}
        except UnknownValueError as e:
            pending.append(e)
            continue
        if not roles:
            report("The instance has no instance profile with a role declared in this stack, "
                   "so fence_aws on the other node has no credentials to fence it. Fix: give "
                   "it the NodeIam instance profile (components/iam.py).", instance.urn)
        for urn, found in problems.items():
            if found:
                report(f"The instance role {'; '.join(found)}. fence_aws needs "
                       f"{', '.join(FENCE_ACTIONS)}, and Stop/Start only on the cluster's "
                       "instances. Fix: grant them as in components/iam.py "
                       "fencing_and_vip_policy (Stop/Start conditioned on the cluster tag).",
                       urn)
    if pending:
        # The engine reports "can't run during preview" and judges again with real values
        # before `pulumi up` creates anything; findings reported above still stand.
        raise pending[0]


stonith_fence_permissions = StackValidationPolicy(
    name="stonith-fence-permissions",
    description="Each node's instance role can fence the other node (fence_aws), scoped to "
                "the cluster, and no node is protected against being stopped.",
    validate=_validate_fence_permissions,
)
