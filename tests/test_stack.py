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
    CapturedResource,
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
ROUTE = "aws:ec2/route:Route"
NAT = "aws:ec2/natGateway:NatGateway"
LB = "aws:lb/loadBalancer:LoadBalancer"
TARGET = "aws:lb/targetGroupAttachment:TargetGroupAttachment"
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
    # The stack files leave clusterName at its default, prep-ha-<stack>.
    nat = run.of_type(NAT)[0]
    return nat.inputs["tags"]["prep-ha:cluster"].removeprefix("prep-ha-")


def suffix(cfg, zone_index: int) -> str:
    """A node zone's name suffix: none single-AZ (the names stacks have), -1, -2 multi-AZ."""
    return f"-{zone_index + 1}" if cfg.multi_az else ""


def zone_of(cfg, node_index: int) -> int:
    return cfg.zones.index(cfg.nodes[node_index].zone)


def nodes_of(run: ProgramRun) -> list:
    """The two cluster nodes' instances (the arbiter is an instance too)."""
    return sorted((r for r in run.of_type(INSTANCE) if "prep-ha:node" in r.inputs["tags"]),
                  key=lambda r: r.name)


def one(run: ProgramRun, type_token: str, name: str):
    return next(r for r in run.of_type(type_token) if r.name == name)


def test_resource_counts(run):
    multi_az = cfg_of(stack_of(run)).multi_az
    counts = {t: len(run.of_type(t)) for t in (ROUTE,
        INSTANCE, ENI, ENI_ATTACHMENT, SUBNET, "aws:ec2/placementGroup:PlacementGroup",
        "aws:ebs/volume:Volume", "aws:ec2/volumeAttachment:VolumeAttachment",
        "aws:lb/loadBalancer:LoadBalancer", "aws:lb/targetGroup:TargetGroup",
        "aws:lb/listener:Listener", SECRET, SECRET_VERSION, "aws:ec2/keyPair:KeyPair",
        "aws:iam/role:Role", "aws:iam/instanceProfile:InstanceProfile", ROLE_POLICY,
        "aws:ec2/natGateway:NatGateway", SG, EIP, KMS_KEY, SECRET_POLICY, ENDPOINT,
        LOCAL_COMMAND, BUCKET, BUCKET_OBJECT, BUCKET_POLICY)}
    single_az = {
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
        # Single-AZ tables keep their routes inline.
        ROUTE: 0,
    }
    # Multi-AZ: four subnets, a NAT gateway and an NLB address per node zone; the failover
    # path's APIs as endpoints too; default routes (public, service, management per zone)
    # and the overlay routes (service and public per zone) as separate resources.
    assert counts == single_az if not multi_az else {
        **single_az, SUBNET: 9, "aws:ec2/natGateway:NatGateway": 2, EIP: 6, ENDPOINT: 5,
        ROUTE: 6 + 4}


def _zone_subnets(cfg) -> dict[str, tuple[str, str]]:
    """Subnet name -> (block, zone) the config asks for: each node zone's four, the arbiter's."""
    expected = {"arbiter-subnet": (cfg.arbiter_subnet_cidr, cfg.arbiter_zone)}
    for i, zone in enumerate(cfg.zones):
        for role in ("public", "service", "heartbeat", "management"):
            expected[f"network-{role}{suffix(cfg, i)}"] = (getattr(zone, f"{role}_cidr"),
                                                           zone.name)
    return expected


def test_subnets_in_their_zones_with_configured_cidrs(run):
    cfg = cfg_of(stack_of(run))
    subnets = {r.name: r.inputs for r in run.of_type(SUBNET)}
    assert {k: (v["cidrBlock"], v["availabilityZone"]) for k, v in subnets.items()} == \
        _zone_subnets(cfg)
    assert not any(v.get("mapPublicIpOnLaunch") for v in subnets.values())
    zones = {v["availabilityZone"] for v in subnets.values()}
    if cfg.multi_az:
        # Node 1's zone, node 2's, and the arbiter's: the loss of any one leaves a quorum.
        assert len(zones) == 3 and cfg.arbiter_zone not in {z.name for z in cfg.zones}
    else:
        assert zones == {cfg.availability_zone}


