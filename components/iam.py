"""The nodes' instance role: exactly what fence_aws, awsvip and prep-ha-secret call.

From the agents shipped in Debian 12 (fence-agents 4.12, resource-agents 4.12):
- fence_aws: DescribeInstances (status, list), StopInstances (off, with Force), StartInstances
  (on); "reboot" is off+on, so no RebootInstances.
- awsvip: DescribeInstances (monitor), AssignPrivateIpAddresses (start, --allow-reassignment),
  UnassignPrivateIpAddresses (stop).
- prep-ha-secret: secretsmanager:GetSecretValue on this stack's three secrets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components.tags import CLUSTER_TAG, cluster_tags


def fencing_and_vip_policy(cluster_name: str, region: str, partition: str) -> dict[str, Any]:
    """Policy document for fence_aws and awsvip; mutations only on this cluster's resources."""
    owned = {"StringEquals": {f"aws:ResourceTag/{CLUSTER_TAG}": cluster_name}}
    arn = f"arn:{partition}:ec2:{region}:*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                # Describe* calls support no resource-level scoping.
                "Sid": "Describe",
                "Effect": "Allow",
                "Action": ["ec2:DescribeInstances"],
                "Resource": "*",
            },
            {
                "Sid": "FenceClusterInstances",
                "Effect": "Allow",
                "Action": ["ec2:StopInstances", "ec2:StartInstances"],
                "Resource": f"{arn}:instance/*",
                "Condition": owned,
            },
            {
                "Sid": "MoveClusterVips",
                "Effect": "Allow",
                "Action": ["ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"],
                "Resource": f"{arn}:network-interface/*",
                "Condition": owned,
            },
        ],
    }


def read_secrets_policy(secret_arns: Sequence[str]) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "ReadStackSecrets",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue"],
            "Resource": list(secret_arns),
        }],
    }


@dataclass(frozen=True)
class NodeIamArgs:
    cluster_name: str
    region: str
    secret_arns: Sequence[pulumi.Input[str]]


class NodeIam(pulumi.ComponentResource):
    role_arn: pulumi.Output[str]
    instance_profile_name: pulumi.Output[str]

    def __init__(self, name: str, args: NodeIamArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("icon-prep-ha:iam:NodeIam", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = cluster_tags(args.cluster_name, f"{args.cluster_name}-node")

        role = aws.iam.Role(
            f"{name}-role",
            description=f"{args.cluster_name} nodes: fence_aws, awsvip, stack secrets",
            assume_role_policy=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"Service": "ec2.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }],
            }),
            tags=tags, opts=child)
        partition = aws.get_partition_output(
            opts=pulumi.InvokeOutputOptions(parent=self)).partition
        aws.iam.RolePolicy(
            f"{name}-fencing-and-vip", role=role.id,
            policy=partition.apply(lambda p: json.dumps(
                fencing_and_vip_policy(args.cluster_name, args.region, p))),
            opts=child)
        aws.iam.RolePolicy(
            f"{name}-read-secrets", role=role.id,
            policy=pulumi.Output.all(*args.secret_arns).apply(
                lambda arns: json.dumps(read_secrets_policy(arns))),
            opts=child)
        profile = aws.iam.InstanceProfile(f"{name}-profile", role=role.name, tags=tags,
                                          opts=child)

        self.role_arn = role.arn
        self.instance_profile_name = profile.name
        self.register_outputs({"roleArn": role.arn, "instanceProfileName": profile.name})
