"""Internet-facing Network Load Balancer in front of the peer VIP (the guide's L4 switches).

A P-Rep registers one fixed P2P endpoint on chain. Single-AZ, the NLB has one static Elastic
IP and the endpoint is `<that IP>:7100`. Multi-AZ, it has one Elastic IP in each node zone's
public subnet and the endpoint is `<its DNS name>:7100`: the name answers with the healthy
zones' addresses only, Go's dialer tries each address in turn, and goloop takes a name in
p2pEndpoint (and GOLOOP_P2P), so losing a zone does not take the registered endpoint with it.
Targets are of type `ip` and point at the peer VIP, not at an instance: after a takeover the
VIP (and with it the NLB's healthy target) is on the other node without any NLB change.
Multi-AZ, the VIP is an overlay IP outside the VPC, which the NLB takes as a target in zone
"all", with cross-zone load balancing so either zone's NLB node reaches it.

The citizen VIP gets no listener: the citizen only follows the chain through outbound
connections and serves nothing public, and one public endpoint per P-Rep is what peers
expect. Operators reach the citizen on its VIP (multi-AZ: its node's address) inside the VPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.network import ICON_P2P_PORT, ICON_RPC_PORT, zone_suffix
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
    # One per node zone (components/network.py Network.public_subnet_ids).
    public_subnet_ids: Sequence[pulumi.Input[str]]
    # The Elastic IP and an internet-facing NLB need the VPC's internet gateway first.
    internet_ready: Sequence[pulumi.Resource]


class PeerLoadBalancer(pulumi.ComponentResource):
    dns_name: pulumi.Output[str]
    # One Elastic IP per node zone, in cfg.zones order.
    public_ips: list[pulumi.Output[str]]
    # What the peer advertises and the P-Rep registers on chain: host:7100.
    p2p_endpoint: pulumi.Output[str]
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

        eips = [aws.ec2.Eip(
            f"{name}-eip{zone_suffix(cfg, i)}", domain="vpc",
            tags=cluster_tags(cfg.cluster_name, f"{cfg.cluster_name}-nlb{zone_suffix(cfg, i)}"),
            # The address is the P-Rep's registered endpoint (multi-AZ: behind its DNS
            # name): losing it means re-registering, or peers that cached it losing the node.
            opts=pulumi.ResourceOptions.merge(after_igw, pulumi.ResourceOptions(
                protect=cfg.termination_protection)))
            for i in range(len(cfg.zones))]
        nlb = aws.lb.LoadBalancer(
            f"{name}-nlb", load_balancer_type="network", internal=False,
            ip_address_type="ipv4",
            subnet_mappings=[{"subnet_id": subnet_id, "allocation_id": eip.allocation_id}
                             for subnet_id, eip in zip(args.public_subnet_ids, eips,
                                                       strict=True)],
            # Multi-AZ: the target lives in one zone at a time. Single-AZ stacks keep the
            # attribute unset, as created.
            enable_cross_zone_load_balancing=True if cfg.multi_az else None,
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
                target_id=cfg.peer_vip, port=port,
                # An IP target outside the VPC (the multi-AZ overlay IP) must be in "all".
                availability_zone="all" if cfg.multi_az else None, opts=child)
            aws.lb.Listener(
                f"{name}-{label}", load_balancer_arn=nlb.arn, port=port, protocol="TCP",
                default_actions=[{"type": "forward", "target_group_arn": target_group.arn}],
                tags=cluster_tags(cfg.cluster_name, f"{cfg.cluster_name}-{label}"), opts=child)

        self.dns_name = nlb.dns_name
        self.public_ips = [eip.public_ip for eip in eips]
        host = nlb.dns_name if cfg.multi_az else self.public_ips[0]
        self.p2p_endpoint = pulumi.Output.concat(host, f":{ICON_P2P_PORT}")
        self.arn_suffix = nlb.arn_suffix
        self.peer_target_group_arn_suffix = groups["p2p"].arn_suffix
        self.register_outputs({
            "dnsName": nlb.dns_name,
            **({"publicIps": self.public_ips} if cfg.multi_az
               else {"publicIp": self.public_ips[0]}),
            "p2pEndpoint": self.p2p_endpoint, "arnSuffix": nlb.arn_suffix,
            "peerTargetGroupArnSuffix": groups["p2p"].arn_suffix})
