"""The policy pack, called the way the engine calls it, on the real program's resources.

Resources come from tests/pulumi_mocks.py (the real __main__.py under set_mocks). Each is
handed to the policies as the engine's analyzer would: secret values arrive in the wire form
and are deserialized by pulumi_policy itself (which unwraps them), every property sits behind
pulumi_policy's unknown-checking proxy, and stack config is visible through pulumi.Config.
"""

from __future__ import annotations

import base64
import contextvars
import copy
import dataclasses
import gzip
import json
import runpy
import sys
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pulumi
import pulumi_policy
import pytest
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Secret,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import SPECIAL_SECRET_SIG, SPECIAL_SIG_KEY, deserialize_properties
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from policies.prep_ha_policies import POLICIES
from policies.prep_ha_policies.argv import argv_findings
from policies.prep_ha_policies.keystore import policy_gaps
from policies.prep_ha_policies.placement import node_zones
from policies.prep_ha_policies.rules import ingress_rules
from policies.prep_ha_policies.secrets import secret_findings
from policies.prep_ha_policies.topology import is_multi_az, overlay_ips
from prep_ha.payload import Payload
from prep_ha.userdata import decode_user_data, encode_user_data
from tests.fixtures.fake_keys import FAKE_RSA_PEM, PEM_HEADER
from tests.pulumi_mocks import FAKE_KEYSTORE, CapturedResource, run_program, stack_config

POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"
STACKS = ("testnet", "mainnet")
INSTANCE = "aws:ec2/instance:Instance"
BUCKET_OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"
COMMAND = "command:remote:Command"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
PEM = FAKE_RSA_PEM
# The mocks answer with these physical names (the engine's outputs would carry real ones).
NAMED_BY_PROVIDER = ("aws:iam/role:Role", "aws:iam/instanceProfile:InstanceProfile")

Violations = dict[str, list[tuple[str, str | None]]]


# --- calling policies the way the engine does -------------------------------------------

def _opts(secret_outputs: Iterable[str] = ()) -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0),
                                 sorted(secret_outputs))


def _wire(value: Any, path: str, secret_paths: frozenset[str]) -> Any:
    """The value as the engine sends it: secrets in their signature wrapper."""
    if isinstance(value, dict):
        value = {k: _wire(v, f"{path}.{k}" if path else k, secret_paths) for k, v in value.items()}
    elif isinstance(value, list):
        value = [_wire(v, f"{path}.{i}", secret_paths) for i, v in enumerate(value)]
    if path in secret_paths:
        return {SPECIAL_SIG_KEY: SPECIAL_SECRET_SIG, "value": value}
    return value


def policy_resource(r: CapturedResource, stack: str = "test") -> PolicyResource:
    props: dict[str, Any] = {**r.inputs, "id": r.id}
    if r.type in NAMED_BY_PROVIDER:
        props.setdefault("name", r.name)
    # Analyze deserializes with pulumi_policy's own code: secret values arrive unwrapped.
    deserialized = deserialize_properties(_wire(props, "", r.secret_paths))
    # The SDKs declare their secret inputs as additionalSecretOutputs (pulumi-aws does so
    # for secretString, pulumi-command for connection); the mocks report which were secret.
    secret_outputs = {p.split(".")[0] for p in r.secret_paths}
    return PolicyResource(r.type, unknown_checking_proxy(deserialized),
                          f"urn:pulumi:{stack}::icon-prep-ha::{r.type}::{r.name}", r.name,
                          _opts(secret_outputs), None, None, [], {})


def _with_stack_config(stack: str | None, fn: Callable[[], Any]) -> Any:
    """Run `fn` with the stack's config visible through pulumi.Config, as in the analyzer."""
    def run() -> Any:
        if stack is not None:
            values = {k: json.dumps(v) if isinstance(v, list | dict) else str(v)
                      for k, v in stack_config(stack).items()}
            pulumi.runtime.set_all_config(values, [])
        return fn()
    return contextvars.copy_context().run(run)


def evaluate(resources: list[PolicyResource], *, stack: str | None = None,
             config: Mapping[str, Mapping[str, Any]] | None = None,
             policies: Iterable[pulumi_policy.Policy] = POLICIES) -> Violations:
    """Every policy on every resource (resource policies) and on the stack (stack policies)."""
    found: Violations = {}

    def run() -> None:
        for policy in policies:
            out = found.setdefault(policy.name, [])

            def report(message: str, urn: str | None = None, out: list = out) -> None:
                out.append((message, urn))

            policy_config = dict((config or {}).get(policy.name, {}))
            if isinstance(policy, StackValidationPolicy):
                policy.validate(StackValidationArgs(resources, policy_config), report)
            elif isinstance(policy, ResourceValidationPolicy):
                for r in resources:
                    policy.validate(ResourceValidationArgs(
                        r.resource_type, r.props, r.urn, r.name, r.opts, None, policy_config),
                        lambda m, u=None, urn=r.urn: report(m, urn))

    _with_stack_config(stack, run)
    return found


def messages(found: Violations, policy: str) -> list[str]:
    return [m for m, _ in found[policy]]


def failing(found: Violations) -> set[str]:
    return {name for name, hits in found.items() if hits}


# --- the real program's resources --------------------------------------------------------

@cache
def _captured(stack: str) -> tuple[CapturedResource, ...]:
    return tuple(run_program(stack))


def program(stack: str) -> list[CapturedResource]:
    return [dataclasses.replace(r, inputs=copy.deepcopy(r.inputs)) for r in _captured(stack)]


def judge(stack: str, resources: list[CapturedResource]) -> Violations:
    return evaluate([policy_resource(r, stack) for r in resources], stack=stack)


def one(resources: list[CapturedResource], pred: Callable[[CapturedResource], bool]
        ) -> CapturedResource:
    found = [r for r in resources if pred(r)]
    assert found, "the program declares no such resource"
    return found[0]


def cib_push(resources: list[CapturedResource]) -> CapturedResource:
    return one(resources, lambda r: r.type == COMMAND and r.name.endswith("-cib-push"))


def ingress(resources: list[CapturedResource], port: int) -> CapturedResource:
    return one(resources, lambda r: r.type == INGRESS and r.inputs.get("fromPort") == port)


def instances(resources: list[CapturedResource]) -> list[CapturedResource]:
    return [r for r in resources if r.type == INSTANCE]


