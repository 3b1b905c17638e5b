"""The failover drill against a deployed stack, through the AWS API (boto3).

Finds the pair by its `prep-ha:cluster` tag, finds the active node (single-AZ: the one whose
service ENI holds the peer VIP, awsvip moves it there; multi-AZ: the one whose service ENI the
overlay IP's routes in the stack's route tables name), fails it (EC2 stop or reboot, or
`pcs node standby` over SSH), then polls until the VIP sits on the other instance and the NLB's
peer targets are healthy again. On MainNet it only prints what it would do unless told `--execute`.

    python -m lab aws-drill --stack testnet --action stop
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from prep_ha.config import StackConfig

CLUSTER_TAG = "prep-ha:cluster"
ACTIONS = ("stop", "reboot", "standby")


@dataclass(frozen=True)
class Instance:
    id: str
    name: str
    state: str
    private_ips: tuple[str, ...]
    management_ip: str | None  # where an operator's SSH reaches the node
    service_eni: str | None = None  # device 0, where a multi-AZ overlay route points


def find_pair(ec2, cluster_name: str) -> list[Instance]:  # noqa: ANN001
    pages = ec2.get_paginator("describe_instances").paginate(Filters=[
        {"Name": f"tag:{CLUSTER_TAG}", "Values": [cluster_name]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])
    out = []
    for page in pages:
        for r in page["Reservations"]:
            for i in r["Instances"]:
                tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
                enis = sorted(i.get("NetworkInterfaces", []),
                              key=lambda n: n.get("Attachment", {}).get("DeviceIndex", 0))
                ips = tuple(a["PrivateIpAddress"] for n in enis for a in n["PrivateIpAddresses"])
                mgmt = next((n.get("Association", {}).get("PublicIp") or n["PrivateIpAddress"]
                             for n in enis if n.get("Attachment", {}).get("DeviceIndex") == 2),
                            None)
                service = next((n["NetworkInterfaceId"] for n in enis
                                if n.get("Attachment", {}).get("DeviceIndex") == 0), None)
                out.append(Instance(i["InstanceId"], tags.get("Name", i["InstanceId"]),
                                    i["State"]["Name"], ips, mgmt, service))
    return sorted(out, key=lambda i: i.name)


def holder_of(pair: list[Instance], vip: str) -> Instance | None:
    return next((i for i in pair if vip in i.private_ips), None)


def route_holder(ec2, cluster_name: str, pair: list[Instance],  # noqa: ANN001
                 vip: str) -> Instance | None:
    """Multi-AZ: the node every one of the stack's overlay routes names; None while the
    routes disagree (aws-vpc-move-ip replaces them one table at a time)."""
    tables = ec2.describe_route_tables(Filters=[
        {"Name": f"tag:{CLUSTER_TAG}", "Values": [cluster_name]},
        {"Name": "route.destination-cidr-block", "Values": [f"{vip}/32"]}])["RouteTables"]
    enis = {r.get("NetworkInterfaceId") for t in tables for r in t["Routes"]
            if r.get("DestinationCidrBlock") == f"{vip}/32"}
    if len(enis) != 1:
        return None
    return next((i for i in pair if i.service_eni in enis), None)


def active_node(ec2, cfg: StackConfig, pair: list[Instance]) -> Instance | None:  # noqa: ANN001
    if cfg.multi_az:
        return route_holder(ec2, cfg.cluster_name, pair, cfg.peer_vip)
    return holder_of(pair, cfg.peer_vip)


def peer_target_health(elbv2, cluster_name: str, vip: str) -> dict[str, str]:  # noqa: ANN001
    """Target group name -> health of the peer VIP target, for the cluster's target groups."""
    groups = [g for p in elbv2.get_paginator("describe_target_groups").paginate()
              for g in p["TargetGroups"]]
    out = {}
    for start in range(0, len(groups), 20):
        chunk = groups[start:start + 20]
        tags = elbv2.describe_tags(ResourceArns=[g["TargetGroupArn"] for g in chunk])
        for g, desc in zip(chunk, tags["TagDescriptions"], strict=True):
            if {t["Key"]: t["Value"] for t in desc["Tags"]}.get(CLUSTER_TAG) != cluster_name:
                continue
            for h in elbv2.describe_target_health(TargetGroupArn=g["TargetGroupArn"])[
                    "TargetHealthDescriptions"]:
                if h["Target"]["Id"] == vip:
                    out[g["TargetGroupName"]] = h["TargetHealth"]["State"]
    return out


