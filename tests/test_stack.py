"""The resource graph `pulumi up` declares for both stacks, from the real program under mocks."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json

import pytest

from prep_ha.config import ConfigError, load_stack_file
from prep_ha.payload import TAG as PAYLOAD_TAG
from prep_ha.payload import object_key
from prep_ha.userdata import decode_user_data
from tests.pulumi_mocks import (
    DEBIAN_AMI,
    FAKE_KEYSTORE,
    FAKE_KEYSTORE_PASSWORD,
    FAKE_SECRET_VALUES,
    PROJECT_DIR,
    ProgramRun,
    run_program,
    run_stack,
)
from tests.test_userdata import payloads_of

STACKS = ("testnet", "mainnet")
INSTANCE = "aws:ec2/instance:Instance"
ENI = "aws:ec2/networkInterface:NetworkInterface"
ENI_ATTACHMENT = "aws:ec2/networkInterfaceAttachment:NetworkInterfaceAttachment"
SUBNET = "aws:ec2/subnet:Subnet"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
SG = "aws:ec2/securityGroup:SecurityGroup"
ROUTE_TABLE = "aws:ec2/routeTable:RouteTable"
RTA = "aws:ec2/routeTableAssociation:RouteTableAssociation"
EIP = "aws:ec2/eip:Eip"
SECRET = "aws:secretsmanager/secret:Secret"
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
SECRET_POLICY = "aws:secretsmanager/secretPolicy:SecretPolicy"
KMS_KEY = "aws:kms/key:Key"
ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"
BUCKET = "aws:s3/bucket:Bucket"
BUCKET_OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
LOCAL_COMMAND = "command:local:Command"
CLUSTER_INTERNAL = (("udp", 5404, 5406), ("tcp", 2224, 2224), ("tcp", 22, 22))
WORLD = ("0.0.0.0/0", "::/0")


@pytest.fixture(scope="module", params=STACKS)
def run(request) -> ProgramRun:
    return run_stack(request.param)


@pytest.fixture(scope="module")
def runs() -> dict[str, ProgramRun]:
    return {stack: run_stack(stack) for stack in STACKS}


def cfg_of(stack: str):
    return load_stack_file(str(PROJECT_DIR / f"Pulumi.{stack}.yaml"), stack=stack)


def stack_of(run: ProgramRun) -> str:
    return "mainnet" if run.outputs["peerVip"].startswith("10.40.") else "testnet"


def nodes_of(run: ProgramRun) -> list:
    """The two cluster nodes' instances (the arbiter is an instance too)."""
    return sorted((r for r in run.of_type(INSTANCE) if "prep-ha:node" in r.inputs["tags"]),
                  key=lambda r: r.name)


def one(run: ProgramRun, type_token: str, name: str):
    return next(r for r in run.of_type(type_token) if r.name == name)


def test_resource_counts(run):
    counts = {t: len(run.of_type(t)) for t in (
        INSTANCE, ENI, ENI_ATTACHMENT, SUBNET, "aws:ec2/placementGroup:PlacementGroup",
        "aws:ebs/volume:Volume", "aws:ec2/volumeAttachment:VolumeAttachment",
        "aws:lb/loadBalancer:LoadBalancer", "aws:lb/targetGroup:TargetGroup",
        "aws:lb/listener:Listener", SECRET, SECRET_VERSION, "aws:ec2/keyPair:KeyPair",
        "aws:iam/role:Role", "aws:iam/instanceProfile:InstanceProfile", ROLE_POLICY,
        "aws:ec2/natGateway:NatGateway", SG, EIP, KMS_KEY, SECRET_POLICY, ENDPOINT,
        LOCAL_COMMAND, BUCKET, BUCKET_OBJECT, BUCKET_POLICY)}
    assert counts == {
        INSTANCE: 3, ENI: 6, ENI_ATTACHMENT: 4, SUBNET: 5,
        "aws:ec2/placementGroup:PlacementGroup": 1, "aws:ebs/volume:Volume": 2,
        "aws:ec2/volumeAttachment:VolumeAttachment": 2, "aws:lb/loadBalancer:LoadBalancer": 1,
        # keystore, its password, hacluster, and the two nodes' SSH host keys; values only
        # for the last three (put-keystore stores the key), each secret with a policy.
        "aws:lb/targetGroup:TargetGroup": 2, "aws:lb/listener:Listener": 2, SECRET: 5,
        # The keystore's key and the alert topic's (components/alerts.py).
        SECRET_VERSION: 3, SECRET_POLICY: 5, KMS_KEY: 2,
        # keystore-put and the image roll
        LOCAL_COMMAND: 2,
        "aws:ec2/keyPair:KeyPair": 1, "aws:iam/role:Role": 2,
        # Each role: its own calls, and reading the payloads; the node role the secrets too.
        "aws:iam/instanceProfile:InstanceProfile": 2, ROLE_POLICY: 6,
        # Secrets Manager and S3 (gateway) inside the VPC.
        "aws:ec2/natGateway:NatGateway": 1, SG: 5, ENDPOINT: 2,
        # One payload per instance, in one bucket.
        BUCKET: 1, BUCKET_OBJECT: 3, BUCKET_POLICY: 1,
        # NAT, NLB and the two management addresses (managementAccess public).
        EIP: 4,
    }