def nodes(resources: list[CapturedResource]) -> list[CapturedResource]:
    """The cluster nodes' instances (not the quorum arbiter)."""
    return [r for r in instances(resources) if "prep-ha:node" in r.inputs["tags"]]


@pytest.mark.parametrize("stack", STACKS)
def test_program_passes_every_policy(stack: str) -> None:
    resources = program(stack)
    # Not vacuous: what the policies judge is really there (two nodes and the arbiter).
    assert len(instances(resources)) == 3
    assert "pcs cluster setup" in cib_push(resources).inputs["stdin"]
    assert ingress(resources, 2224) and ingress(resources, 22)
    assert any(r.type == "aws:secretsmanager/secretVersion:SecretVersion" for r in resources)
    found = judge(stack, resources)
    assert set(found) == {p.name for p in POLICIES}
    assert failing(found) == set(), found


Mutation = Callable[[list[CapturedResource], str], None]


def _replace_stdin(old: str, new: str) -> Mutation:
    def mutate(resources: list[CapturedResource], stack: str) -> None:
        push = cib_push(resources)
        text = old.replace("STACK", stack)
        assert text in push.inputs["stdin"]
        push.inputs["stdin"] = push.inputs["stdin"].replace(text, new)
    return mutate


def _set(pred: Callable[[CapturedResource], bool], **inputs: Any) -> Mutation:
    def mutate(resources: list[CapturedResource], stack: str) -> None:
        matched = [r for r in resources if pred(r)]
        assert matched
        for r in matched:
            r.inputs.update(copy.deepcopy(inputs))
    return mutate


def _is(type_: str) -> Callable[[CapturedResource], bool]:
    return lambda r: r.type == type_


def _open_pcsd(resources: list[CapturedResource], stack: str) -> None:
    ingress(resources, 2224).inputs["cidrIpv4"] = "0.0.0.0/0"


def _open_ssh(resources: list[CapturedResource], stack: str) -> None:
    ingress(resources, 22).inputs["cidrIpv4"] = "192.0.2.0/24"


def _edit_user_data(node: CapturedResource, edit) -> None:
    """Change an instance's (compressed, encoded) user-data document as text."""
    node.inputs["userDataBase64"] = encode_user_data(
        edit(decode_user_data(node.inputs["userDataBase64"])))


def _pem_in_user_data(resources: list[CapturedResource], stack: str) -> None:
    _edit_user_data(instances(resources)[0], lambda ud: ud + f"\n# {PEM}")


def _unscoped_fencing(resources: list[CapturedResource], stack: str) -> None:
    rp = one(resources, lambda r: "fencing" in r.name and r.type.endswith("RolePolicy"))
    doc = json.loads(rp.inputs["policy"])
    for stmt in doc["Statement"]:
        if "ec2:StopInstances" in stmt["Action"]:
            stmt["Resource"] = "*"
            stmt.pop("Condition")
    rp.inputs["policy"] = json.dumps(doc)


def _no_start(resources: list[CapturedResource], stack: str) -> None:
    rp = one(resources, lambda r: "fencing" in r.name and r.type.endswith("RolePolicy"))
    rp.inputs["policy"] = rp.inputs["policy"].replace('"ec2:StartInstances"', '"ec2:GetConsole"')


def _third_instance(resources: list[CapturedResource], stack: str) -> None:
    node = nodes(resources)[0]
    resources.append(dataclasses.replace(node, name="nodes-3-instance", id="i-3",
                                         inputs=copy.deepcopy(node.inputs)))


def _enable_peer(resources: list[CapturedResource], stack: str) -> None:
    for node in nodes(resources):
        _edit_user_data(node, lambda ud: ud.replace(
            "runcmd:\n", "runcmd:\n- - systemctl\n  - enable\n  - --now\n  - peer.service\n", 1))


def _edit_payloads(resources: list[CapturedResource], edit) -> None:
    """Change the nodes' payload objects (what their first boot and the roll install)."""
    for obj in resources:
        if obj.type == BUCKET_OBJECT and not obj.name.endswith("arbiter"):
            payload = Payload.from_archive(base64.b64decode(obj.inputs["contentBase64"]))
            obj.inputs["contentBase64"] = base64.b64encode(edit(payload).archive()).decode()


def _with_file(payload: Payload, path: str, content: str) -> Payload:
    files = tuple(dataclasses.replace(f, content=content) if f.path == path else f
                  for f in payload.files)
    return dataclasses.replace(payload, files=files)


def _autostart_unit(resources: list[CapturedResource], stack: str) -> None:
    unit = "/etc/systemd/system/peer.service"
    _edit_payloads(resources, lambda p: _with_file(
        p, unit, p.file(unit).content + "[Install]\nWantedBy=multi-user.target\n"))


def _enable_peer_in_payload(resources: list[CapturedResource], stack: str) -> None:
    _edit_payloads(resources, lambda p: dataclasses.replace(
        p, first_boot=(*p.first_boot, ("systemctl", "enable", "--now", "peer.service"))))


def _pem_in_payload(resources: list[CapturedResource], stack: str) -> None:
    script = "/usr/local/sbin/prep-ha-alert"
    _edit_payloads(resources, lambda p: _with_file(p, script, p.file(script).content + PEM))


def _gzip_not_tar_payload(resources: list[CapturedResource], stack: str) -> None:
    """A payload object that is gzip but no archive: nothing could scan it for a key."""
    for obj in resources:
        if obj.type == BUCKET_OBJECT:
            obj.inputs["contentBase64"] = base64.b64encode(gzip.compress(PEM.encode())).decode()


def _password_in_tag(resources: list[CapturedResource], stack: str) -> None:
    secret = one(resources, lambda r: r.name == "secrets-hacluster-password"
                 and r.type.endswith("SecretVersion"))
    instances(resources)[0].inputs["tags"]["Note"] = secret.inputs["secretString"]


SECRET = "aws:secretsmanager/secret:Secret"
SECRET_POLICY = "aws:secretsmanager/secretPolicy:SecretPolicy"


def keystore_secret(resources: list[CapturedResource]) -> CapturedResource:
    return one(resources, lambda r: r.type == SECRET and r.inputs["name"].endswith("/keystore"))


def _keystore_through_pulumi(resources: list[CapturedResource], stack: str) -> None:
    """What the program did before: a SecretVersion with the keystore, i.e. in the state."""
    version = one(resources, lambda r: r.type.endswith("SecretVersion"))
    resources.append(dataclasses.replace(
        version, name="secrets-keystore", id="v-keystore",
        inputs={"secretId": keystore_secret(resources).id, "secretString": FAKE_KEYSTORE}))


