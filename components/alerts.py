"""What tells the operator that the cluster acted: an SNS topic and an alarm on the NLB.

The nodes' Pacemaker alert agent (cloud-init/files/prep-ha-alert) publishes every fence, Peer
start/stop, failed resource operation and lost node to the topic, and counts each as a
CloudWatch metric in METRIC_NAMESPACE. The alarm covers what no node can report: the NLB has
had no healthy peer target for a minute (both nodes down, the VIP nowhere, the peer hung).

The topic is encrypted with a key of its own: CloudWatch cannot publish to a topic encrypted
with the AWS-managed aws/sns key (its policy cannot admit cloudwatch.amazonaws.com), and the
alarm would then fail silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components.kms import account_administers_through_iam
from components.tags import cluster_tags
from prep_ha.config import StackConfig

# Where prep-ha-alert puts its metrics; the node role may put metrics nowhere else.
METRIC_NAMESPACE = "ICON/PrepHA"
# One metric per event kind, dimension Cluster=<clusterName>, value 1 per event.
METRICS = ("Fencing", "NodeRestart", "PeerStart", "PeerStop", "ResourceFailure",
           "NodeLost", "FencingUnavailable")
# NLB health checks run every 10 s (components/loadbalancer.py); a minute without a healthy
# target is a validator missing blocks, not a takeover in progress (those take ~20-40 s).
NO_HEALTHY_PEER_PERIOD_S = 60
KEY_DELETION_WINDOW_DAYS = 7


def topic_key_policy(partition: str, account: str) -> dict[str, Any]:
    """The topic's key: administered through IAM (the node role's grant lives in
    components/iam.py), and usable by CloudWatch so that the alarm can publish."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            account_administers_through_iam(partition, account),
            {
                "Sid": "CloudWatchAlarmsPublish",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                "Resource": "*",
            },
        ],
    }


@dataclass(frozen=True)
class ClusterAlertsArgs:
    config: StackConfig
    # PeerLoadBalancer.arn_suffix and .peer_target_group_arn_suffix: the alarm's dimensions.
    load_balancer_arn_suffix: pulumi.Input[str]
    peer_target_group_arn_suffix: pulumi.Input[str]


class ClusterAlerts(pulumi.ComponentResource):
    topic_arn: pulumi.Output[str]
    key_arn: pulumi.Output[str]
    alarm_name: pulumi.Output[str]

    def __init__(self, name: str, args: ClusterAlertsArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("icon-prep-ha:alerts:ClusterAlerts", name, None, opts)
        cfg = args.config
        child = pulumi.ResourceOptions(parent=self)
        tags = cluster_tags(cfg.cluster_name, f"{cfg.cluster_name}-alerts")
        invoke = pulumi.InvokeOutputOptions(parent=self)
        partition = aws.get_partition_output(opts=invoke).partition
        account = aws.get_caller_identity_output(opts=invoke).account_id

        key = aws.kms.Key(
            f"{name}-key", description=f"{cfg.cluster_name}: the alert topic",
            enable_key_rotation=True, deletion_window_in_days=KEY_DELETION_WINDOW_DAYS,
            policy=pulumi.Output.all(partition, account).apply(
                lambda v: json.dumps(topic_key_policy(v[0], v[1]))),
            tags=tags, opts=child)
        topic = aws.sns.Topic(
            f"{name}-topic", name=f"{cfg.cluster_name}-alerts", kms_master_key_id=key.arn,
            tags=tags, opts=child)
        if cfg.alert_email:
            # SNS mails a confirmation link; nothing is delivered until it is followed.
            aws.sns.TopicSubscription(
                f"{name}-email", topic=topic.arn, protocol="email", endpoint=cfg.alert_email,
                opts=child)

        alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-no-healthy-peer", name=f"{cfg.cluster_name}-no-healthy-peer",
            alarm_description=f"{cfg.cluster_name}: the NLB has had no healthy target for the "
                              "peer's P2P endpoint for a minute; the validator is unreachable",
            namespace="AWS/NetworkELB", metric_name="HealthyHostCount",
            dimensions={"LoadBalancer": args.load_balancer_arn_suffix,
                        "TargetGroup": args.peer_target_group_arn_suffix},
            # Maximum below 1: not one healthy sample in the whole minute. (Minimum would
            # fire on a takeover's few seconds without a target, which the agent reports.)
            statistic="Maximum", period=NO_HEALTHY_PEER_PERIOD_S, evaluation_periods=1,
            datapoints_to_alarm=1, threshold=1, comparison_operator="LessThanThreshold",
            # No data points at all means the NLB has nothing to report on: as bad as none healthy.
            treat_missing_data="breaching",
            alarm_actions=[topic.arn], ok_actions=[topic.arn], tags=tags, opts=child)

        self.topic_arn = topic.arn
        self.key_arn = key.arn
        self.alarm_name = alarm.name
        self.register_outputs({"topicArn": topic.arn, "keyArn": key.arn,
                               "alarmName": alarm.name})