def _table_of(run: ProgramRun, subnet_name: str) -> CapturedResource:
    subnet = one(run, SUBNET, subnet_name)
    rta = next(r for r in run.of_type(RTA) if r.inputs["subnetId"] == subnet.id)
    return run.by_id(rta.inputs["routeTableId"])


def _routes_of(run: ProgramRun, table: CapturedResource) -> list[dict]:
    """A table's routes: inline (single-AZ) and separate aws.ec2.Route resources (multi-AZ)."""
    separate = [{k: v for k, v in r.inputs.items() if k != "routeTableId"}
                for r in run.of_type(ROUTE) if r.inputs["routeTableId"] == table.id]
    return [*table.inputs.get("routes", []), *separate]


def _default_route_of(run: ProgramRun, subnet_name: str) -> dict | None:
    routes = [r for r in _routes_of(run, _table_of(run, subnet_name))
              if "0.0.0.0/0" in (r.get("cidrBlock"), r.get("destinationCidrBlock"))]
    assert len(routes) <= 1
    return routes[0] if routes else None


def test_routes(run):
    cfg = cfg_of(stack_of(run))
    igw = run.of_type("aws:ec2/internetGateway:InternetGateway")[0]
    nats = run.of_type(NAT)
    assert len(nats) == len(cfg.zones)
    for i in range(len(cfg.zones)):
        sfx = suffix(cfg, i)
        # Each node zone's egress through its own NAT gateway, in its own public subnet.
        nat = one(run, NAT, f"network-nat{sfx}")
        assert run.by_id(nat.inputs["subnetId"]).name == f"network-public{sfx}"
        assert _default_route_of(run, f"network-public{sfx}")["gatewayId"] == igw.id
        assert _default_route_of(run, f"network-service{sfx}")["natGatewayId"] == nat.id
        assert _default_route_of(run, f"network-heartbeat{sfx}") is None
        assert _default_route_of(run, f"network-management{sfx}")["gatewayId"] == igw.id
    for table in run.of_type(ROUTE_TABLE):
        # Terraform refuses inline routes beside aws.ec2.Route on one table.
        separate = any(r.inputs["routeTableId"] == table.id for r in run.of_type(ROUTE))
        assert not (separate and table.inputs.get("routes"))
        assert ("routes" not in table.inputs) is (cfg.multi_az and table.name != "arbiter-rt")
        # aws-vpc-move-ip's ReplaceRoute is allowed on tables with the cluster tag only.
        assert table.inputs["tags"]["prep-ha:cluster"] == cfg.cluster_name
    # The arbiter's first boot goes out through node 1's zone's NAT gateway.
    assert _default_route_of(run, "arbiter-subnet")["natGatewayId"] == \
        one(run, NAT, f"network-nat{suffix(cfg, 0)}").id


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
        # Node n in zone n multi-AZ; both in the one zone single-AZ.
        assert addresses.zone == cfg.zones[index if cfg.multi_az else 0]
        sfx = suffix(cfg, zone_of(cfg, index))
        # Device 0 is the service ENI: the VIP agents act on the primary MAC's ENI.
        service = run.by_id(instance.inputs["primaryNetworkInterface"]["networkInterfaceId"])
        assert run.by_id(service.inputs["subnetId"]).name == f"network-service{sfx}"
        if cfg.multi_az:
            # The overlay IP reaches the ENI by route: no secondary IP, no address check.
            assert service.inputs["privateIpLists"] == [addresses.service_ip]
            assert service.inputs["sourceDestCheck"] is False
        else:
            assert service.inputs["privateIpLists"] == [addresses.service_ip, vips[index]]
            assert "sourceDestCheck" not in service.inputs
        attached = {a.inputs["deviceIndex"]: run.by_id(a.inputs["networkInterfaceId"])
                    for a in run.of_type(ENI_ATTACHMENT)
                    if a.inputs["instanceId"] == instance.id}
        assert sorted(attached) == [1, 2]
        assert run.by_id(attached[1].inputs["subnetId"]).name == f"network-heartbeat{sfx}"
        assert attached[1].inputs["privateIpLists"] == [addresses.heartbeat_ip]
        assert run.by_id(attached[2].inputs["subnetId"]).name == f"network-management{sfx}"
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
    # Each node's volume in its node's zone (an EBS volume attaches inside its AZ only).
    assert [one(run, "aws:ebs/volume:Volume", f"nodes-{n}-data").inputs["availabilityZone"]
            for n in (1, 2)] == [a.zone.name for a in cfg.nodes]
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
    # Out to every node zone's heartbeat subnet only: multi-AZ, link 0 crosses the zones.
    assert sorted(r["cidrIpv4"] for r in _rules(run, "network-heartbeat-sg", EGRESS)) == \
        sorted(z.heartbeat_cidr for z in cfg.zones)

    # SSH only from admins: they run pcs on a node, pcsd never faces the admin networks. The
    # cluster metrics only from inside the management subnet.
    management = _rules(run, "network-management-sg")
    assert sorted((r["fromPort"], r["cidrIpv4"]) for r in management) == \
        sorted([(22, c) for c in cfg.admin_cidrs]
               + [(9664, z.management_cidr) for z in cfg.zones])
    assert {r["ipProtocol"] for r in management} == {"tcp"}
    assert sorted((r["fromPort"], r["cidrIpv4"]) for r in heartbeat if r["ipProtocol"] == "tcp") \
        == [(2224, h) for h in hosts(n.heartbeat_ip for n in cfg.nodes)]

    endpoint = _rules(run, "network-secrets-endpoint-sg")
    assert [(r["fromPort"], r["cidrIpv4"]) for r in endpoint] == [(443, cfg.vpc_cidr)]