def _keystore_policy(edit: Callable[[list], list | None]) -> Mutation:
    def mutate(resources: list[CapturedResource], stack: str) -> None:
        arn = keystore_secret(resources).id
        policy = one(resources, lambda r: r.type == SECRET_POLICY
                     and r.inputs["secretArn"] == arn)
        doc = json.loads(policy.inputs["policy"])
        statements = edit(doc["Statement"])
        if statements is None:
            resources.remove(policy)
        else:
            policy.inputs["policy"] = json.dumps({**doc, "Statement": statements})
    return mutate


def _without(sid: str) -> Callable[[list], list]:
    return lambda statements: [s for s in statements if s["Sid"] != sid]


def _aws_managed_key(resources: list[CapturedResource], stack: str) -> None:
    keystore_secret(resources).inputs.pop("kmsKeyId")


def _pcsd_from_admins(resources: list[CapturedResource], stack: str) -> None:
    """The management group's rule this issue removed: pcsd from the admin networks."""
    rule = ingress(resources, 22)
    resources.append(dataclasses.replace(rule, name="pcsd-admin", inputs={
        **rule.inputs, "fromPort": 2224, "toPort": 2224, "description": "pcsd from admins"}))


MUTATIONS: dict[str, tuple[Mutation, str, str]] = {
    # name: (mutation, policy that must fail, words its message must contain)
    "stonith-disabled": (_replace_stdin("stonith-enabled=true", "stonith-enabled=false"),
                         "stonith-cluster-config", "stonith-enabled=false"),
    "raw-stonith-off-outside-build": (
        _replace_stdin("setup() {\n", "setup() {\n  pcs property set stonith-enabled=false\n"),
        "stonith-cluster-config", "without fencing"),
    "node-2-not-fenced": (_replace_stdin(";prep-ha-STACK-2:${PREP_HA_INSTANCE_ID_2}", ""),
                          "stonith-cluster-config", "prep-ha-STACK-2"),
    "colocation-dropped": (_replace_stdin(
        '  pcs -f "$CIB" constraint colocation add Ctz with Peer score=-INFINITY '
        'id=colocation-Ctz-Peer--INFINITY\n', ""),
        "anti-colocation-constraint", "-INFINITY"),
    "colocation-positive": (_replace_stdin("with Peer score=-INFINITY", "with Peer score=INFINITY"),
                            "anti-colocation-constraint", "colocation"),
    "pcsd-open-to-world": (_open_pcsd, "exposure-cluster-ports", "pcsd (TCP 2224)"),
    "ssh-from-elsewhere": (_open_ssh, "exposure-ssh-admin-only", "192.0.2.0/24"),
    "imds-optional": (_set(_is(INSTANCE), metadataOptions={"httpTokens": "optional"}),
                      "exposure-imdsv2", "httpTokens is optional"),
    "root-unencrypted": (_set(_is(INSTANCE), rootBlockDevice={"encrypted": False}),
                         "exposure-ebs-encrypted", "rootBlockDevice"),
    "data-unencrypted": (_set(_is("aws:ebs/volume:Volume"), encrypted=False),
                         "exposure-ebs-encrypted", "the volume"),
    "pem-in-user-data": (_pem_in_user_data, "secrets-plain-inputs", "PEM private key"),
    "keystore-in-stdin": (_replace_stdin("set -euo pipefail\n",
                                         f"set -euo pipefail\necho '{FAKE_KEYSTORE}' >/k\n"),
                          "secrets-plain-inputs", "JSON keystore"),
    "secret-value-in-tag": (_password_in_tag, "secrets-manager-values", "`tags`"),
    "third-instance": (_third_instance, "anti-colocation-two-nodes-spread", "3 EC2 instances"),
    "peer-enabled-in-user-data": (_enable_peer, "anti-colocation-pacemaker-only",
                                  "systemctl enable --now peer.service"),
    "peer-unit-installable": (_autostart_unit, "anti-colocation-pacemaker-only", "[Install]"),
    "peer-enabled-by-payload": (_enable_peer_in_payload, "anti-colocation-pacemaker-only",
                                "systemctl enable --now peer.service"),
    "pem-in-payload": (_pem_in_payload, "secrets-plain-inputs", "the payload contains"),
    "payload-unreadable": (_gzip_not_tar_payload, "secrets-plain-inputs",
                           "the payload cannot be read (ReadError"),
    "fencing-unscoped": (_unscoped_fencing, "stonith-fence-permissions",
                         "ec2:StopInstances on instances beyond the cluster"),
    "fencing-cannot-start": (_no_start, "stonith-fence-permissions",
                             "does not allow ec2:StartInstances"),
    "stop-protected": (_set(_is(INSTANCE), disableApiStop=True), "stonith-fence-permissions",
                       "disableApiStop"),
    "no-split-rule": (_replace_stdin("  pcs quorum device add", "  : pcs quorum device add"),
                      "quorum-split-rule", "no fence race favouring Peer"),
    "host-map-one-instance": (
        _replace_stdin("prep-ha-STACK-2:${PREP_HA_INSTANCE_ID_2}",
                       "prep-ha-STACK-2:${PREP_HA_INSTANCE_ID_1}"),
        "stonith-host-map-distinct", "to one instance"),
    "token-too-short": (_replace_stdin("token=12000 consensus=2000", "token=500 consensus=100"),
                        "quorum-token-bounds", "corosync token 500 ms"),
    "consensus-as-long-as-token": (
        _replace_stdin("token=12000 consensus=2000", "token=12000 consensus=14400"),
        "quorum-token-bounds", "corosync consensus 14400 ms is outside join"),
    "knet-passive-slow-to-drop-a-link": (
        _replace_stdin("link_mode=active", "link_mode=passive"), "quorum-token-bounds",
        "knet ping_timeout 12000 ms is over half the token (12000 ms) with passive links"),
    "lone-node-quorate-with-arbiter": (_replace_stdin("  set_expected_votes 3", "  : skipped"),
                                       "quorum-split-rule", "expected_votes unset"),
    "keystore-through-pulumi": (_keystore_through_pulumi, "secrets-keystore-out-of-state",
                                "Pulumi would keep the validator key in its state"),
    "keystore-aws-managed-key": (_aws_managed_key, "secrets-keystore-guarded",
                                 "AWS-managed key"),
    "keystore-without-resource-policy": (_keystore_policy(lambda s: None),
                                         "secrets-keystore-guarded", "no resource policy"),
    "keystore-readable-by-anyone-allowed": (
        _keystore_policy(_without("OnlyTheNodeRoleReads")), "secrets-keystore-guarded",
        "every principal but the node role"),
    "keystore-readable-from-anywhere": (
        _keystore_policy(_without("NodeRoleOnlyInsideTheVpc")), "secrets-keystore-guarded",
        "from outside the VPC"),
    "imds-two-hops": (_set(_is(INSTANCE), metadataOptions={"httpTokens": "required",
                                                          "httpPutResponseHopLimit": 2}),
                      "exposure-imds-hop-limit", "httpPutResponseHopLimit is 2"),
    "imds-hop-limit-unset": (_set(_is(INSTANCE), metadataOptions={"httpTokens": "required"}),
                             "exposure-imds-hop-limit", "httpPutResponseHopLimit is unset"),
    "pcsd-from-admins": (_pcsd_from_admins, "exposure-cluster-ports-hosts-only",
                         "pcsd (TCP 2224) is admitted from"),
    "pcs-password-on-argv": (
        _replace_stdin("    pcsd_auth prep-ha-STACK-1",
                       '    pcs host auth prep-ha-STACK-1 addr=10.0.0.1 -u hacluster \\\n'
                       '      -p "$(/usr/local/sbin/prep-ha-secret STACK/hacluster-password)"'
                       "\n    : pcsd_auth prep-ha-STACK-1"),
        "secrets-not-on-argv", "puts the hacluster password"),
}


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_mutating_the_program_fails_the_matching_policy(stack: str, case: str) -> None:
    mutate, policy, words = MUTATIONS[case]
    words = words.replace("STACK", stack)
    resources = program(stack)
    mutate(resources, stack)
    found = judge(stack, resources)
    assert failing(found) >= {policy}
    assert any(words in m for m in messages(found, policy)), messages(found, policy)
    assert all("Fix:" in m for m in messages(found, policy))


