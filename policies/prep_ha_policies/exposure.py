"""Exposure: cluster ports closed to the internet and open to single hosts only, SSH from
admins only, IMDSv2 with a hop limit of 1, encrypted EBS.

A reachable pcsd or corosync lets anyone on the internet join or confuse the cluster and
trigger a failover; the ports below are protocol facts, stated here independently of the
program they judge.
"""

from __future__ import annotations

from pulumi_policy import (
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from .props import EBS_VOLUME, INSTANCE, LAUNCH_TEMPLATE, get, is_true
from .rules import ingress_rules, is_internet, network
from .settings import admin_cidrs

CLUSTER_PORTS = (
    ("udp", 5404, 5406, "corosync (UDP 5404-5406)"),
    ("tcp", 2224, 2224, "pcsd (TCP 2224)"),
)
# Also closed to networks: corosync-qnetd, the arbiter's vote.
PEER_ONLY_PORTS = (*CLUSTER_PORTS, ("tcp", 5403, 5403, "corosync-qnetd (TCP 5403)"))
SSH = ("tcp", 22, 22)


def _validate_cluster_ports(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for rule in ingress_rules(args.resource_type, args.props):
        for protocol, low, high, what in CLUSTER_PORTS:
            world = [c for c in rule.cidrs if is_internet(c)]
            if world and rule.reaches(protocol, low, high):
                report(f"Ingress from {', '.join(world)} reaches {what}: anyone could join or "
                       "disrupt the cluster and force a failover. Fix: admit the cluster ports "
                       "only from the nodes' own /32 addresses.")


exposure_cluster_ports = ResourceValidationPolicy(
    name="exposure-cluster-ports",
    description="Corosync (UDP 5404-5406) and pcsd (TCP 2224) are never open to 0.0.0.0/0 or "
                "::/0.",
    validate=_validate_cluster_ports,
)


def _validate_cluster_peers(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for rule in ingress_rules(args.resource_type, args.props):
        for protocol, low, high, what in PEER_ONLY_PORTS:
            wide = [c for c in rule.cidrs if network(c).num_addresses > 1]
            if wide and rule.reaches(protocol, low, high):
                report(f"{what} is admitted from {', '.join(wide)}: a network, not a cluster "
                       "member (admins included: they run pcs on a node over SSH). Fix: admit "
                       "it only from the other cluster hosts' /32 addresses.")


exposure_cluster_ports_hosts_only = ResourceValidationPolicy(
    name="exposure-cluster-ports-hosts-only",
    description="pcsd, corosync and corosync-qnetd are admitted only from single hosts (/32, "
                "/128): the cluster's own members, never an admin network.",
    validate=_validate_cluster_peers,
)


def _validate_ssh(args: ResourceValidationArgs, report: ReportViolation) -> None:
    rules = [r for r in ingress_rules(args.resource_type, args.props) if r.reaches(*SSH)]
    if not rules:
        return
    admins = admin_cidrs(args.get_config())
    for rule in rules:
        for cidr in rule.cidrs:
            if admins is None:
                report(f"SSH is admitted from {cidr}, but no adminCidrs are known to check it "
                       "against. Fix: set icon-prep-ha:adminCidrs in the stack config (or "
                       "adminCidrs in this policy's config).")
                continue
            net = network(cidr)
            if not any(net.version == a.version and net.subnet_of(a) for a in admins):
                report(f"SSH (TCP 22) is admitted from {cidr}, outside the admin CIDRs "
                       f"{', '.join(map(str, admins))}. Fix: admit SSH only from "
                       "icon-prep-ha:adminCidrs (a rule whose port range or protocol -1 "
                       "includes 22 counts too).")


exposure_ssh_admin_only = ResourceValidationPolicy(
    name="exposure-ssh-admin-only",
    description="SSH is admitted only from the configured admin CIDRs.",
    validate=_validate_ssh,
    config_schema=PolicyConfigSchema(properties={
        "adminCidrs": {"type": "array", "items": {"type": "string"}},
    }),
)


def _validate_imdsv2(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in (INSTANCE, LAUNCH_TEMPLATE):
        return
    tokens = get(args.props, "metadataOptions", "httpTokens")
    if tokens != "required":
        report(f"metadataOptions.httpTokens is {tokens or 'unset'}: IMDSv1 would hand the "
               "instance role (which can stop the other node) to any SSRF. Fix: "
               "metadata_options={\"http_tokens\": \"required\"}; awsvip and fence_aws use "
               "IMDSv2.")


exposure_imdsv2 = ResourceValidationPolicy(
    name="exposure-imdsv2",
    description="Instances require IMDSv2 (metadata_options.http_tokens = required).",
    validate=_validate_imdsv2,
)


def _validate_hop_limit(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in (INSTANCE, LAUNCH_TEMPLATE):
        return
    hops = get(args.props, "metadataOptions", "httpPutResponseHopLimit")
    if hops is None or int(hops) != 1:
        report(f"metadataOptions.httpPutResponseHopLimit is {hops or 'unset'}: with more than "
               "one hop, every container on the node can take the instance role (it stops "
               "instances and reads the validator key); unset, an AMI flagged for IMDSv2 "
               "defaults to 2. Fix: metadata_options={\"http_put_response_hop_limit\": 1}.")


exposure_imds_hop_limit = ResourceValidationPolicy(
    name="exposure-imds-hop-limit",
    description="Instances set the IMDS hop limit to 1, so containers cannot reach the role.",
    validate=_validate_hop_limit,
)


def _unencrypted_volumes(args: ResourceValidationArgs) -> list[str]:
    props = args.props
    if args.resource_type == EBS_VOLUME:
        return [] if is_true(get(props, "encrypted")) else ["the volume"]
    if args.resource_type == INSTANCE:
        found = [] if is_true(get(props, "rootBlockDevice", "encrypted")) else ["rootBlockDevice"]
        return found + [f"ebsBlockDevices[{i}]"
                        for i, d in enumerate(get(props, "ebsBlockDevices") or ())
                        if not is_true(get(d, "encrypted"))]
    if args.resource_type == LAUNCH_TEMPLATE:
        return [f"blockDeviceMappings[{i}].ebs"
                for i, m in enumerate(get(props, "blockDeviceMappings") or ())
                if get(m, "ebs") is not None and not is_true(get(m, "ebs", "encrypted"))]
    return []


def _validate_ebs(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for what in _unencrypted_volumes(args):
        report(f"{what} is not encrypted: the chain data and the node configuration would "
               "sit in clear on EBS. Fix: set encrypted=True.")


exposure_ebs_encrypted = ResourceValidationPolicy(
    name="exposure-ebs-encrypted",
    description="Every EBS volume (root, data, launch template) is encrypted.",
    validate=_validate_ebs,
)