def test_subnets_in_one_az_with_configured_cidrs(run):
    cfg = cfg_of(stack_of(run))
    subnets = {r.name.removeprefix("network-"): r.inputs for r in run.of_type(SUBNET)}
    assert {k: v["cidrBlock"] for k, v in subnets.items()} == {
        "public": cfg.public_subnet_cidr, "service": cfg.service_subnet_cidr,
        "heartbeat": cfg.heartbeat_subnet_cidr, "management": cfg.management_subnet_cidr,
        "arbiter-subnet": cfg.arbiter_subnet_cidr,
    }
    assert {v["availabilityZone"] for v in subnets.values()} == {cfg.availability_zone}
    assert not any(v.get("mapPublicIpOnLaunch") for v in subnets.values())


def _default_route_of(run: ProgramRun, subnet_name: str) -> dict | None:
    subnet = one(run, SUBNET, subnet_name)
    rta = next(r for r in run.of_type(RTA) if r.inputs["subnetId"] == subnet.id)
    table = run.by_id(rta.inputs["routeTableId"])
    routes = [r for r in table.inputs.get("routes", []) if r.get("cidrBlock") == "0.0.0.0/0"]
    return routes[0] if routes else None


def test_routes(run):
    igw = run.of_type("aws:ec2/internetGateway:InternetGateway")[0]
    nat = run.of_type("aws:ec2/natGateway:NatGateway")[0]
    assert _default_route_of(run, "network-public")["gatewayId"] == igw.id
    assert _default_route_of(run, "network-service")["natGatewayId"] == nat.id
    assert _default_route_of(run, "network-heartbeat") is None
    assert _default_route_of(run, "network-management")["gatewayId"] == igw.id
    assert run.by_id(nat.inputs["subnetId"]).name == "network-public"


def test_private_management_has_no_internet_route_and_no_eip():
    run = run_stack("testnet", {"managementAccess": "private"})
    assert _default_route_of(run, "network-management") is None
    cfg = cfg_of("testnet")
    assert len(run.of_type(EIP)) == 2  # NAT and NLB only
    assert list(run.outputs["managementIps"].values()) == [n.management_ip for n in cfg.nodes]


def test_existing_vpc_uses_its_internet_gateway():
    run = run_stack("testnet", {"vpcId": "vpc-0abc12345def67890",
                                "managementAccess": "private"})
    assert not run.of_type("aws:ec2/vpc:Vpc")
    assert not run.of_type("aws:ec2/internetGateway:InternetGateway")
    assert {r.inputs["vpcId"] for r in run.of_type(SUBNET)} == {"vpc-0abc12345def67890"}
    assert _default_route_of(run, "network-public")["gatewayId"] == "igw-0existing"