def test_termination_protection_is_required_on_mainnet_only() -> None:
    for stack, expected in (("mainnet", {"mainnet-termination-protection"}), ("testnet", set())):
        resources = program(stack)
        _set(_is(INSTANCE), disableApiTermination=False)(resources, stack)
        assert failing(judge(stack, resources)) == expected


def test_secret_value_must_be_secret() -> None:
    resources = program("testnet")
    version = one(resources, lambda r: r.type.endswith("SecretVersion"))
    resources[resources.index(version)] = dataclasses.replace(version, secret_paths=frozenset())
    found = judge("testnet", resources)
    assert failing(found) == {"secrets-manager-values"}
    assert "secretString is not a secret" in messages(found, "secrets-manager-values")[0]


# --- each policy on hand-made resources ---------------------------------------------------

def res(type_: str, name: str = "r", secret_outputs: Iterable[str] = (),
        deps: Mapping[str, list[PolicyResource]] | None = None, **props: Any) -> PolicyResource:
    return PolicyResource(type_, unknown_checking_proxy(props), f"urn:{type_}::{name}", name,
                          _opts(secret_outputs), None, None, [], dict(deps or {}))


def only(policy_name: str) -> list[pulumi_policy.Policy]:
    return [p for p in POLICIES if p.name == policy_name]


@pytest.mark.parametrize(("type_", "props", "open_"), [
    ("aws:ec2/securityGroup:SecurityGroup",
     {"ingress": [{"protocol": "tcp", "fromPort": 2224, "toPort": 2224,
                   "ipv6CidrBlocks": ["::/0"]}]}, True),
    ("aws:ec2/securityGroup:SecurityGroup",
     {"ingress": [{"protocol": "tcp", "fromPort": 2224, "toPort": 2224,
                   "cidrBlocks": ["10.0.0.0/16"]}]}, False),
    ("aws:ec2/securityGroupRule:SecurityGroupRule",
     {"type": "ingress", "protocol": "-1", "fromPort": 0, "toPort": 0,
      "cidrBlocks": ["0.0.0.0/0"]}, True),
    ("aws:ec2/securityGroupRule:SecurityGroupRule",
     {"type": "egress", "protocol": "-1", "fromPort": 0, "toPort": 0,
      "cidrBlocks": ["0.0.0.0/0"]}, False),
    (INGRESS, {"ipProtocol": "udp", "fromPort": 5000.0, "toPort": 6000.0,
               "cidrIpv4": "0.0.0.0/1"}, True),
    (INGRESS, {"ipProtocol": "tcp", "fromPort": 7100, "toPort": 7100,
               "cidrIpv4": "0.0.0.0/0"}, False),
])
def test_cluster_ports_on_all_rule_types(type_: str, props: dict, open_: bool) -> None:
    found = evaluate([res(type_, **props)], policies=only("exposure-cluster-ports"))
    assert bool(found["exposure-cluster-ports"]) is open_


