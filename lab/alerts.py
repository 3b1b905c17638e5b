"""What the stack's alerting delivered: the SNS topic's messages and the alert metrics.

An SQS queue subscribed to the topic once (`AlertWatch.start`) receives every message
published after that; `delivered` drains it and answers with the messages and the metric
counts since a time. Works against moto (the lab) and AWS alike: pass boto3 clients.

    watch = AlertWatch.start(sns, sqs, topic_arn)
    ... fail a node ...
    seen = watch.delivered(since, cloudwatch, cluster_name)
    assert seen.count("Fencing") == 1 and any("fenced" in a.subject for a in seen.alerts)
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from components.alerts import METRIC_NAMESPACE, METRICS


@dataclass(frozen=True)
class Alert:
    subject: str
    message: str
    timestamp: dt.datetime  # when SNS accepted it (UTC)


@dataclass(frozen=True)
class Delivered:
    alerts: tuple[Alert, ...]
    metrics: dict[str, float]  # metric name -> sum of its values for the cluster

    def count(self, metric: str) -> int:
        return int(self.metrics.get(metric, 0))


@dataclass
class AlertWatch:
    sqs: Any
    queue_url: str
    received: list[Alert] = field(default_factory=list)

    @classmethod
    def start(cls, sns: Any, sqs: Any, topic_arn: str) -> AlertWatch:
        """Subscribe a queue of its own to the topic; messages from now on are kept."""
        name = topic_arn.rsplit(":", 1)[-1] + "-lab-watch"
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        # AWS delivers only what the queue's policy admits from the topic; moto ignores it.
        policy = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage", "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}}}]}
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
        return cls(sqs, url)

    def _drain(self) -> None:
        while True:
            batch = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                             WaitTimeSeconds=0).get("Messages", [])
            if not batch:
                return
            for message in batch:
                envelope = json.loads(message["Body"])
                self.received.append(Alert(
                    envelope.get("Subject") or "", envelope["Message"],
                    dt.datetime.fromisoformat(envelope["Timestamp"].replace("Z", "+00:00"))))
                self.sqs.delete_message(QueueUrl=self.queue_url,
                                        ReceiptHandle=message["ReceiptHandle"])

    def delivered(self, since: dt.datetime, cloudwatch: Any, cluster: str) -> Delivered:
        """Messages published at or after `since` (aware, UTC) and the cluster's metric sums."""
        self._drain()
        now = dt.datetime.now(dt.UTC)
        metrics: dict[str, float] = {}
        for metric in METRICS:
            points = cloudwatch.get_metric_statistics(
                Namespace=METRIC_NAMESPACE, MetricName=metric,
                Dimensions=[{"Name": "Cluster", "Value": cluster}],
                StartTime=since, EndTime=now + dt.timedelta(minutes=1), Period=60,
                Statistics=["Sum"])["Datapoints"]
            if points:
                metrics[metric] = sum(p["Sum"] for p in points)
        return Delivered(tuple(a for a in self.received if a.timestamp >= since), metrics)