def test_aws_apis_are_reached_inside_the_vpc(run):
    """Secrets Manager always (its policies refuse the node role outside the VPC); multi-AZ
    also every API on the failover path, with an ENI in each node zone's service subnet."""
    cfg = cfg_of(stack_of(run))
    endpoints = {e.inputs["serviceName"].removeprefix(f"com.amazonaws.{cfg.region}."): e
                 for e in run.of_type(ENDPOINT) if e.inputs["vpcEndpointType"] != "Gateway"}
    expected = {"secretsmanager", "ec2", "sns", "monitoring"} if cfg.multi_az \
        else {"secretsmanager"}
    assert set(endpoints) == expected
    [sg] = [g for g in run.of_type(SG) if g.name == "network-secrets-endpoint-sg"]
    for service, endpoint in endpoints.items():
        assert endpoint.name == f"network-{service}"
        assert endpoint.inputs["vpcEndpointType"] == "Interface"
        assert endpoint.inputs["privateDnsEnabled"] is True  # the nodes' SDK calls go through it
        assert endpoint.inputs["securityGroupIds"] == [sg.id]
        assert [run.by_id(i).name for i in endpoint.inputs["subnetIds"]] == \
            [f"network-service{suffix(cfg, z)}" for z in range(len(cfg.zones))]