@dataclass
class Plan:
    action: str
    active: Instance
    backup: Instance
    command: str

    def describe(self) -> str:
        return (f"active {self.active.name} ({self.active.id}) holds the peer VIP; "
                f"backup {self.backup.name} ({self.backup.id}); would run: {self.command}")


def plan(cfg: StackConfig, pair: list[Instance], action: str, ssh_user: str = "admin",
         active: Instance | None = None) -> Plan:
    """`active`: the node holding the peer (multi-AZ: found from the routes, active_node);
    single-AZ finds it from the pair's addresses."""
    if len(pair) != 2:
        raise SystemExit(f"expected 2 instances tagged {CLUSTER_TAG}={cfg.cluster_name}, "
                         f"found {len(pair)}")
    active = active or holder_of(pair, cfg.peer_vip)
    if active is None:
        raise SystemExit(f"no instance holds the peer VIP {cfg.peer_vip}: the cluster is not "
                         "serving; fix that before drilling")
    backup = next(i for i in pair if i is not active)
    command = {
        "stop": f"ec2 stop-instances --instance-ids {active.id} --force",
        "reboot": f"ec2 reboot-instances --instance-ids {active.id}",
        "standby": f"ssh {ssh_user}@{active.management_ip} sudo pcs node standby {active.name}",
    }[action]
    return Plan(action, active, backup, command)


def execute(ec2, p: Plan, ssh: Callable[[list[str]], None] | None = None) -> None:  # noqa: ANN001
    if p.action == "stop":
        ec2.stop_instances(InstanceIds=[p.active.id], Force=True)
    elif p.action == "reboot":
        ec2.reboot_instances(InstanceIds=[p.active.id])
    else:
        run_ssh = ssh or (lambda argv: subprocess.run(argv, check=True, timeout=120))
        run_ssh(p.command.split())


def wait_failover(ec2, elbv2, cfg: StackConfig, p: Plan, timeout: float = 900,  # noqa: ANN001
                  interval: float = 5, echo: Callable[[str], None] = print) -> float:
    """Seconds until the VIP is on the backup and every peer target is healthy."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        holder = active_node(ec2, cfg, find_pair(ec2, cfg.cluster_name))
        health = peer_target_health(elbv2, cfg.cluster_name, cfg.peer_vip)
        echo(f"+{time.monotonic() - t0:5.0f} s  VIP on {holder.name if holder else 'nobody'}; "
             f"targets {health or 'none found'}")
        if holder and holder.id == p.backup.id and health and \
                all(s == "healthy" for s in health.values()):
            return time.monotonic() - t0
        time.sleep(interval)
    raise SystemExit(f"no failover to {p.backup.name} within {timeout:.0f} s")


def main(argv: list[str] | None = None, session=None) -> int:  # noqa: ANN001
    from lab.cluster import REPO
    from prep_ha.config import load_stack_file

    ap = argparse.ArgumentParser(prog="python -m lab aws-drill", description=__doc__)
    ap.add_argument("--stack", required=True)
    ap.add_argument("--action", choices=ACTIONS, default="stop")
    ap.add_argument("--ssh-user", default="admin")
    ap.add_argument("--timeout", type=float, default=900)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", default=None)
    mode.add_argument("--execute", action="store_true",
                      help="really fail the active node (needed on MainNet)")
    args = ap.parse_args(argv)
    cfg = load_stack_file(str(REPO / f"Pulumi.{args.stack}.yaml"), stack=args.stack)
    dry = args.dry_run if args.dry_run is not None else (cfg.is_mainnet and not args.execute)
    if session is None:
        import boto3
        session = boto3.Session(region_name=cfg.region)
    ec2, elbv2 = session.client("ec2"), session.client("elbv2")
    pair = find_pair(ec2, cfg.cluster_name)
    p = plan(cfg, pair, args.action, args.ssh_user, active_node(ec2, cfg, pair))
    print(p.describe())
    if dry:
        print("dry run: nothing done (MainNet drills need --execute)")
        return 0
    execute(ec2, p)
    took = wait_failover(ec2, elbv2, cfg, p, args.timeout)
    print(f"failover to {p.backup.name} complete after {took:.0f} s")
    return 0