def test_enis_device_indexes_subnets_and_fixed_addresses(run):
    cfg = cfg_of(stack_of(run))
    instances = nodes_of(run)
    vips = (cfg.peer_vip, cfg.citizen_vip)
    for index, (instance, addresses) in enumerate(zip(instances, cfg.nodes, strict=True)):
        # Device 0 is the service ENI: awsvip moves the VIP to the primary MAC's ENI.
        service = run.by_id(instance.inputs["primaryNetworkInterface"]["networkInterfaceId"])
        assert run.by_id(service.inputs["subnetId"]).name == "network-service"
        assert service.inputs["privateIpLists"] == [addresses.service_ip, vips[index]]
        attached = {a.inputs["deviceIndex"]: run.by_id(a.inputs["networkInterfaceId"])
                    for a in run.of_type(ENI_ATTACHMENT)
                    if a.inputs["instanceId"] == instance.id}
        assert sorted(attached) == [1, 2]
        assert run.by_id(attached[1].inputs["subnetId"]).name == "network-heartbeat"
        assert attached[1].inputs["privateIpLists"] == [addresses.heartbeat_ip]
        assert run.by_id(attached[2].inputs["subnetId"]).name == "network-management"
        assert attached[2].inputs["privateIpLists"] == [addresses.management_ip]
        for eni in (service, attached[1], attached[2]):
            # awsvip's IAM permission is conditioned on this tag.
            assert eni.inputs["tags"]["prep-ha:cluster"] == cfg.cluster_name


def test_instances(run):
    stack = stack_of(run)
    cfg = cfg_of(stack)
    placement = run.of_type("aws:ec2/placementGroup:PlacementGroup")[0]
    assert placement.inputs["strategy"] == "spread"
    instances = nodes_of(run)
    for index, instance in enumerate(instances):
        i = instance.inputs
        assert i["metadataOptions"] == {"httpEndpoint": "enabled", "httpTokens": "required",
                                        "httpPutResponseHopLimit": 1,
                                        "instanceMetadataTags": "enabled"}
        assert i["rootBlockDevice"]["encrypted"] is True
        assert i["rootBlockDevice"]["volumeType"] == "gp3"
        assert i["rootBlockDevice"]["volumeSize"] == cfg.root_volume_gib
        assert i["disableApiTermination"] is (stack == "mainnet")
        assert i["disableApiStop"] is False
        assert i["placementGroup"] == placement.inputs["name"] == f"{cfg.cluster_name}-spread"
        assert i["instanceType"] == cfg.instance_type
        assert i["ami"] == DEBIAN_AMI
        assert i["tags"] == {
            "Name": cfg.node_names[index], "prep-ha:cluster": cfg.cluster_name,
            "prep-ha:node": cfg.node_names[index],
            "prep-ha:role": ("active", "backup")[index],
            PAYLOAD_TAG: payloads_of(run)[index].digest,
        }
        assert "subnetId" not in i and "vpcSecurityGroupIds" not in i


def test_termination_protection_per_stack(runs):
    assert all(r.inputs["disableApiTermination"] for r in runs["mainnet"].of_type(INSTANCE))
    assert not any(r.inputs["disableApiTermination"] for r in runs["testnet"].of_type(INSTANCE))


def test_data_volumes_encrypted_and_attached_as_sdf(run):
    cfg = cfg_of(stack_of(run))
    volumes = run.of_type("aws:ebs/volume:Volume")
    for volume in volumes:
        assert volume.inputs["encrypted"] is True
        assert volume.inputs["type"] == "gp3"
        assert volume.inputs["size"] == cfg.data_volume_gib
        assert volume.inputs["availabilityZone"] == cfg.availability_zone
    attachments = run.of_type("aws:ec2/volumeAttachment:VolumeAttachment")
    assert {a.inputs["volumeId"] for a in attachments} == {v.id for v in volumes}
    assert {a.inputs["instanceId"] for a in attachments} == {i.id for i in nodes_of(run)}
    assert {a.inputs["deviceName"] for a in attachments} == {"/dev/sdf"}


def _rules(run: ProgramRun, sg_name: str, type_token: str = INGRESS) -> list[dict]:
    sg = one(run, SG, sg_name)
    return [r.inputs for r in run.of_type(type_token) if r.inputs["securityGroupId"] == sg.id]


def _covers(rule: dict, protocol: str, low: int, high: int) -> bool:
    if rule["ipProtocol"] in ("-1", "all"):
        return True
    return (rule["ipProtocol"] == protocol and rule["fromPort"] <= high
            and rule["toPort"] >= low)


