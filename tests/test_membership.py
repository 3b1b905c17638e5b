"""Node replacement's `retire` and `rejoin` steps (prep_ha/cluster/membership.py): what they
read of the cluster, from real `crm_mon` output of CIBs that Pacemaker's scheduler brought to
each state (crm_simulate), and the addresses they give `pcs cluster node add`.

The steps themselves run against a live cluster in the lab (`python -m lab drill --case
replace`; tests/test_lab.py)."""

import re
import subprocess
from pathlib import Path

import pytest

from prep_ha.cluster.membership import NODE_FACTS
from prep_ha.cluster.model import PEER_GROUP, build_model
from prep_ha.cluster.pcs import render_script, setup_command
from prep_ha.cluster.simulate import Simulator
from prep_ha.config import load_stack_file
from tests.pulumi_mocks import PROJECT_DIR

MODEL = build_model(load_stack_file(str(PROJECT_DIR / "Pulumi.testnet.yaml"), stack="testnet"))


def facts(sim: Simulator, cib: Path, node: str, here: str, quorum: bool = True) -> str:
    """NODE_FACTS on the nodes' `crm_mon` of `cib`, as the node `here` (with a DC, as a live
    node sees it, and quorum or not)."""
    sim.run(["cibadmin", "--modify", "--xml-text",
             f'<cib dc-uuid="1" have-quorum="{int(quorum)}"/>'], env={"CIB_file": str(cib)})
    xml = sim.run(["crm_mon", "--one-shot", "--output-as=xml"], env={"CIB_file": str(cib)})
    out = sim.tools.run(["python3", "-c", NODE_FACTS, node, here, PEER_GROUP], input=xml)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def sim(node_tools):
    with Simulator(MODEL, tools=node_tools) as s:
        yield s


def test_facts_of_a_healthy_pair(sim):
    steady = sim.steady().output_cib
    assert facts(sim, steady, sim.node2, sim.node1) == f"online online yes {sim.node1}"
    assert facts(sim, steady, "prep-ha-testnet-9", sim.node2) == \
        f"absent online yes {sim.node1}"


def test_facts_after_standby_show_the_peer_moved_to_the_node_that_stays(sim):
    standby = sim.set_node_attribute(sim.steady().output_cib, sim.node1, "standby", "on")
    moved = sim.simulate(standby)
    assert facts(sim, moved.output_cib, sim.node1, sim.node2) == \
        f"standby online yes {sim.node2}"


def test_facts_of_a_failed_node_before_and_after_its_fence(sim):
    failed = sim.simulate(sim.steady().output_cib, "--node-fail", sim.node1)
    assert failed.fenced() == [sim.node1]
    assert facts(sim, failed.output_cib, sim.node1, sim.node2) == \
        f"offline online yes {sim.node2}"
    # Without quorum the node that stays refuses to retire anything.
    lost = sim.simulate(sim.steady().output_cib, quorum=False).output_cib
    assert facts(sim, lost, sim.node1, sim.node2, quorum=False) == \
        f"online online no {sim.node1}"


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


def test_a_new_instance_id_rebuilds_the_configuration_over_the_live_one(sim):
    """After a replacement the CIB push rebuilds the configuration over the live CIB with the
    new instance id in the fence device's host map (it failed on the alert already there)."""
    script = sim.dir / "rebuild.sh"
    script.write_text(render_script(MODEL, hacluster_secret_id="x"))

    def build(cib: Path, ids: list[str]) -> None:
        env = {n.instance_id_env: i for n, i in zip(MODEL.nodes, ids, strict=True)}
        sim.run(["bash", str(script), "build-cib", str(cib)], env=env)

    def configuration(cib: Path) -> str:
        return sim.run(["cibadmin", "--query", "--scope", "configuration"],
                       env={"CIB_file": str(cib)})

    live, fresh = sim.dir / "rebuild-live.xml", sim.dir / "rebuild-fresh.xml"
    for cib in (live, fresh):
        cib.write_text(sim.run(["cibadmin", "--empty"]))
    build(live, ["i-0old0000000000001", "i-0000000000000002"])
    build(live, ["i-0new0000000000001", "i-0000000000000002"])
    build(fresh, ["i-0new0000000000001", "i-0000000000000002"])
    assert configuration(live) == configuration(fresh)
    assert f"{MODEL.nodes[0].name}:i-0new0000000000001" in configuration(live)
    assert "i-0old" not in configuration(live)


@pytest.fixture
def fake_pcsd(tmp_path):
    """A pcsd on loopback (TLS, its own certificate) answering /remote/get_sw_versions with
    `versions`, to the known-hosts token only; the requests it saw."""
    import http.server
    import json
    import ssl
    import threading

    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=pcsd", "-keyout", tmp_path / "key.pem",
                    "-out", tmp_path / "cert.pem"], check=True, capture_output=True)
    state = {"versions": {}, "seen": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            state["seen"].append((self.path, self.headers.get("Cookie")))
            ok = self.headers.get("Cookie") == "token=the-token"
            versions = state["versions"] if ok else {}
            body = versions if isinstance(versions, bytes) else json.dumps(versions).encode()
            self.send_response(200 if ok else 401)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "known-hosts").write_text(json.dumps({"format_version": 1, "known_hosts": {
        "prep-ha-testnet-2": {"token": "the-token", "dest_list": [
            {"addr": "127.0.0.1", "port": server.server_address[1]}]}}}))
    yield tmp_path, state
    server.shutdown()


def test_rejoin_refuses_a_new_instance_on_another_debian_release(fake_pcsd, node_tools):
    """The partner compares its own pcs and Pacemaker (the nodes' Debian 13: pcs 0.12,
    Pacemaker 3.0) with what the new instance's pcsd reports, before adding it."""
    from prep_ha.cluster.membership import SAME_STACK

    tmp, state = fake_pcsd
    check = (f"mkdir -p /var/lib/pcsd && cp {tmp}/known-hosts /var/lib/pcsd/known-hosts && "
             'python3 -c "$1" prep-ha-testnet-2')

    def same_stack() -> subprocess.CompletedProcess:
        return node_tools.run(["sh", "-c", check, "sh", SAME_STACK], paths=[tmp],
                              network=True, timeout=60)

    state["versions"] = {"rhel": None, "pcs": [0, 11, 5], "pacemaker": [2, 1, 5],
                         "corosync": [3, 1, 7]}
    old = same_stack()
    assert old.returncode == 3
    assert "prep-ha-testnet-2 runs pcs 0.11.5, Pacemaker 2.1.5, this node pcs 0.12.0, " \
        "Pacemaker 3.0.0" in old.stdout
    state["versions"] = {"rhel": None, "pcs": [0, 12, 0, 2], "pacemaker": [3, 0, 0],
                         "corosync": [3, 1, 9]}
    same = same_stack()
    assert same.returncode == 0, same.stderr
    assert state["seen"] == [("/remote/get_sw_versions", "token=the-token")] * 2
    # A pcsd that does not answer is not a release mismatch: the rejoin says which it was.
    state["versions"] = b"<html>pcsd is starting</html>"
    broken = same_stack()
    assert broken.returncode == 1 and "JSONDecodeError" in broken.stderr
    # The step refuses before `pcs cluster node add`, after authenticating to the new node.
    rejoin = render_script(MODEL, hacluster_secret_id="x").split("\nrejoin() {")[1]
    assert rejoin.index('pcsd_auth_node "$node"') < rejoin.index("$SAME_STACK") \
        < rejoin.index("pcs cluster node add")
