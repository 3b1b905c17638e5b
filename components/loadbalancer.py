"""Internet-facing Network Load Balancer in front of the peer VIP (the guide's L4 switches).

A P-Rep registers one fixed P2P endpoint on chain, so the NLB gets a static Elastic IP.
Targets are of type `ip` and point at the peer VIP, not at an instance: after a takeover the
VIP (and with it the NLB's healthy target) is on the other node without any NLB change.

The citizen VIP gets no listener: the citizen only follows the chain through outbound
connections and serves nothing public, and one public endpoint per P-Rep is what peers
expect. Operators reach the citizen on its VIP inside the VPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.network import ICON_P2P_PORT, ICON_RPC_PORT
from components.tags import cluster_tags
from prep_ha.config import StackConfig

# Seconds; short so a takeover is noticed within ~20 s (2 failed checks at 10 s).
HEALTH_CHECK_INTERVAL = 10
# Lets established P2P sessions on the old target drain briefly after a takeover.
DEREGISTRATION_DELAY = 15


@dataclass(frozen=True)
class PeerLoadBalancerArgs:
    config: StackConfig
    vpc_id: pulumi.Input[str]
    public_subnet_id: pulumi.Input[str]
    # The Elastic IP and an internet-facing NLB need the VPC's internet gateway first.
    internet_ready: Sequence[pulumi.Resource]


class PeerLoadBalancer(pulumi.ComponentResource):
    dns_name: pulumi.Output[str]
    public_ip: pulumi.Output[str]
    # CloudWatch's LoadBalancer and TargetGroup dimensions (components/alerts.py); the peer's
    # group is the P2P one, the endpoint the P-Rep registered on chain.
    arn_suffix: pulumi.Output[str]
    peer_target_group_arn_suffix: pulumi.Output[str]

    def __init__(self, name: str, args: PeerLoadBalancerArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("icon-prep-ha:loadbalancer:PeerLoadBalancer", name, None, opts)
        cfg = args.config
        after_igw = pulumi.ResourceOptions(parent=self, depends_on=list(args.internet_ready))
        child = pulumi.ResourceOptions(parent=self)

        eip = aws.ec2.Eip(
            f"{name}-eip", domain="vpc",
            tags=cluster_tags(cfg.cluster_name, f"{cfg.cluster_name}-nlb"),
            # The address is the P-Rep's registered endpoint: losing it means re-registering.
            opts=pulumi.ResourceOptions.merge(after_igw, pulumi.ResourceOptions(
                protect=cfg.termination_protection)))
        nlb = aws.lb.LoadBalancer(
            f"{name}-nlb", load_balancer_type="network", internal=False,
            ip_address_type="ipv4",
            subnet_mappings=[{"subnet_id": args.public_subnet_id,
                              "allocation_id": eip.allocation_id}],
            enable_deletion_protection=cfg.termination_protection,
            tags=cluster_tags(cfg.cluster_name, f"{cfg.cluster_name}-nlb"), opts=after_igw)

        groups: dict[str, aws.lb.TargetGroup] = {}
        for label, port in (("p2p", ICON_P2P_PORT), ("rpc", ICON_RPC_PORT)):
            target_group = aws.lb.TargetGroup(
                f"{name}-{label}", port=port, protocol="TCP", target_type="ip",
                vpc_id=args.vpc_id,
                # Off: ICON needs no client address, and with the NLB's own address as the
                # source, replies stay on the NLB's path whatever the service subnet's
                # default route (the NAT gateway) is. The service SG admits it either way.
                preserve_client_ip="false",
                deregistration_delay=str(DEREGISTRATION_DELAY),
                health_check={
                    "protocol": "TCP", "port": "traffic-port",
                    "interval": HEALTH_CHECK_INTERVAL, "timeout": 5,
                    "healthy_threshold": 2, "unhealthy_threshold": 2,
                },
                tags=cluster_tags(cfg.cluster_name, f"{cfg.cluster_name}-{label}"), opts=child)
            groups[label] = target_group
            aws.lb.TargetGroupAttachment(
                f"{name}-{label}-peer-vip", target_group_arn=target_group.arn,
                target_id=cfg.peer_vip, port=port, opts=child)
            aws.lb.Listener(
                f"{name}-{label}", load_balancer_arn=nlb.arn, port=port, protocol="TCP",
                default_actions=[{"type": "forward", "target_group_arn": target_group.arn}],
                tags=cluster_tags(cfg.cluster_name, f"{cfg.cluster_name}-{label}"), opts=child)

        self.dns_name = nlb.dns_name
        self.public_ip = eip.public_ip
        self.arn_suffix = nlb.arn_suffix
        self.peer_target_group_arn_suffix = groups["p2p"].arn_suffix
        self.register_outputs({"dnsName": nlb.dns_name, "publicIp": eip.public_ip,
                               "arnSuffix": nlb.arn_suffix,
                               "peerTargetGroupArnSuffix": groups["p2p"].arn_suffix})
