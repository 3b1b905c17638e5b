"""The AWS drill against moto in-process (never real AWS): find the pair, plan, fail, poll."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from lab import aws_drill
from prep_ha.config import load_stack_file

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fake_credentials(monkeypatch):
    # moto intercepts every call; these only keep botocore from looking for real ones.
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_SESSION_TOKEN": "testing"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def _stack(name):
    return load_stack_file(str(ROOT / f"Pulumi.{name}.yaml"), stack=name)


def _deploy(cfg):
    """What the stack deploys, reduced to what the drill reads: tagged pair, VIPs (multi-AZ:
    the overlay routes, to node 1), NLB targets."""
    ec2 = boto3.client("ec2", region_name=cfg.region)
    elbv2 = boto3.client("elbv2", region_name=cfg.region)
    vpc = ec2.create_vpc(CidrBlock=cfg.vpc_cidr)["Vpc"]["VpcId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tag = [{"Key": aws_drill.CLUSTER_TAG, "Value": cfg.cluster_name}]
    ids, enis, subnets = [], [], []
    for name, addr, vip in zip(cfg.node_names, cfg.nodes, (cfg.peer_vip, cfg.citizen_vip),
                               strict=True):
        if not subnets or cfg.multi_az:
            subnets.append(ec2.create_subnet(
                VpcId=vpc, CidrBlock=addr.zone.service_cidr,
                AvailabilityZone=addr.zone.name)["Subnet"]["SubnetId"])
        inst = ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnets[-1],
            PrivateIpAddress=addr.service_ip,
            TagSpecifications=[{"ResourceType": "instance",
                                "Tags": [{"Key": "Name", "Value": name}, *tag]}])["Instances"][0]
        enis.append(inst["NetworkInterfaces"][0]["NetworkInterfaceId"])
        if vip is not None:
            ec2.assign_private_ip_addresses(NetworkInterfaceId=enis[-1],
                                            PrivateIpAddresses=[vip])
        ids.append(inst["InstanceId"])
    for _ in range(2 if cfg.multi_az else 0):
        table = ec2.create_route_table(VpcId=vpc, TagSpecifications=[
            {"ResourceType": "route-table", "Tags": tag}])["RouteTable"]["RouteTableId"]
        ec2.create_route(RouteTableId=table, DestinationCidrBlock=f"{cfg.peer_vip}/32",
                         NetworkInterfaceId=enis[0])
    subnet = subnets[0]
    # A foreign instance in the account must be ignored.
    ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet)
    for port in (7100, 9000):
        tg = elbv2.create_target_group(
            Name=f"{cfg.cluster_name}-{port}", Protocol="TCP", Port=port, VpcId=vpc,
            TargetType="ip", Tags=[{"Key": aws_drill.CLUSTER_TAG, "Value": cfg.cluster_name}])
        elbv2.register_targets(TargetGroupArn=tg["TargetGroups"][0]["TargetGroupArn"],
                               Targets=[{"Id": cfg.peer_vip, "Port": port}])
    return ec2, elbv2, ids


@mock_aws
def test_finds_the_pair_and_the_active_node():
    cfg = _stack("testnet")
    ec2, _, ids = _deploy(cfg)
    pair = aws_drill.find_pair(ec2, cfg.cluster_name)
    assert [i.name for i in pair] == list(cfg.node_names)
    plan = aws_drill.plan(cfg, pair, "stop")
    assert plan.active.id == ids[0] and plan.backup.id == ids[1]
    assert plan.command == f"ec2 stop-instances --instance-ids {ids[0]} --force"
    assert "pcs node standby" in aws_drill.plan(cfg, pair, "standby").command


@mock_aws
def test_stop_stops_the_active_instance_only():
    cfg = _stack("testnet")
    ec2, _, ids = _deploy(cfg)
    plan = aws_drill.plan(cfg, aws_drill.find_pair(ec2, cfg.cluster_name), "stop")
    aws_drill.execute(ec2, plan)
    states = {i.id: i.state for i in aws_drill.find_pair(ec2, cfg.cluster_name)}
    assert states == {ids[0]: "stopped", ids[1]: "running"}


@mock_aws
def test_standby_goes_over_ssh_to_the_active_node():
    cfg = _stack("testnet")
    ec2, _, _ = _deploy(cfg)
    plan = aws_drill.plan(cfg, aws_drill.find_pair(ec2, cfg.cluster_name), "standby")
    seen = []
    aws_drill.execute(ec2, plan, ssh=seen.append)
    assert seen[0][-4:] == ["pcs", "node", "standby", cfg.node_names[0]]


@mock_aws
def test_wait_failover_sees_the_vip_move_and_the_targets():
    cfg = _stack("testnet")
    ec2, elbv2, ids = _deploy(cfg)
    plan = aws_drill.plan(cfg, aws_drill.find_pair(ec2, cfg.cluster_name), "stop")
    health = aws_drill.peer_target_health(elbv2, cfg.cluster_name, cfg.peer_vip)
    assert len(health) == 2
    # What awsvip on the backup does during the failover.
    backup_eni = ec2.describe_instances(InstanceIds=[ids[1]])["Reservations"][0]["Instances"][0][
        "NetworkInterfaces"][0]["NetworkInterfaceId"]
    active_eni = ec2.describe_instances(InstanceIds=[ids[0]])["Reservations"][0]["Instances"][0][
        "NetworkInterfaces"][0]["NetworkInterfaceId"]
    ec2.unassign_private_ip_addresses(NetworkInterfaceId=active_eni,
                                      PrivateIpAddresses=[cfg.peer_vip])
    ec2.assign_private_ip_addresses(NetworkInterfaceId=backup_eni,
                                    PrivateIpAddresses=[cfg.peer_vip], AllowReassignment=True)
    lines = []
    if set(health.values()) == {"healthy"}:
        took = aws_drill.wait_failover(ec2, elbv2, cfg, plan, timeout=5, interval=0.1,
                                       echo=lines.append)
        assert took < 5
    else:
        # moto cannot probe an ip target: the drill must keep polling and give up, bounded.
        with pytest.raises(SystemExit, match="no failover"):
            aws_drill.wait_failover(ec2, elbv2, cfg, plan, timeout=0.5, interval=0.1,
                                    echo=lines.append)
    assert f"VIP on {cfg.node_names[1]}" in lines[-1]


@mock_aws
def test_multi_az_finds_the_active_node_by_the_overlay_routes():
    cfg = _stack("mainnet")
    ec2, _, ids = _deploy(cfg)
    pair = aws_drill.find_pair(ec2, cfg.cluster_name)
    assert aws_drill.active_node(ec2, cfg, pair).id == ids[0]
    # Mid-move (one table replaced, the other not yet): nobody holds the peer.
    tables = ec2.describe_route_tables(Filters=[
        {"Name": "route.destination-cidr-block", "Values": [f"{cfg.peer_vip}/32"]}])
    first = tables["RouteTables"][0]["RouteTableId"]
    ec2.replace_route(RouteTableId=first, DestinationCidrBlock=f"{cfg.peer_vip}/32",
                      NetworkInterfaceId=pair[1].service_eni)
    assert aws_drill.active_node(ec2, cfg, pair) is None
    for t in tables["RouteTables"][1:]:
        ec2.replace_route(RouteTableId=t["RouteTableId"],
                          DestinationCidrBlock=f"{cfg.peer_vip}/32",
                          NetworkInterfaceId=pair[1].service_eni)
    assert aws_drill.active_node(ec2, cfg, pair).id == ids[1]


@mock_aws
def test_mainnet_is_a_dry_run_unless_told(capsys):
    cfg = _stack("mainnet")
    _deploy(cfg)
    session = boto3.Session(region_name=cfg.region)
    assert aws_drill.main(["--stack", "mainnet"], session=session) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing done" in out
    states = {i.state for i in aws_drill.find_pair(session.client("ec2"), cfg.cluster_name)}
    assert states == {"running"}


@mock_aws
def test_no_vip_holder_refuses_to_drill():
    cfg = _stack("testnet")
    ec2, _, _ = _deploy(cfg)
    for i in aws_drill.find_pair(ec2, cfg.cluster_name):
        eni = ec2.describe_instances(InstanceIds=[i.id])["Reservations"][0]["Instances"][0][
            "NetworkInterfaces"][0]["NetworkInterfaceId"]
        ec2.unassign_private_ip_addresses(NetworkInterfaceId=eni,
                                          PrivateIpAddresses=[cfg.peer_vip])
    with pytest.raises(SystemExit, match="not serving"):
        aws_drill.plan(cfg, aws_drill.find_pair(ec2, cfg.cluster_name), "stop")

