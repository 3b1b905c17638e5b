"""The lab: the product's cluster on real Corosync/Pacemaker in namespaces, AWS played by moto.

Brings the lab up once for the module, checks the bootstrap result, runs every drill case with
its own assertions and tears everything down. No timing assertions: CI machines vary.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from lab.cluster import Lab, down, missing_tools, running_lab
from lab.drill import Drill
from lab.model import LAB_AGENT, guide_model, product_model
from lab.netns import namespaces
from lab.node import exec_in
from prep_ha.cluster.model import build_model
from prep_ha.cluster.pcs import corosync_conf
from prep_ha.config import load_stack_file

ROOT = Path(__file__).resolve().parent.parent
CFG = load_stack_file(str(ROOT / "Pulumi.testnet.yaml"), stack="testnet")
NODE1, NODE2 = CFG.node_names


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (network, mount and UTS namespaces)"
    if missing := missing_tools():
        return f"the lab needs {', '.join(missing)} (apt: awscli curl pacemaker pcs ...)"
    return None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if reason := _skip_reason():
        pytest.skip(reason)
    with running_lab(Lab(CFG, tmp_path_factory.mktemp("lab") / "run")) as running:
        yield running


def test_lab_model_differs_from_the_product_only_in_the_service_agents():
    product, lab = build_model(CFG), product_model(CFG)
    assert lab.corosync == product.corosync and lab.fence_devices == product.fence_devices
    assert (lab.locations, lab.colocations, lab.orders) == \
        (product.locations, product.colocations, product.orders)
    assert (lab.properties, lab.resource_defaults, lab.op_defaults) == \
        (product.properties, product.resource_defaults, product.op_defaults)
    for pg, lg in zip(product.groups, lab.groups, strict=True):
        assert (pg.id, pg.meta) == (lg.id, lg.meta)
        for p, r in zip(pg.members, lg.members, strict=True):
            assert (p.id, p.ops) == (r.id, r.ops)
            if p.agent.startswith("systemd:"):
                assert r.agent == LAB_AGENT and r.params == (("role", p.agent[8:]),)
            else:
                assert r == p


def test_guide_variant_changes_only_token_and_service_monitor():
    product, guide = product_model(CFG), guide_model(CFG)
    assert (guide.corosync.token_ms, guide.corosync.consensus_ms) == (3000, 3600)
    assert dataclasses.replace(guide.corosync, token_ms=product.corosync.token_ms,
                               consensus_ms=product.corosync.consensus_ms) == product.corosync
    monitors = {r.id: next(o.interval for o in r.ops if o.name == "monitor")
                for g in guide.groups for r in g.members if r.agent == LAB_AGENT}
    assert monitors == {"peer-service": "60s", "ctz-service": "60s"}


@pytest.mark.lab
def test_bootstrap_gives_a_healthy_cluster(lab):
    status = lab.status()
    assert status is not None and set(status.online) == {NODE1, NODE2}
    assert not status.standby and not status.failed
    for rsc in ("peer-awsvip", "peer-ip", "peer-service"):
        assert status.where(rsc) == (NODE1,)
    for rsc in ("ctz-awsvip", "ctz-ip", "ctz-service"):
        assert status.where(rsc) == (NODE2,)
    assert len(status.where("fence-aws")) == 1
    text = lab.pcs_status()
    assert "Online: [ prep-ha-testnet-1 prep-ha-testnet-2 ]" in text
    assert "stonith:fence_aws" in text and "Started" in text


@pytest.mark.lab
def test_nodes_run_the_products_corosync_conf(lab):
    for node in lab.nodes:
        assert exec_in(node, "cat", "/etc/corosync/corosync.conf") == \
            corosync_conf(build_model(CFG))
        assert exec_in(node, "hostname").strip() == node.name


@pytest.mark.lab
def test_first_push_exits_zero(lab):
    first = lab.pushes[0]
    assert first.returncode == 0, first.stderr
    assert "pushed to nodes" in first.stdout


@pytest.mark.lab
def test_second_push_is_a_no_op(lab):
    assert "already pushed, nothing to do" in lab.push()


@pytest.mark.lab
@pytest.mark.parametrize("case", ["heartbeat", "service", "standby", "kill", "links"])
def test_drill(lab, case):
    result = Drill(lab).cases()[case]()
    print(result.report())
    assert result.checks and result.passed, result.report()


@pytest.mark.lab
def test_down_removes_every_namespace_and_process(lab):
    Drill(lab).restore()
    down(lab.run_dir)
    assert namespaces() == []
    assert not lab.run_dir.exists()