def test_nothing_cluster_internal_is_open_to_the_world(run):
    for rule in (r.inputs for r in run.of_type(INGRESS)):
        if rule.get("cidrIpv4") in WORLD or rule.get("cidrIpv6") in WORLD:
            assert rule["ipProtocol"] == "tcp"
            assert (rule["fromPort"], rule["toPort"]) in ((7100, 7100), (9000, 9000))
            assert not any(_covers(rule, *internal) for internal in CLUSTER_INTERNAL)


def test_security_group_rules(run):
    cfg = cfg_of(stack_of(run))
    hosts = lambda ips: sorted(f"{ip}/32" for ip in ips)  # noqa: E731
    service = _rules(run, "network-service-sg")
    assert sorted((r["ipProtocol"], r["fromPort"], r["cidrIpv4"]) for r in service
                  if r["cidrIpv4"] == "0.0.0.0/0") == [("tcp", 7100, "0.0.0.0/0"),
                                                       ("tcp", 9000, "0.0.0.0/0")]
    corosync = [r for r in service if r["ipProtocol"] == "udp"]
    assert {(r["fromPort"], r["toPort"]) for r in corosync} == {(5404, 5406)}
    assert sorted(r["cidrIpv4"] for r in corosync) == hosts(n.service_ip for n in cfg.nodes)

    heartbeat = _rules(run, "network-heartbeat-sg")
    assert sorted(r["cidrIpv4"] for r in heartbeat if r["ipProtocol"] == "udp") == \
        hosts(n.heartbeat_ip for n in cfg.nodes)
    assert all(r["cidrIpv4"] in hosts(n.heartbeat_ip for n in cfg.nodes) for r in heartbeat)

    # SSH only from admins: they run pcs on a node, pcsd never faces the admin networks. The
    # cluster metrics only from inside the management subnet.
    management = _rules(run, "network-management-sg")
    assert sorted((r["fromPort"], r["cidrIpv4"]) for r in management) == \
        sorted([(22, c) for c in cfg.admin_cidrs] + [(9664, cfg.management_subnet_cidr)])
    assert {r["ipProtocol"] for r in management} == {"tcp"}
    assert sorted((r["fromPort"], r["cidrIpv4"]) for r in heartbeat if r["ipProtocol"] == "tcp") \
        == [(2224, h) for h in hosts(n.heartbeat_ip for n in cfg.nodes)]

    endpoint = _rules(run, "network-secrets-endpoint-sg")
    assert [(r["fromPort"], r["cidrIpv4"]) for r in endpoint] == [(443, cfg.vpc_cidr)]


def test_secrets_manager_is_reached_inside_the_vpc(run):
    cfg = cfg_of(stack_of(run))
    [endpoint] = [e for e in run.of_type(ENDPOINT) if e.inputs["vpcEndpointType"] != "Gateway"]
    assert endpoint.inputs["serviceName"] == f"com.amazonaws.{cfg.region}.secretsmanager"
    assert endpoint.inputs["vpcEndpointType"] == "Interface"
    assert endpoint.inputs["privateDnsEnabled"] is True  # the nodes' SDK calls go through it
    assert run.by_id(endpoint.inputs["subnetIds"][0]).name == "network-service"


def test_nlb_targets_the_peer_vip(run):
    cfg = cfg_of(stack_of(run))
    nlb = run.of_type("aws:lb/loadBalancer:LoadBalancer")[0].inputs
    assert nlb["loadBalancerType"] == "network"
    assert nlb["internal"] is False
    [mapping] = nlb["subnetMappings"]
    assert run.by_id(mapping["subnetId"]).name == "network-public"
    assert run.by_id(mapping["allocationId"]).type == EIP
    groups = run.of_type("aws:lb/targetGroup:TargetGroup")
    assert {g.inputs["targetType"] for g in groups} == {"ip"}
    assert sorted(g.inputs["port"] for g in groups) == [7100, 9000]
    for group in groups:
        assert group.inputs["healthCheck"]["protocol"] == "TCP"
        assert group.inputs["healthCheck"]["interval"] <= 10
    targets = run.of_type("aws:lb/targetGroupAttachment:TargetGroupAttachment")
    assert sorted((t.inputs["targetId"], t.inputs["port"]) for t in targets) == [
        (cfg.peer_vip, 7100), (cfg.peer_vip, 9000)]
    for target in targets:
        assert run.by_id(target.inputs["targetGroupArn"]).inputs["port"] == target.inputs["port"]
    listeners = run.of_type("aws:lb/listener:Listener")
    assert sorted(ls.inputs["port"] for ls in listeners) == [7100, 9000]
    for listener in listeners:
        [action] = listener.inputs["defaultActions"]
        assert run.by_id(action["targetGroupArn"]).inputs["port"] == listener.inputs["port"]


