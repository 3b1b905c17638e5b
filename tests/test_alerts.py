"""Alerts: the topic, alarm and role grants the stack declares, the nodes' Pacemaker alert agent
(run here with a fake `aws` that records its calls), and lab/alerts.py against moto."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from components.alerts import METRIC_NAMESPACE, METRICS
from lab import program
from lab.alerts import AlertWatch
from lab.motocloud import MotoCloud
from lab.program import ACCOUNT, PROJECT_DIR, FakeCloud, ProgramRun
from prep_ha.config import StackConfig, load_stack_file
from prep_ha.userdata import node_payload
from tests.fixtures.fake_keys import FAKE_SSH_PRIVATE_KEY
from tests.lab_fixtures import REGION, moto_server, reset_moto
from tests.pulumi_mocks import DEBIAN_AMI, FAKE_HACLUSTER_PASSWORD, stack_config
from tests.test_userdata import files_of, payloads_of, sample

TOPIC = "aws:sns/topic:Topic"
SUBSCRIPTION = "aws:sns/topicSubscription:TopicSubscription"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
KMS_KEY = "aws:kms/key:Key"
LB = "aws:lb/loadBalancer:LoadBalancer"
TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"
AGENT = "/usr/local/sbin/prep-ha-alert"
TOPIC_ARN = "arn:aws:sns:eu-central-1:123456789012:prep-ha-testnet-alerts"
EMAIL = "ops@example.com"


class AlertsCloud(FakeCloud):
    """The tests' fake cloud, with the two outputs the alerts need that it leaves out."""

    def call(self, token: str, args: dict[str, Any]) -> dict[str, Any]:
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"id": ACCOUNT, "accountId": ACCOUNT}
        return super().call(token, args)

    def new_resource(self, type_: str, name: str,
                     inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        rid, outputs = super().new_resource(type_, name, inputs)
        if type_ == LB:
            outputs["arnSuffix"] = f"net/{name}/50dc6c495c0c9188"
        elif type_ == TARGET_GROUP:
            outputs["arnSuffix"] = f"targetgroup/{name}/73e2d6bc24d8a067"
        return rid, outputs


def run_with_alerts(stack: str, **overrides: Any) -> ProgramRun:
    region = str(stack_config(stack, overrides).get("aws:region"))
    cloud = AlertsCloud(region, ssh_private_key=FAKE_SSH_PRIVATE_KEY,
                        ssh_public_key="ssh-ed25519 AAAAFAKE", password=FAKE_HACLUSTER_PASSWORD,
                        ami_id=DEBIAN_AMI)
    return program.run_stack(stack, overrides, cloud=cloud)


@pytest.fixture(scope="module", params=["testnet", "mainnet"])
def stack(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def run(stack) -> ProgramRun:
    return run_with_alerts(stack)


def cfg_of(stack: str) -> StackConfig:
    return load_stack_file(str(PROJECT_DIR / f"Pulumi.{stack}.yaml"), stack=stack)


def one(run: ProgramRun, type_token: str, name: str):
    return next(r for r in run.of_type(type_token) if r.name == name)


# -- the stack -----------------------------------------------------------------------------


def test_topic_encrypted_with_a_key_cloudwatch_may_use(stack, run):
    [topic] = run.of_type(TOPIC)
    key = one(run, KMS_KEY, "alerts-key")
    assert topic.inputs["name"] == f"{cfg_of(stack).cluster_name}-alerts"
    assert topic.inputs["kmsMasterKeyId"] == key.outputs["arn"]
    assert key.inputs["enableKeyRotation"] is True
    statements = {s["Sid"]: s for s in json.loads(key.inputs["policy"])["Statement"]}
    assert statements["AccountAdministersThroughIam"]["Principal"] == {
        "AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    assert statements["CloudWatchAlarmsPublish"]["Principal"] == {
        "Service": "cloudwatch.amazonaws.com"}
    assert run.outputs["alertTopicArn"] == topic.outputs["arn"]
    assert run.of_type(SUBSCRIPTION) == []  # the stack files set no alertEmail


def test_email_subscription_only_with_alert_email():
    run = run_with_alerts("testnet", alertEmail=EMAIL)
    [topic] = run.of_type(TOPIC)
    [subscription] = run.of_type(SUBSCRIPTION)
    assert subscription.inputs == {"topic": topic.outputs["arn"], "protocol": "email",
                                   "endpoint": EMAIL}


def test_alarm_when_the_nlb_has_no_healthy_peer_for_a_minute(run):
    [alarm] = run.of_type(ALARM)
    [topic] = run.of_type(TOPIC)
    [lb] = run.of_type(LB)
    [p2p] = [g for g in run.of_type(TARGET_GROUP) if g.inputs["port"] == 7100]
    i = alarm.inputs
    assert (i["namespace"], i["metricName"], i["statistic"]) == (
        "AWS/NetworkELB", "HealthyHostCount", "Maximum")
    assert i["dimensions"] == {"LoadBalancer": lb.outputs["arnSuffix"],
                               "TargetGroup": p2p.outputs["arnSuffix"]}
    assert (i["period"], i["evaluationPeriods"], i["threshold"]) == (60, 1, 1)
    assert i["comparisonOperator"] == "LessThanThreshold"
    assert i["treatMissingData"] == "breaching"
    assert i["alarmActions"] == i["okActions"] == [topic.outputs["arn"]]


def test_node_role_publishes_to_its_topic_and_namespace_only(stack, run):
    [topic] = run.of_type(TOPIC)
    key = one(run, KMS_KEY, "alerts-key")
    role = one(run, "aws:iam/role:Role", "node-iam-role")
    policy = one(run, "aws:iam/rolePolicy:RolePolicy", "node-iam-alerts")
    assert policy.inputs["role"] == role.id
    region = cfg_of(stack).region
    statements = {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}
    assert {a for s in statements.values() for a in s["Action"]} == {
        "sns:Publish", "kms:GenerateDataKey*", "kms:Decrypt", "cloudwatch:PutMetricData"}
    assert statements["PublishStackAlerts"]["Resource"] == [topic.outputs["arn"]]
    assert statements["EncryptAlertsViaSns"]["Resource"] == [key.outputs["arn"]]
    assert statements["EncryptAlertsViaSns"]["Condition"] == {
        "StringEquals": {"kms:ViaService": f"sns.{region}.amazonaws.com"}}
    assert statements["PutAlertMetrics"]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": METRIC_NAMESPACE}}


def test_nodes_get_the_agent_the_sudo_rule_and_the_exporter(stack, run):
    cfg = cfg_of(stack)
    [topic] = run.of_type(TOPIC)
    for payload, addresses in zip(payloads_of(run), cfg.nodes, strict=True):
        files = files_of(payload)
        agent = files[AGENT]
        assert agent["permissions"] == "0755"
        assert f"TOPIC={topic.outputs['arn']}\n" in agent["content"]
        assert f"CLUSTER={cfg.cluster_name}\n" in agent["content"]
        sudoers = files["/etc/sudoers.d/prep-ha-alert"]
        assert sudoers["permissions"] == "0440"
        assert f"hacluster ALL=(root) NOPASSWD: {AGENT} publish *" in sudoers["content"]
        assert "prometheus-hacluster-exporter" in payload.packages
        dropin = files["/etc/systemd/system/ha_cluster_exporter.service.d/prep-ha.conf"]
        assert (f'Environment="ARGS=--web.listen-address={addresses.management_ip}:9664"'
                in dropin["content"])


@pytest.mark.skipif(shutil.which("visudo") is None, reason="sudo is not installed")
def test_sudo_rule_parses(tmp_path):
    rule = tmp_path / "prep-ha-alert"
    rule.write_text(files_of(node_payload(sample()))["/etc/sudoers.d/prep-ha-alert"]["content"])
    result = subprocess.run(["visudo", "-c", "-f", str(rule)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the alert agent -----------------------------------------------------------------------


class Agent:
    """prep-ha-alert as a node has it, with `aws`, `sudo`, `id` and `logger` faked."""

    def __init__(self, tmp_path: Path, topic: str = TOPIC_ARN) -> None:
        content = files_of(node_payload(sample(alert_topic_arn=topic)))[AGENT]["content"]
        self.script = tmp_path / "prep-ha-alert"
        self.script.write_text(content)
        self.script.chmod(0o755)
        self.calls = tmp_path / "calls"
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        record = (f"#!{sys.executable}\nimport json, sys\n"
                  f"open({str(self.calls)!r}, 'a').write(json.dumps(sys.argv) + '\\n')\n")
        fakes = {
            # A slow API: the agent must not wait for it. An unreachable one: the first
            # AWS_FAILS calls fail (counted in calls.failed).
            "aws": record + "import os, time; time.sleep(float(os.environ.get('AWS_DELAY', "
                            "'0')))\n"
                            f"f = {str(self.calls) + '.failed'!r}\n"
                            "n = len(open(f).read()) if os.path.exists(f) else 0\n"
                            "if n < int(os.environ.get('AWS_FAILS', '0')):\n"
                            "    open(f, 'a').write('x'); sys.exit(255)\n",
            "sudo": record,
            "id": '#!/bin/sh\necho "${FAKE_UID:-0}"\n',
            "logger": "#!/bin/sh\nexit 0\n",
        }
        for name, body in fakes.items():
            (self.bin / name).write_text(body)
            (self.bin / name).chmod(0o755)

    def __call__(self, *args: str, expect: int, uid: int = 0, aws_delay: float = 0,
                 aws_fails: int = 0, **alert: str) -> list[list[str]]:
        """Run it as Pacemaker would; the calls it made, once `expect` of them arrived."""
        self.calls.unlink(missing_ok=True)
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE_UID": str(uid),
               "AWS_DELAY": str(aws_delay), "AWS_FAILS": str(aws_fails),
               "CRM_alert_node": "prep-ha-testnet-2",
               "CRM_alert_timestamp_epoch": "1767225600",
               **{f"CRM_alert_{k}": v for k, v in alert.items()}}
        started = time.monotonic()
        result = subprocess.run([str(self.script), *args], env=env, timeout=30)
        self.elapsed = time.monotonic() - started
        self.returncode = result.returncode
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            calls = self._calls()
            if len(calls) >= expect and (expect or time.monotonic() - started > 0.5):
                return calls
            time.sleep(0.05)
        return self._calls()

    def _calls(self) -> list[list[str]]:
        if not self.calls.exists():
            return []
        return [json.loads(line)[1:] for line in self.calls.read_text().splitlines()]


def option(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def _command(call: list[str]) -> list[str]:
    """The aws CLI's service and operation: the first two words that are no option."""
    words, i = [], 0
    while i < len(call) and len(words) < 2:
        if call[i].startswith("--"):
            i += 2
        else:
            words.append(call[i])
            i += 1
    return words


def published(calls: list[list[str]]) -> tuple[str, str, str]:
    """(metric, subject, message) of one event's two aws calls."""
    [sns] = [c for c in calls if _command(c) == ["sns", "publish"]]
    [metric] = [c for c in calls if _command(c) == ["cloudwatch", "put-metric-data"]]
    for call in (sns, metric):  # bounded: a hung call must not hold the retries up
        assert option(call, "--cli-connect-timeout") == "5"
    assert option(sns, "--region") == option(metric, "--region") == "eu-central-1"
    assert option(sns, "--topic-arn") == TOPIC_ARN
    assert option(metric, "--namespace") == METRIC_NAMESPACE
    assert option(metric, "--dimensions") == "Cluster=prep-ha-testnet"
    assert (option(metric, "--value"), option(metric, "--unit")) == ("1", "Count")
    return option(metric, "--metric-name"), option(sns, "--subject"), option(sns, "--message")


@pytest.fixture()
def agent(tmp_path) -> Agent:
    return Agent(tmp_path)


OFF = "Operation off of prep-ha-testnet-2 by prep-ha-testnet-1 for pacemaker-controld.1@x: OK"
PEER = {"kind": "resource", "rsc": "peer-service", "rc": "0", "target_rc": "0", "status": "0",
        "interval": "0", "desc": "ok"}
# (alert variables, metric, words of the subject)
EVENTS = [
    pytest.param({"kind": "fencing", "rc": "0", "task": "off", "desc": OFF}, "Fencing",
                 "prep-ha-testnet-2 fenced", id="fence"),
    pytest.param({"kind": "fencing", "rc": "1", "task": "off", "desc": "Operation off: Error"},
                 "Fencing", "fencing (Fencing) of prep-ha-testnet-2 FAILED", id="fence-failed"),
    pytest.param({"kind": "fencing", "rc": "0", "task": "on", "desc": OFF.replace(" off ", " on ")},
                 "NodeRestart", "prep-ha-testnet-2 started again after its fence",
                 id="fence-restart"),
    pytest.param({**PEER, "task": "start"}, "PeerStart", "Peer started on prep-ha-testnet-2",
                 id="peer-start"),
    pytest.param({**PEER, "task": "stop"}, "PeerStop", "Peer stopped on prep-ha-testnet-2",
                 id="peer-stop"),
    pytest.param({**PEER, "task": "monitor", "interval": "2000", "rc": "7", "desc": "not running"},
                 "ResourceFailure", "monitor of peer-service on prep-ha-testnet-2 failed",
                 id="peer-died"),
    pytest.param({**PEER, "rsc": "ctz-service", "task": "start", "rc": "1", "status": "2",
                  "desc": "Timed Out"}, "ResourceFailure", "start of ctz-service", id="timeout"),
    pytest.param({**PEER, "task": "start", "rc": "1", "desc": "error"}, "ResourceFailure",
                 "start of peer-service", id="peer-start-failed"),
    pytest.param({"kind": "node", "desc": "lost", "nodeid": "2"}, "NodeLost",
                 "node prep-ha-testnet-2 lost", id="node-lost"),
    pytest.param({**PEER, "rsc": "fence-aws", "task": "monitor", "interval": "60000",
                  "rc": "1", "desc": "error"}, "FencingUnavailable",
                 "fence-aws cannot reach the EC2 API from prep-ha-testnet-2", id="api-outage"),
]


@pytest.mark.parametrize(("alert", "metric", "subject"), EVENTS)
def test_agent_publishes(agent, alert, metric, subject):
    calls = agent(expect=2, **alert)
    assert agent.returncode == 0
    got_metric, got_subject, message = published(calls)
    assert got_metric == metric
    assert got_subject.startswith(f"[prep-ha-testnet] {subject}")
    assert "Cluster prep-ha-testnet, reported by " in message
    assert "2026-01-01 00:00:00 UTC" in message  # CRM_alert_timestamp_epoch
    assert alert["desc"] in message


IGNORED = [
    pytest.param({**PEER, "task": "monitor", "interval": "2000"}, id="monitor-ok"),
    pytest.param({**PEER, "task": "monitor", "rc": "7", "target_rc": "7", "desc": "not running"},
                 id="probe-not-running"),
    pytest.param({**PEER, "task": "monitor", "rc": "7", "desc": "not running"},
                 id="probe-not-running-where-expected"),
    pytest.param({**PEER, "task": "monitor", "interval": "2000", "status": "1", "rc": "0",
                  "desc": "Cancelled"}, id="cancelled"),
    pytest.param({**PEER, "rsc": "ctz-service", "task": "start"}, id="citizen-start"),
    pytest.param({**PEER, "rsc": "peer-ip", "task": "start"}, id="vip-start"),
    pytest.param({"kind": "node", "desc": "member"}, id="node-joined"),
    pytest.param({"kind": "attribute", "desc": "x"}, id="attribute"),
    pytest.param({}, id="no-kind"),
]


@pytest.mark.parametrize("alert", IGNORED)
def test_agent_ignores(agent, alert):
    assert agent(expect=0, **alert) == []
    assert agent.returncode == 0


def test_agent_returns_before_the_api_answers(agent):
    calls = agent(expect=2, aws_delay=3, kind="node", desc="lost")
    assert agent.elapsed < 1.5
    assert published(calls)[0] == "NodeLost"


def test_agent_delivers_once_the_api_answers_again(agent):
    """An outage of the AWS APIs (a NAT gateway, an endpoint): the alert arrives late."""
    calls = agent(expect=4, aws_fails=2, kind="node", desc="lost")
    assert len(calls) == 4  # two failed calls, then both delivered on the retry (5 s)
    assert published(calls[2:])[0] == "NodeLost"


def test_agent_hands_over_to_root_through_sudo(agent):
    """As hacluster (Pacemaker's alert user), the instance role is out of reach."""
    [call] = agent(expect=1, uid=997, kind="node", desc="lost")
    assert call[:4] == ["-n", AGENT, "publish", "NodeLost"]
    assert call[4] == "node prep-ha-testnet-2 lost"


def test_publish_refuses_other_metrics(agent):
    assert agent("publish", "CPUUtilization", "x", "y", expect=0) == []
    assert agent.returncode != 0


def test_subject_is_one_short_printable_line(agent):
    calls = agent(expect=2, **{**PEER, "task": "monitor", "interval": "2000", "rc": "1",
                               "desc": "line one\nline two " + "x" * 200})
    _, subject, message = published(calls)
    assert len(subject) < 100 and "\n" not in subject
    assert "line one\nline two" in message


def test_without_a_topic_only_the_metric(tmp_path):
    agent = Agent(tmp_path, topic="")
    calls = agent(expect=1, kind="node", desc="lost")
    time.sleep(0.3)
    assert [_command(c) for c in agent._calls()] == [["cloudwatch", "put-metric-data"]] == \
        [_command(c) for c in calls]


def test_agent_knows_every_metric_and_the_namespace():
    text = (Path(__file__).parent.parent / "cloud-init/files/prep-ha-alert").read_text()
    assert f"NAMESPACE={METRIC_NAMESPACE}\n" in text
    assert f"    {' | '.join(METRICS)}) ;;" in text


# -- the lab's view ------------------------------------------------------------------------


@mock_aws
def test_lab_sees_what_was_delivered_since_a_time():
    sns, sqs, cloudwatch = (boto3.client(s, region_name=REGION)
                            for s in ("sns", "sqs", "cloudwatch"))
    topic = sns.create_topic(Name="prep-ha-testnet-alerts")["TopicArn"]
    sns.publish(TopicArn=topic, Subject="before", Message="not watched yet")
    watch = AlertWatch.start(sns, sqs, topic)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    sns.publish(TopicArn=topic, Subject="[prep-ha-testnet] prep-ha-testnet-2 fenced",
                Message="Cluster prep-ha-testnet, reported by n1:\n...")
    for metric in ("Fencing", "NodeLost", "NodeLost"):
        cloudwatch.put_metric_data(Namespace=METRIC_NAMESPACE, MetricData=[{
            "MetricName": metric, "Dimensions": [{"Name": "Cluster", "Value": "prep-ha-testnet"}],
            "Value": 1, "Unit": "Count"}])
    seen = watch.delivered(since, cloudwatch, "prep-ha-testnet")
    assert [a.subject for a in seen.alerts] == ["[prep-ha-testnet] prep-ha-testnet-2 fenced"]
    assert (seen.count("Fencing"), seen.count("NodeLost"), seen.count("PeerStart")) == (1, 2, 0)
    assert watch.delivered(since, cloudwatch, "other-cluster").metrics == {}
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    assert watch.delivered(later, cloudwatch, "prep-ha-testnet").alerts == ()


def test_lab_cloud_creates_the_alert_resources():
    """lab/motocloud.py's handlers, fed what the program declares (Pulumi's names, floats)."""
    declared = run_with_alerts("testnet", alertEmail=EMAIL)
    inputs = {r.type: r.inputs for r in declared.resources
              if r.type in (TOPIC, SUBSCRIPTION, ALARM)}
    with moto_server() as endpoint:
        reset_moto(endpoint)
        cloud = MotoCloud(endpoint=endpoint, ca_bundle=None, region=REGION, ssh_key=("", ""))
        account = cloud.call("aws:index/getCallerIdentity:getCallerIdentity", {})["accountId"]
        assert account.isdigit()
        key = cloud.new_resource(KMS_KEY, "alerts-key", {"description": "alerts"})[1]["arn"]
        topic, _ = cloud.new_resource(TOPIC, "alerts-topic",
                                      {**inputs[TOPIC], "kmsMasterKeyId": key})
        cloud.new_resource(SUBSCRIPTION, "alerts-email", {**inputs[SUBSCRIPTION], "topic": topic})
        dimensions = {"LoadBalancer": "net/x/1", "TargetGroup": "targetgroup/y/2"}
        name, outputs = cloud.new_resource(ALARM, "alerts-no-healthy-peer", {
            **inputs[ALARM], "alarmActions": [topic], "okActions": [topic],
            "dimensions": dimensions})

        def client(service: str) -> Any:
            return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                                aws_access_key_id="lab", aws_secret_access_key="lab")

        sns = client("sns")
        assert sns.get_topic_attributes(TopicArn=topic)["Attributes"]["KmsMasterKeyId"] == key
        [email] = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
        assert (email["Protocol"], email["Endpoint"]) == ("email", EMAIL)
        [alarm] = client("cloudwatch").describe_alarms(AlarmNames=[name])["MetricAlarms"]
        assert alarm["AlarmArn"] == outputs["arn"]
        assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == dimensions
        assert (alarm["MetricName"], alarm["Threshold"], alarm["Period"]) == (
            "HealthyHostCount", 1.0, 60)
        assert alarm["AlarmActions"] == alarm["OKActions"] == [topic]
        assert alarm["TreatMissingData"] == "breaching"
        watch = AlertWatch.start(sns, client("sqs"), topic)
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        sns.publish(TopicArn=topic, Subject="[c] node n2 lost", Message="m")
        seen = watch.delivered(since, client("cloudwatch"), "c")
        assert [a.subject for a in seen.alerts] == ["[c] node n2 lost"]
        reset_moto(endpoint)
