"""The multi-AZ stack (Pulumi.mainnet.yaml) on the real-node lab: node 1 and node 2 in two AZs,
the arbiter in a third, the peer's overlay IP routed to the active node (aws-vpc-move-ip in
moto's route tables, followed by the lab's VPC router), and the AZ failure cases.
No timing assertions: CI machines vary.
"""

from __future__ import annotations

import json
import sys

import pytest

from lab.client import probe
from lab.cluster import Lab
from lab.netns import in_ns, ns_argv, run
from lab.node import exec_in
from lab.topology import CLOUD_NS
from prep_ha.cluster.model import SERVICE_NIC
from prep_ha.config import load_stack_file
from tests.pulumi_mocks import PROJECT_DIR
from tests.real_lab import booted_lab, drill_case

CFG = load_stack_file(str(PROJECT_DIR / "Pulumi.mainnet.yaml"), stack="mainnet")

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with booted_lab(CFG, tmp_path_factory) as running:
        yield running


def _route_targets(lab: Lab) -> set[str]:
    """The ENIs the stack's route tables send the overlay IP to, as EC2 (moto) holds them."""
    script = ("import boto3,json;"
              f"c=boto3.client('ec2',region_name='{CFG.region}',endpoint_url='https://127.0.0.1',"
              "verify=False,aws_access_key_id='lab',aws_secret_access_key='lab');"
              "print(json.dumps(c.describe_route_tables()['RouteTables']))")
    tables = json.loads(run(ns_argv(CLOUD_NS, sys.executable, "-W", "ignore", "-c", script)))
    return {r.get("NetworkInterfaceId") for t in tables for r in t["Routes"]
            if r.get("DestinationCidrBlock") == f"{CFG.peer_vip}/32"}


def test_each_node_in_its_zone_and_the_peer_behind_its_overlay_route(lab):
    deployment = lab.deployment()
    zones = [deployment.node(name).availability_zone for name in CFG.node_names]
    assert zones == [z.name for z in CFG.zones]
    assert deployment.node(CFG.arbiter_name).availability_zone == CFG.arbiter_zone
    assert lab.healthy()
    status = lab.status()
    holder = status.where("peer-overlay")
    assert holder == status.where("peer-service") and len(holder) == 1
    spec = lab.node(holder[0])
    # The address on the holder's service NIC (by the name prep-ha-network gave it), every
    # overlay route at its ENI, and the client reaching the peer through them.
    assert f"inet {CFG.peer_vip}/32" in exec_in(spec, "ip", "-4", "-o", "addr", "show",
                                                "dev", SERVICE_NIC)
    assert _route_targets(lab) == {deployment.node(spec.name).eni(0).eni_id}
    assert f"via {deployment.node(spec.name).eni(0).primary_ip}" in in_ns(
        CLOUD_NS, "ip", "route", "show", f"{CFG.peer_vip}/32")
    answer = probe(CFG.peer_vip)
    assert answer is not None and answer["node"] == spec.name and answer["role"] == "peer"
    # No citizen address in this topology (single-AZ has ctz-awsvip and ctz-ip).
    text = lab.pcs_status()
    assert "ctz-service" in text and "ctz-awsvip" not in text and "ctz-ip" not in text


# The AZ cases, and the failover cases whose address move differs from single-AZ's (the
# rest run on the single-AZ stack in tests/test_lab.py; all of them pass on both).
@pytest.mark.parametrize("case", ["links", "split", "freeze-active", "az-lost", "az-cut",
                                  "az-arbiter-lost"])
def test_drill(lab, case):
    drill_case(lab, case)