def test_iam_exactly_what_the_agents_need(run):
    cfg = cfg_of(stack_of(run))
    policies = {r.name: json.loads(r.inputs["policy"]) for r in run.of_type(ROLE_POLICY)}
    statements = policies["node-iam-fencing-and-vip"]["Statement"]
    actions = {a for s in statements for a in s["Action"]}
    assert actions == {"ec2:DescribeInstances", "ec2:StopInstances", "ec2:StartInstances",
                       "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"}
    for statement in statements:
        if any(not a.startswith("ec2:Describe") for a in statement["Action"]):
            assert statement["Resource"] != "*"
            assert statement["Condition"] == {
                "StringEquals": {"aws:ResourceTag/prep-ha:cluster": cfg.cluster_name}}
        else:
            assert "Condition" not in statement
    read, decrypt = policies["secrets-node-read"]["Statement"]
    assert read["Action"] == ["secretsmanager:GetSecretValue"]
    assert sorted(read["Resource"]) == sorted(s.id for s in run.of_type(SECRET))
    key = one(run, KMS_KEY, "secrets-keystore-key")
    assert decrypt["Action"] == ["kms:Decrypt"] and decrypt["Resource"] == [key.outputs["arn"]]
    assert decrypt["Condition"] == {"StringEquals": {
        "kms:ViaService": f"secretsmanager.{cfg.region}.amazonaws.com"}}
    role = run.of_type("aws:iam/role:Role")[0]
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}


def test_secrets_are_secret(run):
    cfg = cfg_of(stack_of(run))
    host_keys = [f"{n}/ssh-host-key" for n in cfg.node_names]
    assert sorted(s.inputs["name"] for s in run.of_type(SECRET)) == sorted([
        cfg.keystore_secret_name, cfg.keystore_password_secret_name, cfg.hacluster_secret_name,
        *host_keys])
    values = {}
    for version in run.of_type(SECRET_VERSION):
        assert version.is_secret("secretString"), version.name
        values[run.by_id(version.inputs["secretId"]).inputs["name"]] = \
            version.inputs["secretString"]
    # The validator key never passes through Pulumi: no version, so not in the state.
    assert sorted(values) == sorted([cfg.hacluster_secret_name, *host_keys])
    password = run.of_type("random:index/randomPassword:RandomPassword")[0]
    assert password.inputs["special"] is False


def test_the_validator_key_is_guarded_and_stored_before_the_nodes_boot(run):
    cfg = cfg_of(stack_of(run))
    key = one(run, KMS_KEY, "secrets-keystore-key")
    assert key.inputs["enableKeyRotation"] is True
    role = one(run, "aws:iam/role:Role", "node-iam-role")
    statements = {s["Sid"]: s for s in json.loads(key.inputs["policy"])["Statement"]}
    assert statements["NodeRoleDecryptsViaSecretsManager"]["Principal"] == {"AWS": role.outputs[
        "arn"]}
    by_name = {s.inputs["name"]: s for s in run.of_type(SECRET)}
    policies = {p.inputs["secretArn"]: json.loads(p.inputs["policy"])
                for p in run.of_type(SECRET_POLICY)}
    vpc = run.of_type("aws:ec2/vpc:Vpc")[0].id
    for name, secret in by_name.items():
        sids = {s["Sid"]: s for s in policies[secret.id]["Statement"]}
        inside = sids["NodeRoleOnlyInsideTheVpc"]["Condition"]
        assert inside == {"StringEquals": {"aws:PrincipalArn": role.outputs["arn"]},
                          "StringNotEquals": {"aws:SourceVpc": vpc}}
        if name in (cfg.keystore_secret_name, cfg.keystore_password_secret_name):
            assert secret.inputs["kmsKeyId"] == key.outputs["arn"]
            assert "OnlyTheNodeRoleReads" in sids
        else:  # Pulumi reads back what it writes; the arbiter reads the hacluster password
            assert "OnlyTheNodeRoleReads" not in sids
    put = one(run, LOCAL_COMMAND, "secrets-keystore-put")
    assert put.inputs["create"] == f"python3 -m prep_ha put-keystore --stack {cfg.stack} " \
        "--if-unset"
    order = [r.key for r in run.resources]
    assert all(order.index(put.key) < order.index(n.key) for n in nodes_of(run))