def test_nlb_targets_the_peer_vip(run):
    cfg = cfg_of(stack_of(run))
    nlb = run.of_type(LB)[0].inputs
    assert nlb["loadBalancerType"] == "network"
    assert nlb["internal"] is False
    # One mapping, with its own Elastic IP, per node zone's public subnet.
    mappings = nlb["subnetMappings"]
    assert [run.by_id(m["subnetId"]).name for m in mappings] == \
        [f"network-public{suffix(cfg, z)}" for z in range(len(cfg.zones))]
    assert [run.by_id(m["allocationId"]).name for m in mappings] == \
        [f"peer-lb-eip{suffix(cfg, z)}" for z in range(len(cfg.zones))]
    # Multi-AZ the target is in one zone at a time; single-AZ stacks keep the attribute unset.
    assert nlb.get("enableCrossZoneLoadBalancing") is (True if cfg.multi_az else None)
    groups = run.of_type("aws:lb/targetGroup:TargetGroup")
    assert {g.inputs["targetType"] for g in groups} == {"ip"}
    assert sorted(g.inputs["port"] for g in groups) == [7100, 9000]
    for group in groups:
        assert group.inputs["healthCheck"]["protocol"] == "TCP"
        assert group.inputs["healthCheck"]["interval"] <= 10
    targets = run.of_type(TARGET)
    assert sorted((t.inputs["targetId"], t.inputs["port"]) for t in targets) == [
        (cfg.peer_vip, 7100), (cfg.peer_vip, 9000)]
    for target in targets:
        assert run.by_id(target.inputs["targetGroupArn"]).inputs["port"] == target.inputs["port"]
        # An IP target outside the VPC (the overlay IP) is only accepted in zone "all".
        assert target.inputs.get("availabilityZone") == ("all" if cfg.multi_az else None)
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
    fencing = {"ec2:DescribeInstances", "ec2:StopInstances", "ec2:StartInstances"}
    if cfg.multi_az:
        # aws-vpc-move-ip: routes on the cluster's tables; no private IP ever moves.
        assert actions == fencing | {"ec2:DescribeRouteTables", "ec2:ReplaceRoute"}
        [move] = [s for s in statements if "ec2:ReplaceRoute" in s["Action"]]
        assert move["Resource"] == f"arn:aws:ec2:{cfg.region}:*:route-table/*"
    else:
        assert actions == fencing | {"ec2:AssignPrivateIpAddresses",
                                     "ec2:UnassignPrivateIpAddresses"}
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
    assert tables == {"arbiter-rt", *(f"network-service{suffix(cfg, z)}-rt"
                                      for z in range(len(cfg.zones)))}
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
    assert set(outputs) >= {"nlbDnsName", "p2pEndpoint", "instanceIds", "managementIps",
                            "sshCommand", "pcsStatusCommand", "sshKeyCommand"}
    # What the P-Rep registers: the Elastic IP single-AZ; multi-AZ the NLB's name, which
    # answers with the healthy zones' addresses only.
    nlb_ips = [one(run, EIP, f"peer-lb-eip{suffix(cfg, z)}").outputs["publicIp"]
               for z in range(len(cfg.zones))]
    if cfg.multi_az:
        assert outputs["nlbPublicIps"] == nlb_ips and "nlbPublicIp" not in outputs
        assert outputs["p2pEndpoint"] == f"{outputs['nlbDnsName']}:7100"
    else:
        assert [outputs["nlbPublicIp"]] == nlb_ips and "nlbPublicIps" not in outputs
        assert outputs["p2pEndpoint"] == f"{outputs['nlbPublicIp']}:7100"
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
                # awsvip moves the VIPs (multi-AZ: the ENI keeps its own address, and the
                # same rule costs nothing); the next `up` must not move them back.
                assert {"privateIpLists", "privateIps", "privateIpsCount"} <= \
                    set(eni.ignore_changes)
            else:
                assert not eni.ignore_changes
        for instance in run.of_type(INSTANCE):
            assert {"ami", "userDataBase64"} <= set(instance.ignore_changes)
        # aws-vpc-move-ip moves the overlay routes; the default routes are Pulumi's alone.
        for route in run.of_type(ROUTE):
            overlay = route.inputs["destinationCidrBlock"] != "0.0.0.0/0"
            assert route.ignore_changes == (("networkInterfaceId",) if overlay else ())
        mainnet = stack == "mainnet"
        assert all(v.protect is mainnet for v in run.of_type("aws:ebs/volume:Volume"))


OVERLAY = "icon-prep-ha:overlay:PeerOverlayRoutes"


