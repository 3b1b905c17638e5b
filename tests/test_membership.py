"""Node replacement's `retire` and `rejoin` steps (prep_ha/cluster/membership.py): what they
read of the cluster, from real `crm_mon` output of CIBs that Pacemaker's scheduler brought to
each state (crm_simulate), and the addresses they give `pcs cluster node add`.

The steps themselves run against a live cluster in the lab (`python -m lab drill --case
replace`; tests/test_lab.py)."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from prep_ha.cluster.membership import NODE_FACTS
from prep_ha.cluster.model import PEER_GROUP, build_model
from prep_ha.cluster.pcs import render_script, setup_command
from prep_ha.cluster.simulate import Simulator, missing_tools
from prep_ha.config import load_stack_file
from tests.pulumi_mocks import PROJECT_DIR

pytestmark = pytest.mark.skipif(bool(missing_tools()), reason="needs pacemaker and pcs")

MODEL = build_model(load_stack_file(str(PROJECT_DIR / "Pulumi.testnet.yaml"), stack="testnet"))


def facts(cib: Path, node: str, here: str, quorum: bool = True) -> str:
    """NODE_FACTS on `crm_mon` of `cib`, as the node `here` (with a DC, as a live node sees
    it, and quorum or not)."""
    env = {**os.environ, "CIB_file": str(cib)}
    subprocess.run(["cibadmin", "--modify", "--xml-text",
                    f'<cib dc-uuid="1" have-quorum="{int(quorum)}"/>'], env=env, check=True)
    xml = subprocess.run(["crm_mon", "--one-shot", "--output-as=xml"], env=env, check=True,
                         capture_output=True, text=True).stdout
    return subprocess.run(["python3", "-c", NODE_FACTS, node, here, PEER_GROUP], input=xml,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def sim():
    with Simulator(MODEL) as s:
        yield s


def test_facts_of_a_healthy_pair(sim):
    steady = sim.steady().output_cib
    assert facts(steady, sim.node2, sim.node1) == f"online online yes {sim.node1}"
    assert facts(steady, "prep-ha-testnet-9", sim.node2) == f"absent online yes {sim.node1}"


def test_facts_after_standby_show_the_peer_moved_to_the_node_that_stays(sim):
    standby = sim.set_node_attribute(sim.steady().output_cib, sim.node1, "standby", "on")
    moved = sim.simulate(standby)
    assert facts(moved.output_cib, sim.node1, sim.node2) == f"standby online yes {sim.node2}"


def test_facts_of_a_failed_node_before_and_after_its_fence(sim):
    failed = sim.simulate(sim.steady().output_cib, "--node-fail", sim.node1)
    assert failed.fenced() == [sim.node1]
    assert facts(failed.output_cib, sim.node1, sim.node2) == f"offline online yes {sim.node2}"
    # Without quorum the node that stays refuses to retire anything.
    lost = sim.simulate(sim.steady().output_cib, quorum=False).output_cib
    assert facts(lost, sim.node1, sim.node2, quorum=False) == f"online online no {sim.node1}"


def test_rejoin_adds_a_node_with_the_addresses_setup_gave_it(tmp_path):
    script = render_script(MODEL, hacluster_secret_id="x")
    functions = re.search(r"^knet_addresses\(\) \{.*?^\}$", script, re.M | re.S).group(0)
    setup = setup_command(MODEL)
    for node in MODEL.nodes:
        out = subprocess.run(["bash", "-c", f"{functions}\nknet_addresses {node.name}"],
                             check=True, capture_output=True, text=True).stdout.split()
        at = setup.index(node.name)
        assert out == setup[at + 1:at + 3] == [f"addr={node.heartbeat_ip}",
                                               f"addr={node.service_ip}"]
    unknown = subprocess.run(["bash", "-c", f"{functions}\nknet_addresses prep-ha-other"],
                             capture_output=True, text=True)
    assert unknown.returncode == 1 and "unknown node prep-ha-other" in unknown.stderr
    # Both steps exist, and only on the script's command line (never run by setup or push).
    assert 'retire) retire "$2" ;;' in script and 'rejoin) rejoin "$2" ;;' in script
    # Defect: a replaced node had never authenticated to the arbiter's pcsd, so the next
    # replacement (rejoin run there) failed in `pcs cluster node add`.
    rejoin = script.split("\nrejoin() {")[1].split("\n}")[0]
    auth = rejoin.index(f"pcsd_auth {MODEL.corosync.qdevice.host}")
    assert auth < rejoin.index("pcs cluster node add")


def test_a_new_instance_id_rebuilds_the_configuration_over_the_live_one(tmp_path):
    """After a replacement the CIB push rebuilds the configuration over the live CIB with the
    new instance id in the fence device's host map (it failed on the alert already there)."""
    script = tmp_path / "bootstrap.sh"
    script.write_text(render_script(MODEL, hacluster_secret_id="x"))

    def build(cib: Path, ids: list[str]) -> None:
        env = {**os.environ, **{n.instance_id_env: i for n, i in zip(MODEL.nodes, ids,
                                                                       strict=True)}}
        proc = subprocess.run(["bash", str(script), "build-cib", str(cib)], env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr

    def configuration(cib: Path) -> str:
        return subprocess.run(["cibadmin", "--query", "--scope", "configuration"],
                              env={**os.environ, "CIB_file": str(cib)}, check=True,
                              capture_output=True, text=True).stdout

    live, fresh = tmp_path / "live.xml", tmp_path / "fresh.xml"
    for cib in (live, fresh):
        cib.write_text(subprocess.run(["cibadmin", "--empty"], check=True, capture_output=True,
                                      text=True).stdout)
    build(live, ["i-0old0000000000001", "i-0000000000000002"])
    build(live, ["i-0new0000000000001", "i-0000000000000002"])
    build(fresh, ["i-0new0000000000001", "i-0000000000000002"])
    assert configuration(live) == configuration(fresh)
    assert f"{MODEL.nodes[0].name}:i-0new0000000000001" in configuration(live)
    assert "i-0old" not in configuration(live)