def test_no_secret_value_outside_secret_inputs(run):
    """User-data, policies, tags, commands: no fake secret value anywhere it is not secret."""
    for resource in run.resources:
        text = json.dumps({k: v for k, v in resource.inputs.items()
                           if not resource.is_secret(k)})
        for value in FAKE_SECRET_VALUES:
            assert value not in text, (resource.type, resource.name)


def test_payloads_reference_secrets_by_arn_only(run):
    arns = {s.id for s in run.of_type(SECRET) if "/ssh-host-key" not in s.inputs["name"]}
    for instance, payload in zip(nodes_of(run), payloads_of(run), strict=True):
        assert not instance.is_secret("userDataBase64")
        text = "\n".join(f.content for f in payload.files)
        assert all(arn in text for arn in arns)
        # Its own host key, by name (derived from the node name), fetched by its user-data.
        user_data = decode_user_data(instance.inputs["userDataBase64"])
        assert f'"{instance.inputs["tags"]["prep-ha:node"]}/ssh-host-key"' in user_data
        for value in FAKE_SECRET_VALUES:
            assert value not in text
    for obj in run.of_type(BUCKET_OBJECT):
        assert not obj.secret_paths  # nothing in a payload needs hiding


def test_each_instance_installs_the_payload_its_tag_names_from_the_stacks_bucket(run):
    """The payload objects are named by their digest; each instance's tag names its own, the
    roll Command names both nodes'; the bucket admits the two instance roles, from the VPC."""
    cfg = cfg_of(stack_of(run))
    [bucket] = run.of_type(BUCKET)
    objects = {o.inputs["key"]: o for o in run.of_type(BUCKET_OBJECT)}
    digests = {}
    for instance in run.of_type(INSTANCE):
        digest = instance.inputs["tags"][PAYLOAD_TAG]
        obj = objects[object_key(digest)]
        assert obj.inputs["bucket"] == bucket.id
        assert hashlib.sha256(base64.b64decode(obj.inputs["contentBase64"])).hexdigest() == \
            digest
        assert obj.depends_on == () and instance.inputs["userDataBase64"]
        digests[instance.inputs["tags"].get("prep-ha:node", "arbiter")] = digest
    assert len(set(digests.values())) == 3  # each node's own addresses and volume
    roll = next(c for c in run.of_type(LOCAL_COMMAND) if c.name.endswith("-node-roll"))
    for node in cfg.node_names:
        assert f"--payload {node}={digests[node]}" in roll.inputs["create"]
    [policy] = run.of_type(BUCKET_POLICY)
    statements = {st["Sid"]: st for st in json.loads(policy.inputs["policy"])["Statement"]}
    roles = sorted(r.outputs["arn"] for r in run.of_type("aws:iam/role:Role"))
    readers = statements["InstanceRolesReadOnlyInsideTheVpc"]
    assert sorted(readers["Condition"]["ArnEquals"]["aws:PrincipalArn"]) == roles
    vpc = run.of_type("aws:ec2/vpc:Vpc")[0]
    assert readers["Condition"]["StringNotEquals"] == {"aws:SourceVpc": vpc.id}
    assert readers["Action"] == "s3:GetObject" and statements["AccountOnly"]["Effect"] == "Deny"
    [block] = run.of_type("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert all(block.inputs[k] for k in ("blockPublicAcls", "blockPublicPolicy",
                                         "ignorePublicAcls", "restrictPublicBuckets"))
    # The S3 gateway endpoint is on the nodes' (service) and the arbiter's route tables.
    [s3] = [e for e in run.of_type(ENDPOINT) if e.inputs["vpcEndpointType"] == "Gateway"]
    assert s3.inputs["serviceName"] == f"com.amazonaws.{cfg.region}.s3"
    tables = {run.by_id(t).name for t in s3.inputs["routeTableIds"]} | {
        run.by_id(a.inputs["routeTableId"]).name for a in run.of_type(
            "aws:ec2/vpcEndpointRouteTableAssociation:VpcEndpointRouteTableAssociation")}
    assert tables == {"network-service-rt", "arbiter-rt"}
    for role in run.of_type(ROLE_POLICY):
        if role.name.endswith("read-payloads"):
            [st] = json.loads(role.inputs["policy"])["Statement"]
            assert st == {"Effect": "Allow", "Action": "s3:GetObject",
                          "Resource": f"{bucket.outputs['arn']}/payload/*"}