def test_multi_az_overlay_routes_start_at_node_1_and_are_left_to_pacemaker(runs):
    """aws-vpc-move-ip's start only replaces the peer's /32 routes: they exist, in every
    table that must reach the overlay IP (the nodes' and the NLB's), before the cluster
    starts, pointing at node 1's service ENI; Pulumi never moves them back."""
    run, cfg = runs["mainnet"], cfg_of("mainnet")
    node_1 = nodes_of(run)[0].inputs["primaryNetworkInterface"]["networkInterfaceId"]
    overlay = [r for r in run.of_type(ROUTE)
               if r.inputs["destinationCidrBlock"] == f"{cfg.peer_vip}/32"]
    tables = {f"{role}-{z}": one(run, ROUTE_TABLE, f"network-{role}-{z}-rt").id
              for role in ("service", "public") for z in (1, 2)}
    assert sorted(r.inputs["routeTableId"] for r in overlay) == sorted(tables.values())
    for route in overlay:
        assert route.name.startswith("peer-overlay-")
        assert route.inputs["networkInterfaceId"] == node_1
        assert set(route.inputs) == {"routeTableId", "destinationCidrBlock",
                                     "networkInterfaceId"}
        assert route.ignore_changes == ("networkInterfaceId",)
        assert route.parent == f"{OVERLAY}::peer-overlay"
    # The peer's address is outside the VPC, so no subnet could own it.
    assert ipaddress.ip_address(cfg.peer_vip) not in ipaddress.ip_network(cfg.vpc_cidr)
    readies = [c for c in run.of_type("command:remote:Command") if c.name.endswith("-ready")]
    assert len(readies) == 2
    for ready in readies:
        assert f"{OVERLAY}::peer-overlay" in ready.depends_on
    # The CIB's aws-vpc-move-ip moves exactly these tables' routes.
    push = one(run, "command:remote:Command", "pacemaker-cib-push").inputs["create"]
    assert {t.id for t in run.of_type(ROUTE_TABLE) if t.id in push} == set(tables.values())


def test_single_az_has_none_of_the_multi_az_resources(runs):
    """testnet keeps what it was created with: inline routes, one NAT gateway, one NLB address,
    Secrets Manager as the only interface endpoint, secondary IPs moved by awsvip."""
    run, cfg = runs["testnet"], cfg_of("testnet")
    assert not cfg.multi_az
    assert not run.of_type(ROUTE) and not run.of_type(OVERLAY)
    assert [n.name for n in run.of_type(NAT)] == ["network-nat"]
    assert [e.name for e in run.of_type(EIP) if e.name.startswith(("peer-lb", "network"))] \
        == ["network-nat-eip", "peer-lb-eip"]
    assert sorted(t.name for t in run.of_type(ROUTE_TABLE)) == sorted(
        ["arbiter-rt", *(f"network-{role}-rt" for role in ("public", "service", "heartbeat",
                                                             "management"))])
    assert all("routes" in t.inputs for t in run.of_type(ROUTE_TABLE))
    assert {e.name for e in run.of_type(ENDPOINT)} == {"network-secretsmanager", "network-s3"}
    assert not any("sourceDestCheck" in e.inputs for e in run.of_type(ENI))
    assert "enableCrossZoneLoadBalancing" not in run.of_type(LB)[0].inputs
    assert not any("availabilityZone" in t.inputs for t in run.of_type(TARGET))
    policy = one(run, ROLE_POLICY, "node-iam-fencing-and-vip").inputs["policy"]
    assert "ec2:AssignPrivateIpAddresses" in policy and "Route" not in policy
    push = one(run, "command:remote:Command", "pacemaker-cib-push").inputs["create"]
    assert not any(t.id in push for t in run.of_type(ROUTE_TABLE))


def test_multi_az_in_an_existing_vpc():
    """Each node zone's NAT gateway still goes out through the existing VPC's gateway."""
    run = run_stack("mainnet", {"vpcId": "vpc-0abc12345def67890",
                                "managementAccess": "private"})
    assert not run.of_type("aws:ec2/vpc:Vpc")
    assert {r.inputs["vpcId"] for r in run.of_type(SUBNET)} == {"vpc-0abc12345def67890"}
    for z in (1, 2):
        assert _default_route_of(run, f"network-public-{z}")["gatewayId"] == "igw-0existing"
        assert _default_route_of(run, f"network-management-{z}") is None
    assert len(run.of_type(ROUTE)) == 4 + 4  # public and service defaults, overlay routes


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
    # Multi-AZ, a third zone: its vote survives the loss of either node's zone.
    assert subnet.inputs["availabilityZone"] == cfg.arbiter_zone
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
