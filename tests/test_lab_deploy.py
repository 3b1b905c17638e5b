"""The lab's `pulumi up` (lab/deploy.py): the real program, its resources created in moto.

moto runs in this process on loopback; everything is checked through boto3, as a node or the
operator would see it, against what the program declared.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import subprocess
import sys
from collections import defaultdict

import boto3
import pytest
import yaml

from lab.cloud import replace_ec2_instance
from lab.deploy import Command, Deployment
from lab.motocloud import MotoCloud, seed_debian_amis
from lab.program import PROJECT_DIR
from lab.replacement import commands_after
from prep_ha.cluster.model import build_model
from prep_ha.cluster.pcs import parse_script
from prep_ha.config import load_stack_file
from prep_ha.payload import Payload, object_key
from tests.lab_fixtures import (
    LAB_KEYSTORE_PASSWORD,
    REGION,
    deploy_testnet,
    key_files,
    moto_server,
    reset_moto,
    ssh_keypair,
)
from tests.pulumi_mocks import FAKE_KEYSTORE

CFG = load_stack_file(str(PROJECT_DIR / "Pulumi.testnet.yaml"), stack="testnet")
INSTANCE = "aws:ec2/instance:Instance"
TEST_NET_3 = ipaddress.ip_network("203.0.113.0/24")


@pytest.fixture(scope="module")
def endpoint():
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory):
    return ssh_keypair(tmp_path_factory.mktemp("ssh"))


@pytest.fixture(scope="module")
def deployment(endpoint, ssh_key) -> Deployment:
    return deploy_testnet(endpoint, ssh_key)


def client(endpoint: str, service: str):
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint,
                        aws_access_key_id="test", aws_secret_access_key="test")


def test_instances_run_in_moto_with_the_programs_user_data(endpoint, deployment):
    ec2 = client(endpoint, "ec2")
    run = deployment.run
    assert [n.node for n in deployment.instances] == [*CFG.node_names, CFG.arbiter_name]
    declared_nodes = sorted((r for r in run.of_type(INSTANCE) if r.name.startswith("nodes-")),
                            key=lambda r: r.name)
    for node, declared in zip(deployment.nodes, declared_nodes, strict=True):
        [inst] = ec2.describe_instances(InstanceIds=[node.instance_id])["Reservations"][0][
            "Instances"]
        assert inst["State"]["Name"] == "running"
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert tags["prep-ha:node"] == node.node and tags["prep-ha:cluster"] == CFG.cluster_name
        assert inst["MetadataOptions"]["HttpTokens"] == "required"
        assert inst["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
        assert inst["Placement"]["AvailabilityZone"] == CFG.availability_zone
        assert inst["KeyName"] == f"{CFG.cluster_name}-admin"
        assert inst["IamInstanceProfile"]["Arn"] == node.instance_profile_arn
        # Byte for byte what the program rendered, with moto's ids in it.
        if "userDataBase64" in declared.inputs:
            assert node.user_data_base64 == declared.inputs["userDataBase64"]
        else:
            assert node.user_data == declared.inputs["userData"]
        assert node.user_data.startswith("#cloud-config\n")
        assert yaml.safe_load(node.user_data)["runcmd"][-1] == [
            "/usr/local/sbin/prep-ha-boot", deployment.payload_bucket, REGION]
        # Its payload, in moto's S3 as the tag names it, the digest of its bytes.
        text = payload_text(endpoint, deployment, node)
        [volume] = node.data_volumes
        assert volume.device == "/dev/sdf"
        assert volume.volume_id in text
        for name in (CFG.keystore_secret_name, CFG.keystore_password_secret_name,
                     CFG.hacluster_secret_name):
            assert deployment.secrets[name] in text
        # Its host key by name (fetched by user-data, before the payload), the other node's
        # not at all.
        assert [n for n in deployment.secrets if n.endswith("/ssh-host-key")
                and n in text + node.user_data] == [f"{node.node}/ssh-host-key"]
        for value in (LAB_KEYSTORE_PASSWORD, *deployment.generated_passwords.values()):
            assert value not in text and value not in node.user_data
        assert run.outputs["instanceIds"][node.node] == node.instance_id


def payload_text(endpoint: str, deployment: Deployment, node) -> str:
    """The payload an instance's tag names, as stored in moto's S3: its files and first-boot
    steps."""
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                      aws_access_key_id="test", aws_secret_access_key="test",
                      config=Config(s3={"addressing_style": "path"}))
    data = s3.get_object(Bucket=deployment.payload_bucket,
                         Key=object_key(node.payload_digest))["Body"].read()
    assert hashlib.sha256(data).hexdigest() == node.payload_digest
    payload = Payload.from_archive(data)
    return "\n".join([*(f.content for f in payload.files),
                      *(" ".join(argv) for argv in payload.first_boot)])


def test_the_lookup_finds_the_seeded_debian_ami(endpoint, deployment):
    ec2 = client(endpoint, "ec2")
    image_ids = {n.image_id for n in deployment.nodes}
    [image] = ec2.describe_images(ImageIds=list(image_ids))["Images"]
    assert image["OwnerId"] == "136693071363"
    assert image["Name"].startswith("debian-13-amd64-")


def test_enis_devices_addresses_and_groups(endpoint, deployment):
    ec2 = client(endpoint, "ec2")
    subnets = {"service": CFG.service_subnet_cidr, "heartbeat": CFG.heartbeat_subnet_cidr,
               "management": CFG.management_subnet_cidr}
    for index, (node, addresses) in enumerate(zip(deployment.nodes, CFG.nodes,
                                                  strict=True)):
        vip = (CFG.peer_vip, CFG.citizen_vip)[index]
        assert [e.device_index for e in node.enis] == [0, 1, 2]
        assert node.eni(0).private_ips == [addresses.service_ip, vip]
        assert node.eni(1).private_ips == [addresses.heartbeat_ip]
        assert node.eni(2).private_ips == [addresses.management_ip]
        for eni, role in zip(node.enis, ("service", "heartbeat", "management"), strict=True):
            assert eni.subnet_cidr == subnets[role]
            assert eni.description.startswith(f"{node.node} {role}:")
            [moto_eni] = ec2.describe_network_interfaces(
                NetworkInterfaceIds=[eni.eni_id])["NetworkInterfaces"]
            assert moto_eni["MacAddress"] == eni.mac
            assert moto_eni["Attachment"]["InstanceId"] == node.instance_id
            groups = ec2.describe_security_groups(GroupIds=eni.security_group_ids)
            assert [g["GroupName"] for g in groups["SecurityGroups"]][0].startswith(
                f"network-{role}-sg-")


def test_security_group_rules_are_exactly_the_declared_ones(endpoint, deployment):
    ec2 = client(endpoint, "ec2")
    run = deployment.run
    declared = [*run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"),
                *run.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")]
    group_ids = sorted({r.inputs["securityGroupId"] for r in declared})
    rules = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": group_ids}])["SecurityGroupRules"]
    # No default allow-all egress left behind: the AWS provider revokes it.
    assert sorted(r["SecurityGroupRuleId"] for r in rules) == sorted(r.id for r in declared)


def test_secrets_readable_by_arn(endpoint, deployment, ssh_key):
    sm = client(endpoint, "secretsmanager")
    host_keys = {f"{n}/ssh-host-key" for n in CFG.node_names}
    assert set(deployment.secrets) == {CFG.keystore_secret_name,
                                       CFG.keystore_password_secret_name,
                                       CFG.hacluster_secret_name, *host_keys}
    values = {name: sm.get_secret_value(SecretId=arn)["SecretString"]
              for name, arn in deployment.secrets.items()}
    # The key reached Secrets Manager through the keystore-put Command (put-keystore), not
    # through the program: no SecretVersion of the program carries it.
    assert values[CFG.keystore_secret_name] == FAKE_KEYSTORE
    assert values[CFG.keystore_password_secret_name] == LAB_KEYSTORE_PASSWORD
    assert deployment.secret_values == {k: v for k, v in values.items()
                                        if k not in (CFG.keystore_secret_name,
                                                     CFG.keystore_password_secret_name)}
    [password] = deployment.generated_passwords.values()
    assert values[CFG.hacluster_secret_name] == password
    assert len(password) == 32 and password.isalnum()
    # Each node its own host key, none of them the admin key.
    keys = {values[k] for k in host_keys}
    assert len(keys) == 2 and all("OPENSSH PRIVATE KEY" in k for k in keys)
    assert ssh_key[0] not in keys
    for secret in (CFG.keystore_secret_name, CFG.keystore_password_secret_name):
        described = sm.describe_secret(SecretId=secret)
        assert described["KmsKeyId"] == deployment.run.outputs.get(
            "kmsKeyArn", described["KmsKeyId"]) and described["KmsKeyId"].startswith("arn:")
        policy = json.loads(sm.get_resource_policy(SecretId=secret)["ResourcePolicy"])
        assert {s["Sid"] for s in policy["Statement"]} == {"OnlyTheNodeRoleReads",
                                                           "NodeRoleOnlyInsideTheVpc"}


def test_elastic_ips_are_test_net_3_and_reach_the_management_enis(endpoint, deployment):
    ec2 = client(endpoint, "ec2")
    addresses = ec2.describe_addresses()["Addresses"]
    assert len(addresses) == 4  # NAT, NLB, two management addresses
    assert all(ipaddress.ip_address(a["PublicIp"]) in TEST_NET_3 for a in addresses)
    for node, fixed in zip(deployment.nodes, CFG.nodes, strict=True):
        eip = node.management_eip
        assert eip is not None and ipaddress.ip_address(eip.public_ip) in TEST_NET_3
        assert eip.private_ip == fixed.management_ip and eip.eni_id == node.eni(2).eni_id
        assert deployment.outputs["managementIps"][node.node] == eip.public_ip
    assert deployment.load_balancer["public_ip"] == deployment.outputs["nlbPublicIp"]


def test_iam_role_profile_key_pair_and_load_balancer(endpoint, deployment, ssh_key):
    iam, ec2, elb = (client(endpoint, s) for s in ("iam", "ec2", "elbv2"))
    arn = deployment.nodes[0].instance_profile_arn
    profile = iam.get_instance_profile(InstanceProfileName=arn.rsplit("/", 1)[1])
    [role] = profile["InstanceProfile"]["Roles"]
    assert sorted(iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]) == \
        sorted(r.outputs["name"] for r in deployment.run.of_type(
            "aws:iam/rolePolicy:RolePolicy") if not r.name.startswith("arbiter"))
    [pair] = ec2.describe_key_pairs(KeyNames=[f"{CFG.cluster_name}-admin"])["KeyPairs"]
    assert pair["KeyType"] == "ed25519"
    [lb] = elb.describe_load_balancers(LoadBalancerArns=[deployment.load_balancer["arn"]])[
        "LoadBalancers"]
    assert lb["Type"] == "network" and lb["Scheme"] == "internet-facing"
    listeners = elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    assert sorted(ls["Port"] for ls in listeners) == [7100, 9000]
    for listener in listeners:
        group = listener["DefaultActions"][0]["TargetGroupArn"]
        targets = elb.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"]
        assert [t["Target"]["Id"] for t in targets] == [CFG.peer_vip]
    key = deployment.run.by_name("tls:index/privateKey:PrivateKey", "admin-ssh-key")
    assert key.outputs["privateKeyOpenssh"] == ssh_key[0]
    assert key.outputs["publicKeyFingerprintSha256"].startswith("SHA256:")


def test_commands_in_order_with_the_programs_script(deployment):
    """Per-node waits first, then setup, the memberships, then the CIB push (and whatever
    follows the push)."""
    commands = {c.name: c for c in deployment.commands}
    names = list(commands)
    waits = names[:2]
    assert all(not commands[w].depends_on for w in waits)
    assert {commands[w].host for w in waits} == {
        n.management_eip.public_ip for n in deployment.nodes}
    memberships = [f"pacemaker-{n}-membership" for n in CFG.node_names]
    # The memberships register once their node's wait resolves: in either order.
    assert names[2] == "pacemaker-corosync-setup" and names[5] == "pacemaker-cib-push"
    assert sorted(names[3:5]) == sorted(memberships)
    setup, push = commands["pacemaker-corosync-setup"], commands["pacemaker-cib-push"]
    assert set(setup.depends_on) == set(waits) and push.depends_on == memberships
    for node in CFG.node_names:
        assert commands[f"pacemaker-{node}-membership"].depends_on == [
            setup.name, f"pacemaker-{node}-ready"]
    for later in names[6:]:
        assert commands[later].depends_on and all(
            names.index(d) >= names.index(push.name) for d in commands[later].depends_on)
    assert setup.stdin == push.stdin and parse_script(push.stdin) == build_model(CFG)
    ids = [n.instance_id for n in deployment.nodes]
    assert push.create == (f"sudo env PREP_HA_INSTANCE_ID_1={ids[0]} "
                           f"PREP_HA_INSTANCE_ID_2={ids[1]} bash -s push")
    assert setup.host == push.host == deployment.nodes[0].management_eip.public_ip
    remote = [c for c in deployment.commands if not c.local]
    assert all(c.user == "admin" and c.private_key and "PRIVATE KEY" in c.private_key
               for c in remote)
    # The image roll: a local Command after the health check, run by the lab on the client;
    # its secret stdin (the admin key) is not kept in the deployment.
    [roll] = [c for c in deployment.commands if c.local]
    assert names[-1] == roll.name == "pacemaker-node-roll"
    assert roll.depends_on == ["pacemaker-health"]
    assert roll.stdin is None and roll.stdin_is_admin_key


def test_registration_respects_depends_on_and_references(deployment):
    """The SDK registers a resource only after its dependencies: the lab creates in order."""
    resources = deployment.run.resources
    position = {r.key: n for n, r in enumerate(resources)}
    children = defaultdict(list)
    for r in resources:
        children[r.parent].append(r)

    def custom_members(key: str) -> list[str]:
        # A component stands for its children (not for children of custom resources).
        r = resources[position[key]]
        return [key] if r.custom else [m for c in children[key] for m in custom_members(c.key)]

    id_count = defaultdict(int)
    for r in resources:
        id_count[r.id] += 1
    by_id = {r.id: r for r in resources if id_count[r.id] == 1 and len(r.id) > 8}

    def referenced(value) -> list[str]:
        if isinstance(value, dict):
            return [i for v in value.values() for i in referenced(v)]
        if isinstance(value, list):
            return [i for v in value for i in referenced(v)]
        return [value] if isinstance(value, str) and value in by_id else []

    checked = 0
    for n, r in enumerate(resources):
        for dep in r.depends_on:
            for member in custom_members(dep):
                assert position[member] < n, (r.key, member)
                checked += 1
        for rid in referenced(r.inputs):
            if by_id[rid] is not r:  # a key pair's id is its own key_name input
                assert position[by_id[rid].key] < n, (r.key, rid)
    assert checked > 50
    instance = position[f"{INSTANCE}::nodes-1-instance"]
    for secret_version in deployment.run.of_type(
            "aws:secretsmanager/secretVersion:SecretVersion"):
        assert position[secret_version.key] < instance
    put = deployment.run.by_name("command:local:Command", "secrets-keystore-put")
    assert position[put.key] < instance


def test_json_round_trip_without_secret_values(deployment, ssh_key):
    text = deployment.to_json()
    assert Deployment.from_json(text) == deployment
    for value in (LAB_KEYSTORE_PASSWORD, *deployment.generated_passwords.values(),
                  ssh_key[0].splitlines()[1], "PRIVATE KEY", '"crypto"'):
        assert value not in text
    assert "sshPrivateKey" not in json.loads(text)["outputs"]
    assert Deployment.from_json(text).commands[0].private_key is None


# After the tests of the deployment: it replaces one of its instances.
def test_replacing_an_instance_keeps_its_enis_volume_and_inputs(endpoint, deployment):
    """lab/cloud.py `replace`, as `pulumi up --replace` of node 1's instance does it; and the
    Commands the next `up` runs again (lab/replacement.py)."""
    ec2 = client(endpoint, "ec2")
    node = deployment.nodes[0]

    def described(instance_id: str) -> dict:
        [inst] = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0][
            "Instances"]
        return inst

    before = described(node.instance_id)
    new_id = replace_ec2_instance(ec2, node.instance_id)
    after = described(new_id)
    assert new_id != node.instance_id
    assert described(node.instance_id)["State"]["Name"] == "terminated"
    assert after["State"]["Name"] == "running"
    assert {n["Attachment"]["DeviceIndex"]: n["NetworkInterfaceId"]
            for n in after["NetworkInterfaces"]} == {e.device_index: e.eni_id for e in node.enis}
    assert [m["Ebs"]["VolumeId"] for m in after["BlockDeviceMappings"]
            if m["DeviceName"] == "/dev/sdf"] == [v.volume_id for v in node.data_volumes]
    attr = ec2.describe_instance_attribute(InstanceId=new_id, Attribute="userData")
    assert attr["UserData"]["Value"] == node.user_data_base64
    for key in ("ImageId", "InstanceType", "KeyName", "Tags", "MetadataOptions"):
        assert after[key] == before[key], key
    assert after["IamInstanceProfile"]["Arn"] == before["IamInstanceProfile"]["Arn"]
    # The next `up`: the replaced node's wait and membership, the health check and the image
    # roll are replaced (create); the push has the new id on its command line (update).
    commands = json.loads(deployment.to_json().replace(node.instance_id, new_id))["commands"]
    again = commands_after([Command(**c) for c in commands], new_id)
    assert [(c.name, update) for c, update in again] == [
        (f"pacemaker-{node.node}-ready", False), (f"pacemaker-{node.node}-membership", False),
        ("pacemaker-cib-push", True), ("pacemaker-health", False),
        ("pacemaker-node-roll", False)]


def test_ami_lookup_registers_one_when_moto_has_none(endpoint, ssh_key, deployment):
    # Runs after the tests above: it resets moto.
    reset_moto(endpoint)
    cloud = MotoCloud(endpoint=endpoint, ca_bundle=None, region=REGION, ssh_key=ssh_key)
    args = {"mostRecent": True, "owners": ["136693071363"], "filters": [
        {"name": "name", "values": ["debian-13-amd64-*"]},
        {"name": "architecture", "values": ["x86_64"]}]}
    first = cloud.call("aws:ec2/getAmi:getAmi", args)
    assert first["name"].startswith("debian-13-amd64-")
    assert cloud.call("aws:ec2/getAmi:getAmi", args)["id"] == first["id"]
    seeded = seed_debian_amis(REGION)
    assert cloud.call("aws:ec2/getAmi:getAmi", args)["id"] == seeded["x86_64"]


def test_command_line_writes_the_description(endpoint, tmp_path, ssh_key):
    reset_moto(endpoint)
    key = tmp_path / "admin"
    key.write_text(ssh_key[0])
    key.chmod(0o600)
    (tmp_path / "admin.pub").write_text(ssh_key[1] + "\n")
    keystore, password = key_files(tmp_path)
    out, values = tmp_path / "deployment.json", tmp_path / "secrets.json"
    subprocess.run([sys.executable, "-m", "lab.deploy", "testnet", "--endpoint", endpoint,
                    "--region", REGION, "--ssh-key", str(key), "--keystore",
                    str(keystore), "--keystore-password-file", str(password),
                    "--override", 'iconImageTag="v1.4.7"',
                    "--out", str(out), "--secret-values", str(values)],
                   cwd=PROJECT_DIR, check=True, timeout=120)
    deployment = Deployment.from_json(out.read_text())
    assert "icon2-node:v1.4.7" in payload_text(endpoint, deployment, deployment.nodes[0])
    assert LAB_KEYSTORE_PASSWORD not in out.read_text()
    assert values.stat().st_mode & 0o777 == 0o600
    stored = json.loads(values.read_text())["secret_values"]
    assert CFG.hacluster_secret_name in stored and CFG.keystore_secret_name not in stored
    sm = client(endpoint, "secretsmanager")
    assert sm.get_secret_value(SecretId=CFG.keystore_password_secret_name)[
        "SecretString"] == LAB_KEYSTORE_PASSWORD