def test_ssh_key_and_outputs(run):
    cfg = cfg_of(stack_of(run))
    key = run.of_type("tls:index/privateKey:PrivateKey")[0]
    assert key.inputs["algorithm"] == "ED25519"
    outputs = run.outputs
    assert run.secret_outputs == {"sshPrivateKey"}
    assert outputs["peerVip"] == cfg.peer_vip and outputs["citizenVip"] == cfg.citizen_vip
    assert set(outputs) >= {"nlbDnsName", "nlbPublicIp", "instanceIds", "managementIps",
                            "sshCommand", "pcsStatusCommand", "sshKeyCommand"}
    assert list(outputs["instanceIds"]) == list(cfg.node_names)
    eips = {e.inputs.get("associateWithPrivateIp"): e for e in run.of_type(EIP)}
    for node, address in zip(cfg.node_names, cfg.nodes, strict=True):
        host = outputs["managementIps"][node]
        assert ipaddress.ip_address(host)
        assert outputs["sshCommand"][node].endswith(f"admin@{host}")
        assert eips[address.management_ip].inputs["networkInterface"]
    assert "pcs status" in outputs["pcsStatusCommand"]
    # The key file in ~/.ssh, 0600 from its first byte (umask 077 on a fresh file), and the
    # nodes' pinned host keys beside it, which every sshCommand checks strictly.
    command = outputs["sshKeyCommand"]
    key_file = f'"$HOME/.ssh/{cfg.cluster_name}-admin"'
    assert command.startswith("(umask 077 && ") and f"rm -f {key_file}" in command
    assert f"sshPrivateKey > {key_file}" in command
    assert command.index("umask 077") < command.index("sshPrivateKey >")
    for node in cfg.node_names:
        assert f"-o UserKnownHostsFile=~/.ssh/{cfg.cluster_name}-known_hosts " \
               "-o StrictHostKeyChecking=yes" in outputs["sshCommand"][node]
    known = outputs["sshKnownHosts"].splitlines()
    assert [line.split()[0] for line in known] == \
        [outputs["managementIps"][n] for n in cfg.node_names]
    assert all(line.split()[1] == "ssh-ed25519" for line in known)
    assert outputs["keystoreSecretNames"] == [cfg.keystore_secret_name,
                                              cfg.keystore_password_secret_name]
    public = {k: v for k, v in outputs.items() if k not in run.secret_outputs}
    assert "PRIVATE KEY" not in json.dumps(public)


def test_graviton_instance_gets_an_arm64_debian_ami():
    run = run_stack("testnet", {"instanceType": "m7g.xlarge", "quorumArbiter": False})
    [(_, args)] = [i for i in run.invokes if i[0] == "aws:ec2/getAmi:getAmi"]
    filters = {f["name"]: f["values"] for f in args["filters"]}
    assert filters["name"] == ["debian-13-arm64-*"]
    assert filters["architecture"] == ["arm64"]
    assert args["owners"] == ["136693071363"] and args["mostRecent"] is True


