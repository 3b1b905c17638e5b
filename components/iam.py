"""The nodes' instance role: exactly what fence_aws, the VIP agent and prep-ha-secret call.

From the agents the nodes run (cloud-init/files/: Debian 13's fence_aws with SkipOsShutdown,
and, single-AZ, ocf:prep-ha:awsvip, whose monitor reads the instance metadata; multi-AZ,
ocf:heartbeat:aws-vpc-move-ip):
- fence_aws_skip_os_shutdown: DescribeInstances (status, list, monitor), StopInstances (off,
  with Force and SkipOsShutdown, which IAM does not tell apart), StartInstances (on);
  "reboot" is off+on, so no RebootInstances.
- single-AZ, ocf:prep-ha:awsvip: AssignPrivateIpAddresses (start, --allow-reassignment),
  UnassignPrivateIpAddresses (stop).
- multi-AZ, ocf:heartbeat:aws-vpc-move-ip: DescribeRouteTables (monitor), ReplaceRoute (start:
  the overlay IP's routes to its own service ENI) on the cluster's route tables only; it
  moves no private IP, so the role may not either.
- prep-ha-secret: secretsmanager:GetSecretValue on this stack's secrets, and kms:Decrypt of the
  keystore's customer-managed key through Secrets Manager only. That policy is attached by
  components/secrets.py, which owns the secrets and who may read them.
- prep-ha-alert (the Pacemaker alert agent, run as root through sudo): sns:Publish to the
  stack's alert topic, whose key it uses only through SNS, and cloudwatch:PutMetricData into
  the project's namespace only.
- prep-ha-payload: s3:GetObject on the stack's payload objects (components/payload.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components.alerts import METRIC_NAMESPACE
from components.payload import read_payloads_policy
from components.tags import CLUSTER_TAG, cluster_tags


def fencing_and_vip_policy(cluster_name: str, region: str, partition: str, *,
                           multi_az: bool = False) -> dict[str, Any]:
    """Policy document for fence_aws and the VIP agent (awsvip single-AZ, aws-vpc-move-ip
    multi-AZ); mutations only on this cluster's resources."""
    owned = {"StringEquals": {f"aws:ResourceTag/{CLUSTER_TAG}": cluster_name}}
    arn = f"arn:{partition}:ec2:{region}:*"
    move_vip: dict[str, Any] = {
        "Sid": "MoveClusterOverlayIp",
        "Effect": "Allow",
        "Action": ["ec2:ReplaceRoute"],
        "Resource": f"{arn}:route-table/*",
        "Condition": owned,
    } if multi_az else {
        "Sid": "MoveClusterVips",
        "Effect": "Allow",
        "Action": ["ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"],
        "Resource": f"{arn}:network-interface/*",
        "Condition": owned,
    }
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                # Describe* calls support no resource-level scoping.
                "Sid": "Describe",
                "Effect": "Allow",
                "Action": ["ec2:DescribeInstances",
                           *(["ec2:DescribeRouteTables"] if multi_az else [])],
                "Resource": "*",
            },
            {
                "Sid": "FenceClusterInstances",
                "Effect": "Allow",
                "Action": ["ec2:StopInstances", "ec2:StartInstances"],
                "Resource": f"{arn}:instance/*",
                "Condition": owned,
            },
            move_vip,
        ],
    }


# Who may wear an instance role: EC2, for the instance profile (nodes and arbiter).
EC2_ASSUME_ROLE_POLICY: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}


def read_secrets_policy(secret_arns: Sequence[str], kms_key_arn: str,
                        region: str) -> dict[str, Any]:
    """GetSecretValue on exactly these secrets; the keystore key decrypts only for Secrets
    Manager (a role that could call kms:Decrypt directly could read any blob made with it)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadStackSecrets",
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue"],
                "Resource": list(secret_arns),
            },
            {
                "Sid": "DecryptTheKeystoreViaSecretsManager",
                "Effect": "Allow",
                "Action": ["kms:Decrypt"],
                "Resource": [kms_key_arn],
                "Condition": {"StringEquals": {
                    "kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}},
            },
        ],
    }


def alerts_policy(topic_arn: str, key_arn: str, region: str) -> dict[str, Any]:
    """Publish to this stack's alert topic only. PutMetricData has no resource-level scoping:
    the namespace condition keeps the role from writing (or faking) any other metric."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PublishStackAlerts",
                "Effect": "Allow",
                "Action": ["sns:Publish"],
                "Resource": [topic_arn],
            },
            {
                # Publishing to an encrypted topic makes SNS generate a data key as the caller.
                "Sid": "EncryptAlertsViaSns",
                "Effect": "Allow",
                "Action": ["kms:GenerateDataKey*", "kms:Decrypt"],
                "Resource": [key_arn],
                "Condition": {"StringEquals": {"kms:ViaService": f"sns.{region}.amazonaws.com"}},
            },
            {
                "Sid": "PutAlertMetrics",
                "Effect": "Allow",
                "Action": ["cloudwatch:PutMetricData"],
                "Resource": "*",
                "Condition": {"StringEquals": {"cloudwatch:namespace": METRIC_NAMESPACE}},
            },
        ],
    }


@dataclass(frozen=True)
class NodeIamArgs:
    cluster_name: str
    region: str
    # Which VIP agent the role serves: aws-vpc-move-ip (routes) or awsvip (private IPs).
    multi_az: bool
    # components/alerts.py ClusterAlerts.topic_arn and .key_arn.
    alert_topic_arn: pulumi.Input[str]
    alert_key_arn: pulumi.Input[str]
    # components/payload.py PayloadStore.bucket_arn: the nodes' payloads.
    payload_bucket_arn: pulumi.Input[str]


class NodeIam(pulumi.ComponentResource):
    role_arn: pulumi.Output[str]
    role_name: pulumi.Output[str]
    instance_profile_name: pulumi.Output[str]

    def __init__(self, name: str, args: NodeIamArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("icon-prep-ha:iam:NodeIam", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = cluster_tags(args.cluster_name, f"{args.cluster_name}-node")

        role = aws.iam.Role(
            f"{name}-role",
            description=f"{args.cluster_name} nodes: fence_aws, "
                        f"{'aws-vpc-move-ip' if args.multi_az else 'awsvip'}, stack secrets",
            assume_role_policy=json.dumps(EC2_ASSUME_ROLE_POLICY),
            tags=tags, opts=child)
        partition = aws.get_partition_output(
            opts=pulumi.InvokeOutputOptions(parent=self)).partition
        aws.iam.RolePolicy(
            f"{name}-fencing-and-vip", role=role.id,
            policy=partition.apply(lambda p: json.dumps(
                fencing_and_vip_policy(args.cluster_name, args.region, p,
                                       multi_az=args.multi_az))),
            opts=child)
        aws.iam.RolePolicy(
            f"{name}-alerts", role=role.id,
            policy=pulumi.Output.all(args.alert_topic_arn, args.alert_key_arn).apply(
                lambda v: json.dumps(alerts_policy(v[0], v[1], args.region))),
            opts=child)
        aws.iam.RolePolicy(
            f"{name}-read-payloads", role=role.id,
            policy=pulumi.Output.from_input(args.payload_bucket_arn).apply(read_payloads_policy),
            opts=child)
        profile = aws.iam.InstanceProfile(f"{name}-profile", role=role.name, tags=tags,
                                          opts=child)

        self.role_arn = role.arn
        self.role_name = role.name
        self.instance_profile_name = profile.name
        self.register_outputs({"roleArn": role.arn, "roleName": role.name,
                               "instanceProfileName": profile.name})