@pytest.mark.parametrize(("rule", "ok"), [
    ({"ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "cidrIpv4": "203.0.113.0/29"}, True),
    ({"ipProtocol": "tcp", "fromPort": 0, "toPort": 65535, "cidrIpv4": "10.1.0.0/16"}, False),
    ({"ipProtocol": "-1", "cidrIpv6": "2001:db8::/32"}, False),
    ({"ipProtocol": "tcp", "fromPort": 23, "toPort": 80, "cidrIpv4": "0.0.0.0/0"}, True),
])
def test_ssh_only_from_configured_admin_cidrs(rule: dict, ok: bool) -> None:
    config = {"exposure-ssh-admin-only": {"adminCidrs": ["203.0.113.0/28"]}}
    found = evaluate([res(INGRESS, **rule)], config=config,
                     policies=only("exposure-ssh-admin-only"))
    assert (found["exposure-ssh-admin-only"] == []) is ok


def test_ssh_without_known_admin_cidrs_is_a_violation() -> None:
    found = evaluate([res(INGRESS, ipProtocol="tcp", fromPort=22, toPort=22,
                          cidrIpv4="203.0.113.0/29")], policies=only("exposure-ssh-admin-only"))
    assert "no adminCidrs are known" in messages(found, "exposure-ssh-admin-only")[0]


def test_launch_templates_are_judged_like_instances() -> None:
    user_data = base64.b64encode(f"#!/bin/sh\necho '{PEM}'\nsystemctl start ctz\n".encode())
    lt = res("aws:ec2/launchTemplate:LaunchTemplate", userData=user_data.decode(),
             metadataOptions={"httpTokens": "optional"},
             blockDeviceMappings=[{"deviceName": "/dev/sda1", "ebs": {"encrypted": "false"}}])
    found = evaluate([lt])
    assert failing(found) >= {"secrets-plain-inputs", "anti-colocation-pacemaker-only",
                              "exposure-imdsv2", "exposure-ebs-encrypted"}


@pytest.mark.parametrize(("text", "kinds"), [
    # The real peer.service: KEY_PASSWORD= followed by a command substitution, not a value.
    ("""ExecStartPre=/bin/sh -c '{ printf "KEY_PASSWORD="; prep-ha-secret "arn"; }'""", []),
    ("KEY_PASSWORD=hunter2", ["a literal KEY_PASSWORD"]),
    ('environment:\n  password: "s3cret-value"\n', ["a literal password"]),
    ("password: ${PASSWORD}\n", []),
    ("ADMIN_PASSWORD=x7", ["a literal password"]),
    ('{\\"crypto\\": {\\"kdf\\": \\"scrypt\\"}}', ["a JSON keystore (crypto/ciphertext/kdf)"]),
    (PEM_HEADER, ["a PEM private key"]),
])
def test_secret_patterns(text: str, kinds: list[str]) -> None:
    assert secret_findings(text) == kinds


def test_command_environment_is_scanned() -> None:
    command = res(COMMAND, create="run", environment={"KEY_PASSWORD": "hunter2"})
    found = evaluate([command], policies=only("secrets-plain-inputs"))
    assert "literal KEY_PASSWORD" in messages(found, "secrets-plain-inputs")[0]


def test_crm_attribute_disabling_stonith_is_caught() -> None:
    command = res(COMMAND, create="crm_attribute --type crm_config --update false "
                                  "--name stonith-enabled")
    found = evaluate([command], policies=only("stonith-cluster-config"))
    assert "without fencing" in messages(found, "stonith-cluster-config")[0]


def test_instances_without_a_cluster_script_fail_stonith() -> None:
    found = evaluate([res(INSTANCE)], policies=only("stonith-cluster-config"))
    assert "No Command carries the cluster script" in messages(found, "stonith-cluster-config")[0]


def test_secret_wrapped_value_counts_as_secret() -> None:
    version = res("aws:secretsmanager/secretVersion:SecretVersion",
                  secretString=Secret("a-long-password"))
    assert evaluate([version], policies=only("secrets-manager-values")) == {
        "secrets-manager-values": []}


FENCE_DOC = json.dumps({"Statement": [
    {"Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*"},
    {"Effect": "Allow", "Action": ["ec2:StopInstances", "ec2:StartInstances"],
     "Resource": ["arn:aws:ec2:eu-central-1:1:instance/i-0123456789abcdef0"]},
]})


def _fencing_stack(**instance_props: Any) -> list[PolicyResource]:
    """A preview: ids are unknown, so only the engine's property dependencies link them."""
    role = res("aws:iam/role:Role", "role", id=UNKNOWN_STRING_VALUE)
    profile = res("aws:iam/instanceProfile:InstanceProfile", "profile",
                  deps={"role": [role]}, role=UNKNOWN_STRING_VALUE)
    policy = res("aws:iam/rolePolicy:RolePolicy", "fencing", deps={"role": [role]},
                 role=UNKNOWN_STRING_VALUE, policy=FENCE_DOC)
    node = res(INSTANCE, "node", deps={"iamInstanceProfile": [profile]},
               iamInstanceProfile=UNKNOWN_STRING_VALUE, **instance_props)
    return [role, profile, policy, node]


def test_fence_permissions_follow_property_dependencies_in_preview() -> None:
    found = evaluate(_fencing_stack(), policies=only("stonith-fence-permissions"))
    assert found["stonith-fence-permissions"] == []


def test_fence_permissions_unknown_without_dependencies_defer_to_update() -> None:
    node = res(INSTANCE, iamInstanceProfile=UNKNOWN_STRING_VALUE)
    with pytest.raises(UnknownValueError):
        evaluate([node], policies=only("stonith-fence-permissions"))


def test_unknown_script_defers_instead_of_reporting_it_missing() -> None:
    command = res(COMMAND, stdin=UNKNOWN_STRING_VALUE)
    with pytest.raises(UnknownValueError):
        evaluate([command, res(INSTANCE)], policies=only("stonith-cluster-config"))


def test_instance_without_role_cannot_be_fenced() -> None:
    found = evaluate([res(INSTANCE)], policies=only("stonith-fence-permissions"))
    assert "no instance profile" in messages(found, "stonith-fence-permissions")[0]


def test_rules_read_floats_as_the_engine_sends_them() -> None:
    (rule,) = ingress_rules(INGRESS, unknown_checking_proxy(
        {"ipProtocol": "6", "fromPort": 20.0, "toPort": 23.0, "cidrIpv4": "10.0.0.0/8"}))
    assert rule.reaches("tcp", 22, 22) and not rule.reaches("udp", 22, 22)


# --- the validator key, IMDS and argv, on hand-made resources ------------------------------

@pytest.mark.parametrize(("text", "found"), [
    ("printf '%s\\n' \"$pw\" | pcs host auth n1 addr=10.0.0.1 -u hacluster", False),
    ("pcs host auth n1 -u hacluster -p \"$(prep-ha-secret id)\"", True),
    ("pcs host auth n1 -u hacluster \\\n  -p \"$(prep-ha-secret id)\"", True),  # continued
    ("pcs cluster auth n1 --password=s3cret", True),
    ("pcs resource create peer-service systemd:peer op monitor -p", False),  # not auth
    ("aws secretsmanager put-secret-value --secret-id k --secret-string \"$v\"", True),
    ("aws secretsmanager put-secret-value --secret-id k --secret-string file:///dev/stdin",
     True),
    ("docker run -e KEY_PASSWORD=x iconloop/icon2-node", True),
    ("docker-compose -p peer -f /etc/prep-ha/peer.yml up", False),
])
def test_secrets_on_a_command_line(text: str, found: bool) -> None:
    assert bool(argv_findings(text)) is found
    command = res(COMMAND, create=text)
    result = evaluate([command], policies=only("secrets-not-on-argv"))
    assert bool(result["secrets-not-on-argv"]) is found


GUARD = [
    {"Effect": "Deny", "Principal": "*", "Action": "secretsmanager:GetSecretValue",
     "Resource": "*", "Condition": {"StringNotEquals": {"aws:PrincipalArn": "arn:role"}}},
    {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": ["secretsmanager:*"],
     "Resource": "*", "Condition": {"StringEquals": {"aws:PrincipalArn": "arn:role"},
                                    "StringNotEquals": {"aws:SourceVpce": "vpce-1"}}},
]


@pytest.mark.parametrize(("statements", "gaps"), [
    (GUARD, 0),
    (GUARD[:1], 1),
    (GUARD[1:], 1),
    ([], 2),
    # An Allow with the same conditions guards nothing.
    ([{**s, "Effect": "Allow"} for s in GUARD], 2),
    # A Deny aimed at one principal only leaves everyone else in.
    ([{**GUARD[0], "Principal": {"AWS": "arn:other"}}, GUARD[1]], 1),
])
def test_keystore_resource_policy_gaps(statements: list, gaps: int) -> None:
    assert len(policy_gaps(json.dumps({"Statement": statements}))) == gaps


def test_a_keystore_in_any_secret_version_is_caught_by_its_value() -> None:
    version = res("aws:secretsmanager/secretVersion:SecretVersion", secretId="arn:other",
                  secretString=Secret(FAKE_KEYSTORE))
    found = evaluate([version], policies=only("secrets-keystore-out-of-state"))
    assert "stores a JSON keystore" in messages(found, "secrets-keystore-out-of-state")[0]
    hacluster = res("aws:secretsmanager/secretVersion:SecretVersion", secretId="arn:other",
                    secretString=Secret("not-a-keystore-password"))
    assert evaluate([hacluster], policies=only("secrets-keystore-out-of-state")) == {
        "secrets-keystore-out-of-state": []}


@pytest.mark.parametrize(("hops", "ok"), [(1, True), (1.0, True), (2, False), (None, False)])
def test_imds_hop_limit_on_launch_templates(hops: Any, ok: bool) -> None:
    options = {"httpTokens": "required", **({} if hops is None else
                                             {"httpPutResponseHopLimit": hops})}
    lt = res("aws:ec2/launchTemplate:LaunchTemplate", metadataOptions=options)
    found = evaluate([lt], policies=only("exposure-imds-hop-limit"))
    assert (found["exposure-imds-hop-limit"] == []) is ok


@pytest.mark.parametrize(("rule", "ok"), [
    ({"ipProtocol": "tcp", "fromPort": 2224, "toPort": 2224, "cidrIpv4": "10.41.2.12/32"}, True),
    ({"ipProtocol": "tcp", "fromPort": 2224, "toPort": 2224, "cidrIpv4": "10.41.2.12/31"}, False),
    ({"ipProtocol": "tcp", "fromPort": 5403, "toPort": 5403, "cidrIpv4": "10.41.1.0/24"}, False),
    ({"ipProtocol": "udp", "fromPort": 5404, "toPort": 5406, "cidrIpv6": "2001:db8::1/128"},
     True),
    ({"ipProtocol": "-1", "cidrIpv4": "203.0.113.0/28"}, False),  # every port, pcsd included
    ({"ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "cidrIpv4": "203.0.113.0/28"}, True),
])
def test_cluster_ports_only_from_single_hosts(rule: dict, ok: bool) -> None:
    found = evaluate([res(INGRESS, **rule)], policies=only("exposure-cluster-ports-hosts-only"))
    assert (found["exposure-cluster-ports-hosts-only"] == []) is ok


# --- enforcement and the pack itself -----------------------------------------------------

def _levels(stack: str) -> dict[str, str]:
    doc = json.loads((POLICY_DIR / "config" / f"{stack}.json").read_text())
    default = doc.pop("all")
    levels = {p.name: default for p in POLICIES}
    for name, value in doc.items():
        assert name in levels, f"{stack}.json configures unknown policy {name}"
        levels[name] = value if isinstance(value, str) else value["enforcementLevel"]
    return levels


def test_mainnet_enforces_every_policy_but_the_zone_advice() -> None:
    relaxed = {n: lvl for n, lvl in _levels("mainnet").items() if lvl != "mandatory"}
    assert relaxed == {"topology-mainnet-multi-az": "advisory"}


def test_testnet_relaxes_only_the_mainnet_guards() -> None:
    relaxed = {n: lvl for n, lvl in _levels("testnet").items() if lvl != "mandatory"}
    assert relaxed == {"mainnet-termination-protection": "advisory",
                       "topology-mainnet-multi-az": "advisory"}


def test_pack_entry_point_registers_every_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[dict[str, Any]] = []
    monkeypatch.setattr(pulumi_policy, "PolicyPack", lambda **kw: created.append(kw))
    monkeypatch.setattr(sys, "path", list(sys.path))  # __main__.py extends it
    runpy.run_path(str(POLICY_DIR / "__main__.py"))
    (pack,) = created
    assert pack["enforcement_level"] is EnforcementLevel.MANDATORY
    assert [p.name for p in pack["policies"]] == [p.name for p in POLICIES]
    assert len({p.name for p in POLICIES}) == len(POLICIES)


def test_mainnet_token_floor_is_higher_than_testnets() -> None:
    for stack, expected in (("mainnet", {"quorum-token-bounds"}), ("testnet", set())):
        resources = program(stack)
        _replace_stdin("token=12000 consensus=2000", "token=8000 consensus=1333")(resources,
                                                                                  stack)
        assert failing(judge(stack, resources)) == expected


def test_the_shortest_testnet_token_passes_its_own_bounds() -> None:
    resources = run_program("testnet", {"corosyncTokenMs": 3001})
    assert "token=3001 consensus=1000" in cib_push(resources).inputs["stdin"]
    assert failing(judge("testnet", resources)) == set()


def test_a_fence_race_favouring_peer_is_a_split_rule_too() -> None:
    resources = program("testnet")
    push = cib_push(resources)
    script = push.inputs["stdin"].replace("  pcs quorum device add", "  : pcs quorum device add")
    script = script.replace("stonith-action=off ", "stonith-action=off priority-fencing-delay=15s ")
    push.inputs["stdin"] = script
    found = judge("testnet", resources)
    assert "quorum-split-rule" not in failing(found)


# --- multi-AZ topology (mainnet: three zones and an overlay IP; testnet: one zone) ----------

SUBNET = "aws:ec2/subnet:Subnet"
ENI = "aws:ec2/networkInterface:NetworkInterface"
ROUTE = "aws:ec2/route:Route"
ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"
OVERLAY_IP = "10.255.40.100"


def by_id(resources: list[CapturedResource], id_: str) -> CapturedResource:
    return one(resources, lambda r: r.id == id_)


def service_eni(resources: list[CapturedResource], node: int) -> CapturedResource:
    instance = nodes_by_number(resources)[node]
    return by_id(resources, instance.inputs["primaryNetworkInterface"]["networkInterfaceId"])


def nodes_by_number(resources: list[CapturedResource]) -> dict[int, CapturedResource]:
    return {int(n.inputs["tags"]["prep-ha:node"].rsplit("-", 1)[1]): n for n in nodes(resources)}


def node_zone(resources: list[CapturedResource], node: int) -> str:
    return by_id(resources, service_eni(resources, node).inputs["subnetId"]).inputs[
        "availabilityZone"]


def _arbiter_in_node_1_zone(resources: list[CapturedResource], stack: str) -> None:
    arbiter = one(resources, lambda r: r.type == INSTANCE
                  and r.inputs["tags"].get("prep-ha:role") == "arbiter")
    by_id(resources, arbiter.inputs["subnetId"]).inputs["availabilityZone"] = \
        node_zone(resources, 1)


def _node_2_in_node_1_zone(resources: list[CapturedResource], stack: str) -> None:
    zone, name = node_zone(resources, 1), nodes_by_number(resources)[2].inputs["tags"][
        "prep-ha:node"]
    for eni in (r for r in resources if r.type == ENI and r.inputs["tags"].get(
            "prep-ha:node") == name):
        by_id(resources, eni.inputs["subnetId"]).inputs["availabilityZone"] = zone


def _overlay_route_dropped_from_a_public_table(resources: list[CapturedResource],
                                               stack: str) -> None:
    lb = one(resources, lambda r: r.type == "aws:lb/loadBalancer:LoadBalancer")
    public = lb.inputs["subnetMappings"][-1]["subnetId"]
    table = one(resources, lambda r: r.type.endswith("/routeTableAssociation:RouteTableAssociation")
                and r.inputs["subnetId"] == public).inputs["routeTableId"]
    resources.remove(one(resources, lambda r: r.type == ROUTE and r.inputs["routeTableId"]
                         == table and r.inputs["destinationCidrBlock"] == f"{OVERLAY_IP}/32"))


def _overlay_ip_inside_vpc(resources: list[CapturedResource], stack: str) -> None:
    inside = "10.40.1.100"
    for command in (r for r in resources if r.type == COMMAND and "stdin" in r.inputs):
        command.inputs["stdin"] = command.inputs["stdin"].replace(f"ip={OVERLAY_IP} ",
                                                                  f"ip={inside} ")
    assert f"ip={inside} " in cib_push(resources).inputs["stdin"]
    for route in (r for r in resources if r.type == ROUTE):
        if route.inputs["destinationCidrBlock"] == f"{OVERLAY_IP}/32":
            route.inputs["destinationCidrBlock"] = f"{inside}/32"


def _source_dest_check_on(resources: list[CapturedResource], stack: str) -> None:
    service_eni(resources, 2).inputs["sourceDestCheck"] = True


def _ec2_endpoint(resources: list[CapturedResource]) -> CapturedResource:
    return one(resources, lambda r: r.type == ENDPOINT
               and r.inputs["serviceName"].endswith(".ec2"))


def _ec2_endpoint_in_node_1_zone_only(resources: list[CapturedResource], stack: str) -> None:
    _ec2_endpoint(resources).inputs["subnetIds"] = [service_eni(resources, 1).inputs["subnetId"]]


def _ec2_endpoint_removed(resources: list[CapturedResource], stack: str) -> None:
    resources.remove(_ec2_endpoint(resources))


def _route_grant(edit: Callable[[dict], None]) -> Mutation:
    def mutate(resources: list[CapturedResource], stack: str) -> None:
        rp = one(resources, lambda r: "fencing" in r.name and r.type.endswith("RolePolicy"))
        doc = json.loads(rp.inputs["policy"])
        (stmt,) = [s for s in doc["Statement"] if "ec2:ReplaceRoute" in s["Action"]]
        edit(stmt)
        rp.inputs["policy"] = json.dumps(doc)
    return mutate


def _add_route_grant(resources: list[CapturedResource], stack: str) -> None:
    """Testnet's role moves no route; a grant added anyway is judged too."""
    rp = one(resources, lambda r: "fencing" in r.name and r.type.endswith("RolePolicy"))
    doc = json.loads(rp.inputs["policy"])
    doc["Statement"].append({"Effect": "Allow", "Action": "ec2:*Route", "Resource": "*"})
    rp.inputs["policy"] = json.dumps(doc)


TOPOLOGY_MUTATIONS: dict[str, tuple[Mutation, str, str, tuple[str, ...]]] = {
    # name: (mutation, the one policy that must fail, words of its message, stacks)
    # Single-AZ only: two nodes in two AZs share no hardware, whatever the placement group.
    "placement-cluster": (_set(_is("aws:ec2/placementGroup:PlacementGroup"), strategy="cluster"),
                          "anti-colocation-two-nodes-spread", "spread", ("testnet",)),
    "arbiter-in-node-1-zone": (_arbiter_in_node_1_zone, "topology-multi-az-placement",
                               "The quorum arbiter is in ap-northeast-2a", ("mainnet",)),
    "node-2-in-node-1-zone": (_node_2_in_node_1_zone, "topology-multi-az-placement",
                              "are both in ap-northeast-2a", ("mainnet",)),
    "overlay-route-missing-in-a-public-table": (
        _overlay_route_dropped_from_a_public_table, "topology-overlay-routing",
        f"(a subnet of the load balancer) has no route to {OVERLAY_IP}/32", ("mainnet",)),
    "overlay-ip-inside-the-vpc": (_overlay_ip_inside_vpc, "topology-overlay-routing",
                                  "The overlay IP 10.40.1.100 is inside the VPC's 10.40.0.0/16",
                                  ("mainnet",)),
    "overlay-eni-source-dest-check": (_source_dest_check_on, "topology-overlay-routing",
                                      "checks source/destination", ("mainnet",)),
    "ec2-endpoint-in-one-zone": (_ec2_endpoint_in_node_1_zone_only,
                                 "topology-api-endpoints-per-zone",
                                 "No ec2 Interface endpoint has a subnet in ap-northeast-2c",
                                 ("mainnet",)),
    "ec2-endpoint-removed": (_ec2_endpoint_removed, "topology-api-endpoints-per-zone",
                             "No Interface endpoint for ec2", ("mainnet",)),
    "route-grant-on-any-resource": (
        _route_grant(lambda s: s.update(Resource="*")), "topology-route-iam-scope",
        "allows ec2:ReplaceRoute on *", ("mainnet",)),
    "route-grant-unconditioned": (_route_grant(lambda s: s.pop("Condition")),
                                  "topology-route-iam-scope", "allows ec2:ReplaceRoute on arn:",
                                  ("mainnet",)),
    "route-grant-added-single-az": (
        _add_route_grant, "topology-route-iam-scope",
        "allows ec2:ReplaceRoute, ec2:CreateRoute, ec2:DeleteRoute on *", ("testnet",)),
}


@pytest.mark.parametrize(("case", "stack"), [(c, s) for c in sorted(TOPOLOGY_MUTATIONS)
                                             for s in TOPOLOGY_MUTATIONS[c][3]])
def test_mutating_the_topology_fails_exactly_the_matching_policy(case: str, stack: str) -> None:
    mutate, policy, words, _ = TOPOLOGY_MUTATIONS[case]
    resources = program(stack)
    mutate(resources, stack)
    found = judge(stack, resources)
    assert failing(found) == {policy}, found
    assert any(words in m for m in messages(found, policy)), messages(found, policy)
    assert all("Fix:" in m for m in messages(found, policy))



def test_nodes_in_two_zones_need_no_spread_group() -> None:
    """The spread group keeps single-AZ nodes off one rack; two AZs share no rack anyway."""
    resources = program("mainnet")
    _set(_is("aws:ec2/placementGroup:PlacementGroup"), strategy="cluster")(resources, "mainnet")
    assert "anti-colocation-two-nodes-spread" not in failing(judge("mainnet", resources))

def test_the_topology_policies_have_something_to_judge() -> None:
    mainnet = [policy_resource(r, "mainnet") for r in program("mainnet")]
    assert overlay_ips(mainnet).keys() == {OVERLAY_IP}
    assert is_multi_az(mainnet)
    assert len({z for _, z in node_zones(mainnet)} - {None}) == 2
    testnet = [policy_resource(r, "testnet") for r in program("testnet")]
    assert not is_multi_az(testnet) and not overlay_ips(testnet)
    assert {z for _, z in node_zones(testnet)} == {"eu-central-1a"}


def test_a_single_az_mainnet_stack_is_advised_not_blocked() -> None:
    resources = program("testnet")
    config = {"topology-mainnet-multi-az": {"iconNetwork": "MainNet"}}
    found = evaluate([policy_resource(r, "testnet") for r in resources], stack="testnet",
                     config=config)
    assert failing(found) == {"topology-mainnet-multi-az"}
    (message,) = messages(found, "topology-mainnet-multi-az")
    assert "Both MainNet nodes are in eu-central-1a" in message and "Fix:" in message
    assert _levels("mainnet")["topology-mainnet-multi-az"] == "advisory"


def test_zones_follow_property_dependencies_in_preview() -> None:
    """A preview: no id is known, only the engine's dependencies link instance, ENI, subnet."""
    def node(n: int, zone: str) -> list[PolicyResource]:
        subnet = res(SUBNET, f"subnet-{n}", id=UNKNOWN_STRING_VALUE, availabilityZone=zone)
        eni = res(ENI, f"eni-{n}", deps={"subnetId": [subnet]}, id=UNKNOWN_STRING_VALUE,
                  subnetId=UNKNOWN_STRING_VALUE, sourceDestCheck=False)
        instance = res(INSTANCE, f"node-{n}", deps={"primaryNetworkInterface": [eni]},
                       primaryNetworkInterface={"networkInterfaceId": UNKNOWN_STRING_VALUE},
                       tags={"prep-ha:node": f"n-{n}"})
        return [subnet, eni, instance]
    arbiter_subnet = res(SUBNET, "arbiter-subnet", id=UNKNOWN_STRING_VALUE,
                         availabilityZone="eu-central-1b")
    arbiter = res(INSTANCE, "arbiter", deps={"subnetId": [arbiter_subnet]},
                  subnetId=UNKNOWN_STRING_VALUE, tags={"prep-ha:role": "arbiter"})
    stack = [*node(1, "eu-central-1a"), *node(2, "eu-central-1a"), arbiter_subnet, arbiter]
    found = evaluate(stack, policies=only("topology-multi-az-placement"))
    assert "Nodes n-1 and n-2 are both in eu-central-1a" in messages(
        found, "topology-multi-az-placement")[0]


@pytest.mark.parametrize(("stmt", "scoped"), [
    ({"Resource": "arn:aws:ec2:eu-central-1:*:route-table/*",
      "Condition": {"StringEquals": {"aws:ResourceTag/prep-ha:cluster": "c"}}}, True),
    ({"Resource": "arn:aws:ec2:eu-central-1:*:route-table/*",
      "Condition": {"StringNotEquals": {"aws:ResourceTag/prep-ha:cluster": "c"}}}, False),
    ({"Resource": "arn:aws:ec2:eu-central-1:*:route-table/*",
      "Condition": {"StringEquals": {"aws:ResourceTag/Name": "c"}}}, False),
    ({"Resource": "arn:aws:ec2:eu-central-1:*:*",
      "Condition": {"StringEquals": {"ec2:ResourceTag/prep-ha:cluster": "c"}}}, False),
    ({"NotResource": "arn:aws:ec2:eu-central-1:*:instance/*",
      "Condition": {"StringLike": {"aws:ResourceTag/prep-ha:cluster": "c"}}}, False),
])
def test_route_grants_need_route_tables_and_the_cluster_tag(stmt: dict, scoped: bool) -> None:
    doc = json.dumps({"Statement": [*json.loads(FENCE_DOC)["Statement"],
                                    {"Effect": "Allow", "Action": "ec2:ReplaceRoute", **stmt}]})
    resources = _fencing_stack()
    resources[2] = res("aws:iam/rolePolicy:RolePolicy", "fencing",
                       deps={"role": [resources[0]]}, role=UNKNOWN_STRING_VALUE, policy=doc)
    found = evaluate(resources, policies=only("topology-route-iam-scope"))
    assert (found["topology-route-iam-scope"] == []) is scoped