def test_pinned_ami_skips_the_lookup():
    run = run_stack("testnet", {"amiId": "ami-0123456789abcdef0"})
    assert not [i for i in run.invokes if i[0] == "aws:ec2/getAmi:getAmi"]
    assert {r.inputs["ami"] for r in run.of_type(INSTANCE)} == {"ami-0123456789abcdef0"}


def test_run_program_returns_the_resource_list():
    resources = run_program("testnet")
    assert sum(r.type == INSTANCE for r in resources) == 3  # two nodes and the arbiter


@pytest.mark.parametrize("plaintext", [False, True])
@pytest.mark.parametrize("key", ["keystore", "keystorePassword"])
def test_the_key_in_stack_config_is_refused_before_anything_is_declared(key, plaintext):
    """Secret or not, config is Pulumi.<stack>.yaml (tracked) and reaches every run."""
    declared: list = []
    value = {"keystore": FAKE_KEYSTORE, "keystorePassword": FAKE_KEYSTORE_PASSWORD}[key]
    with pytest.raises(ConfigError) as err:
        run_stack("testnet", secrets={key: value}, plaintext_keys=[key] if plaintext else [],
                  sink=declared)
    assert err.value.key == key and declared == []
    assert f"pulumi config rm {key} --stack testnet" in err.value.fix
    assert "put-keystore --stack testnet" in err.value.fix
    assert value not in str(err.value)


def test_pulumi_does_not_fight_pacemaker_or_replace_live_nodes(runs):
    for stack, run in runs.items():
        for eni in run.of_type(ENI):
            if eni.name.endswith("-service-eni"):
                # awsvip moves the VIPs; the next `up` must not move them back.
                assert {"privateIpLists", "privateIps", "privateIpsCount"} <= \
                    set(eni.ignore_changes)
            else:
                assert not eni.ignore_changes
        for instance in run.of_type(INSTANCE):
            assert {"ami", "userDataBase64"} <= set(instance.ignore_changes)
        mainnet = stack == "mainnet"
        assert all(v.protect is mainnet for v in run.of_type("aws:ebs/volume:Volume"))


def test_quorum_arbiter(run):
    """Its own subnet and group, qnetd and pcsd from the two nodes only, one secret to read."""
    cfg = cfg_of(stack_of(run))
    [arbiter] = [r for r in run.of_type(INSTANCE) if "prep-ha:node" not in r.inputs["tags"]]
    i = arbiter.inputs
    assert i["tags"]["prep-ha:role"] == "arbiter" and i["privateIp"] == cfg.arbiter_ip
    assert i["metadataOptions"]["httpTokens"] == "required"
    assert i["rootBlockDevice"]["encrypted"] is True
    subnet = run.by_id(i["subnetId"])
    assert subnet.inputs["cidrBlock"] == cfg.arbiter_subnet_cidr
    [sg_id] = i["vpcSecurityGroupIds"]
    rules = [r.inputs for r in run.of_type(INGRESS) if r.inputs["securityGroupId"] == sg_id]
    assert sorted((r["fromPort"], r["cidrIpv4"]) for r in rules) == sorted(
        (port, f"{n.service_ip}/32") for port in (2224, 5403) for n in cfg.nodes)
    [policy] = [p for p in run.of_type(ROLE_POLICY)
                if p.name == "arbiter-read-hacluster-password"]
    statement = json.loads(policy.inputs["policy"])["Statement"]
    hacluster = next(s for s in run.of_type(SECRET) if s.name.endswith("hacluster-password"))
    assert statement == [{"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
                          "Resource": [hacluster.id]}]
    [payload] = payloads_of(run, arbiter=True)
    assert "corosync-qnetd" in payload.packages
    assert any("pcs qdevice setup model net" in " ".join(c) for c in payload.first_boot)
    for value in FAKE_SECRET_VALUES:
        assert value not in "".join(f.content for f in payload.files)


def test_without_the_arbiter_no_arbiter_resources():
    run = run_stack("testnet", {"quorumArbiter": False})
    assert len(run.of_type(INSTANCE)) == 2
    assert not [r for r in run.resources if r.name.startswith("arbiter")]
