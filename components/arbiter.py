"""The quorum arbiter: a small instance running corosync-qnetd, the cluster's third vote.

With it a split between the two nodes is decided without a fence race: the partition whose
qdevice heuristic passes (the one holding the peer VIP) gets the vote, the other loses quorum
and neither fences nor starts anything. It lives in its own subnet and security group: only
the two nodes reach qnetd (5403) and its pcsd (2224, how `pcs quorum device add` gets the
nodes' TLS certificates signed). Nobody logs in to it; its role can read one secret only.

Single-AZ it shares the nodes' zone; multi-AZ it has a third zone of its own
(cfg.arbiter_zone), so its vote survives the loss of either node's zone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.iam import EC2_ASSUME_ROLE_POLICY
from components.node import IMDSV2_HOP_LIMIT_1, debian_ami, encrypted_root, user_data_for
from components.payload import PayloadStore, read_payloads_policy
from components.tags import ROLE_TAG, cluster_tags
from prep_ha.config import StackConfig
from prep_ha.payload import TAG as PAYLOAD_TAG
from prep_ha.userdata import ArbiterSettings, arbiter_payload

QNETD_PORT = 5403
PCSD_PORT = 2224
ROOT_VOLUME_GIB = 10


@dataclass(frozen=True)
class QuorumArbiterArgs:
    config: StackConfig
    vpc_id: pulumi.Input[str]
    # Its default route (Debian packages on first boot). Multi-AZ: node 1's zone's NAT
    # gateway, across zones: qnetd itself needs no internet, so the vote does not depend
    # on that zone, only a first boot does.
    nat_gateway_id: pulumi.Input[str]
    # The VPC's S3 gateway endpoint (its payload), which this subnet's routes must include.
    s3_endpoint_id: pulumi.Input[str]
    payload_store: PayloadStore
    hacluster_password_secret_arn: pulumi.Input[str]
    # Packages and the hacluster secret on first boot: NAT route and secret versions first.
    boot_after: Sequence[pulumi.Resource]


class QuorumArbiter(pulumi.ComponentResource):
    instance_id: pulumi.Output[str]
    role_arn: pulumi.Output[str]

    def __init__(self, name: str, args: QuorumArbiterArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("icon-prep-ha:arbiter:QuorumArbiter", name, None, opts)
        cfg = args.config
        child = pulumi.ResourceOptions(parent=self)

        def tags(what: str) -> dict[str, str]:
            return cluster_tags(cfg.cluster_name, f"{cfg.arbiter_name}-{what}",
                                **{ROLE_TAG: "arbiter"})

        subnet = aws.ec2.Subnet(
            f"{name}-subnet", vpc_id=args.vpc_id, cidr_block=cfg.arbiter_subnet_cidr,
            availability_zone=cfg.arbiter_zone, map_public_ip_on_launch=False,
            tags=tags("subnet"), opts=child)
        table = aws.ec2.RouteTable(
            f"{name}-rt", vpc_id=args.vpc_id,
            routes=[{"cidr_block": "0.0.0.0/0", "nat_gateway_id": args.nat_gateway_id}],
            tags=tags("rt"), opts=child)
        routes = [aws.ec2.RouteTableAssociation(f"{name}-rta", subnet_id=subnet.id,
                                                route_table_id=table.id, opts=child)]
        routes.append(aws.ec2.VpcEndpointRouteTableAssociation(
            f"{name}-s3-route", vpc_endpoint_id=args.s3_endpoint_id, route_table_id=table.id,
            opts=child))

        sg = aws.ec2.SecurityGroup(
            f"{name}-sg", vpc_id=args.vpc_id, tags=tags("sg"), opts=child,
            description="corosync-qnetd and pcsd, from the two nodes only")
        # The nodes reach other subnets from their service addresses (the main route table).
        for port, what in ((QNETD_PORT, "qnetd"), (PCSD_PORT, "pcsd")):
            for i, node in enumerate(cfg.nodes):
                aws.vpc.SecurityGroupIngressRule(
                    f"{name}-{what}-{i}", security_group_id=sg.id, ip_protocol="tcp",
                    from_port=port, to_port=port, cidr_ipv4=f"{node.service_ip}/32",
                    description=f"{what} from {cfg.node_names[i]}", opts=child)
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-egress", security_group_id=sg.id, ip_protocol="-1", cidr_ipv4="0.0.0.0/0",
            description="Debian packages and Secrets Manager via NAT", opts=child)

        role = aws.iam.Role(
            f"{name}-role", description=f"{cfg.arbiter_name}: the hacluster password only",
            assume_role_policy=json.dumps(EC2_ASSUME_ROLE_POLICY),
            tags=tags("role"), opts=child)
        aws.iam.RolePolicy(
            f"{name}-read-hacluster-password", role=role.id,
            policy=pulumi.Output.from_input(args.hacluster_password_secret_arn).apply(
                lambda arn: json.dumps({"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
                    "Resource": [arn]}]})),
            opts=child)
        reads_payloads = aws.iam.RolePolicy(f"{name}-read-payloads", role=role.id,
                                            policy=args.payload_store.bucket_arn.apply(
                                                read_payloads_policy), opts=child)
        profile = aws.iam.InstanceProfile(f"{name}-profile", role=role.name, tags=tags("role"),
                                          opts=child)

        digest = args.payload_store.publish(cfg.arbiter_name, pulumi.Output.from_input(
            args.hacluster_password_secret_arn).apply(lambda arn: arbiter_payload(
                ArbiterSettings(arbiter_name=cfg.arbiter_name, region=cfg.region,
                                hacluster_secret_id=arn))))
        instance = aws.ec2.Instance(
            f"{name}-instance", ami=debian_ami(cfg.ami_id, cfg.arbiter_instance_type, self),
            instance_type=cfg.arbiter_instance_type, subnet_id=subnet.id,
            private_ip=cfg.arbiter_ip, vpc_security_group_ids=[sg.id],
            iam_instance_profile=profile.name,
            metadata_options=IMDSV2_HOP_LIMIT_1,
            root_block_device=encrypted_root(ROOT_VOLUME_GIB, tags("root")),
            disable_api_termination=cfg.termination_protection,
            user_data_base64=user_data_for(cfg.arbiter_name, cfg.region,
                                           args.payload_store.bucket_name,
                                           ssh_host_key=False),
            tags={**tags("instance"), "Name": cfg.arbiter_name, PAYLOAD_TAG: digest},
            # Its first boot fetches the payload: the route to S3 and the right to read first.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[*args.boot_after, *routes, reads_payloads],
                ignore_changes=["ami", "userDataBase64"]))

        self.instance_id = instance.id
        self.instance = instance
        self.role_arn = role.arn
        self.register_outputs({"instanceId": instance.id})
