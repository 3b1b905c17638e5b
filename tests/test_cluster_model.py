"""The cluster model and its pcs script: content, determinism, round trip, and the script's
own branches (setup guard, instance ids), run with bash."""

import dataclasses
import os
import stat
import subprocess
from pathlib import Path

import pytest

from prep_ha.cluster.model import (
    ALERT_AGENT,
    AWSVIP_AGENT,
    CTZ_GROUP,
    FENCE_AGENT,
    FENCE_RESTART,
    HOLDS_PEER,
    OVERLAY_AGENT,
    PEER_GROUP,
    ROUTE_TABLES_ENV,
    build_model,
)
from prep_ha.cluster.pcs import corosync_conf, parse_script, render_script, setup_command
from prep_ha.config import load_stack_file

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("testnet", "mainnet")


def stack_model(stack):
    cfg = load_stack_file(str(ROOT / f"Pulumi.{stack}.yaml"), stack=stack)
    return cfg, build_model(cfg)


def script_for(stack):
    cfg, model = stack_model(stack)
    return render_script(model, hacluster_secret_id=cfg.hacluster_secret_name)


@pytest.mark.parametrize("stack", STACKS)
def test_render_is_deterministic_and_parses_back_into_the_same_model(stack):
    _, model = stack_model(stack)
    script = script_for(stack)
    assert script == script_for(stack)
    assert parse_script(script) == model


def test_stacks_render_different_clusters():
    assert script_for("testnet") != script_for("mainnet")
    assert "region=ap-northeast-2" in script_for("mainnet")


@pytest.mark.parametrize("stack", STACKS)
def test_model_holds_the_safety_rules(stack):
    cfg, m = stack_model(stack)
    assert m.property("stonith-enabled") == "true"
    (fence,) = m.fence_devices
    assert fence.agent == FENCE_AGENT
    # A failed device monitor (an EC2 API outage) is alerted, never a restart or a ban.
    assert [(o.name, o.on_fail) for o in fence.ops] == [("monitor", "ignore")]
    assert int(m.property("stonith-max-attempts")) >= 10000
    assert {node for node, _ in fence.host_map} == {n.name for n in m.nodes}
    assert dict(fence.params)["region"] == cfg.region
    assert [(c.resource, c.with_resource, c.score) for c in m.colocations] == [
        (CTZ_GROUP, PEER_GROUP, "-INFINITY")]
    # The recovered node must not pull the peer back: stickiness beats the preference.
    stickiness = int(dict(m.resource_defaults)["resource-stickiness"])
    assert all(int(loc.score) < stickiness for loc in m.locations)
    assert m.locations[0].node == m.nodes[0].name and m.locations[0].resource == PEER_GROUP
    # A split is decided by the arbiter's vote, given to the partition holding the peer VIP.
    assert m.corosync.qdevice is not None and not m.corosync.two_node
    assert m.corosync.qdevice.host == cfg.arbiter_ip
    assert m.corosync.qdevice.algorithm == "ffsplit"
    assert dict(m.corosync.qdevice.heuristics) == {"peer": HOLDS_PEER}
    assert m.property("priority-fencing-delay") is None
    # Fencing ends when the node is off; the alert powers it on again.
    assert m.property("stonith-action") == "off"
    assert [a.path for a in m.alerts] == [FENCE_RESTART, ALERT_AGENT]
    # The peer's service resource, whose start/stop prep-ha-alert reports as Peer start/stop.
    assert m.group(PEER_GROUP).members[-1].id == "peer-service"
    assert m.property("no-quorum-policy") == "freeze"
    _assert_addresses(cfg, m)
    peer_monitor = next(o for o in m.group(PEER_GROUP).members[-1].ops if o.name == "monitor")
    assert int(peer_monitor.interval.rstrip("s")) <= 2  # the guide's 1 min is too slow
    assert m.corosync.token_ms == cfg.corosync_token_ms
    # Two nodes: consensus between join (50 ms) and the token (corosync.conf(5)).
    assert 50 < m.corosync.consensus_ms < m.corosync.token_ms
    # Both links carry every packet, so a cut link costs nothing and a paused node's links
    # are not declared dead before its token is.
    assert m.corosync.knet is not None and m.corosync.knet.link_mode == "active"
    assert m.corosync.knet.ping_timeout_ms == m.corosync.token_ms
    assert m.corosync.knet.pong_count == 1 and m.corosync.token_retransmits == 10
    # The arbiter's explicit vote would leave corosync expecting 2 votes: a lone node and the
    # arbiter would be quorate and fence the partner at a cold start.
    assert m.corosync.expected_votes == 3



def _assert_addresses(cfg, m) -> None:
    """Single-AZ: each role's VIP is a secondary IP (awsvip) raised by IPaddr2. Multi-AZ: the
    peer's overlay IP is routed to its node (aws-vpc-move-ip) in every table the stack passes,
    and the citizen has no address of its own."""
    peer, ctz = m.group(PEER_GROUP).members, m.group(CTZ_GROUP).members
    if not cfg.multi_az:
        assert [r.agent for r in peer] == [AWSVIP_AGENT, "ocf:heartbeat:IPaddr2", "systemd:peer"]
        assert [r.agent for r in ctz] == [AWSVIP_AGENT, "ocf:heartbeat:IPaddr2", "systemd:ctz"]
        vips = {dict(r.params).get("secondary_private_ip") for g in m.groups for r in g.members}
        assert {cfg.peer_vip, cfg.citizen_vip} <= vips
        assert {dict(g.members[0].params)["region"] for g in m.groups} == {cfg.region}
        assert m.environment == ("PREP_HA_INSTANCE_ID_1", "PREP_HA_INSTANCE_ID_2")
        return
    assert [r.agent for r in peer] == [OVERLAY_AGENT, "systemd:peer"]
    assert [r.agent for r in ctz] == ["systemd:ctz"]
    params = dict(peer[0].params)
    assert params["ip"] == cfg.peer_vip and params["region"] == cfg.region
    assert params["interface"] == "prep-ha-service"  # cloud-init/files/prep-ha-network
    assert params["lookup_type"] == "NetworkInterfaceId"
    assert params["routing_table"] == f"${{{ROUTE_TABLES_ENV}}}"
    assert m.environment[-1] == ROUTE_TABLES_ENV
    # The regular monitor must not call the API (an outage is no lost address).
    assert params.get("monapi", "false") == "false"

def test_without_the_arbiter_the_node_holding_peer_wins_the_fence_race():
    cfg = dataclasses.replace(stack_model("testnet")[0], quorum_arbiter=False)
    m = build_model(cfg)
    assert m.corosync.two_node and m.corosync.qdevice is None
    # Priority on Peer is what makes priority-fencing-delay favour the peer's node.
    assert dict(m.group(PEER_GROUP).meta)["priority"] > "0"
    assert m.property("priority-fencing-delay") == "15s"
    assert parse_script(render_script(m, hacluster_secret_id="x")) == m


def test_script_never_disables_stonith_and_never_forces_setup():
    script = script_for("mainnet")
    commands = "\n".join(ln for ln in script.splitlines() if not ln.lstrip().startswith("#"))
    assert "stonith-enabled=false" not in commands
    # --force only where pcs looks for an agent on the wrong machine (systemd units and the
    # node's own agents exist on the nodes only), and to take a node that is down (and
    # checked to be) out of the cluster (retire/rejoin).
    forced = [ln.strip() for ln in commands.splitlines() if "--force" in ln]
    created = ("resource create", "stonith create")
    assert {ln for ln in forced if not any(c in ln for c in created)} == {
        'pcs cluster node remove "$node" --skip-offline --force ;;',
        'pcs cluster node remove "$node" --skip-offline --force'}
    assert all(ln.endswith("--force") and any(a in ln for a in ("systemd:", AWSVIP_AGENT,
                                                                 FENCE_AGENT))
               for ln in forced if any(c in ln for c in created))
    assert "cluster destroy" not in commands
    # STONITH is configured in the same build as the resources, before the single push.
    build = script.split("build_cib() {")[1].split("\n}")[0]
    assert build.index("stonith create") < build.index("resource create")


def test_parse_reads_what_pcs_will_run_not_comments():
    script = script_for("testnet").replace(
        'pcs -f "$CIB" constraint colocation add Ctz with Peer score=-INFINITY '
        'id=colocation-Ctz-Peer--INFINITY',
        '# colocation removed')
    assert parse_script(script).colocations == ()
    tampered = script_for("testnet").replace("stonith-enabled=true", "stonith-enabled=false")
    assert parse_script(tampered).property("stonith-enabled") == "false"


def test_corosync_conf_from_pcs_has_two_links_and_the_stack_token(node_tools):
    cfg, model = stack_model("testnet")
    conf = corosync_conf(model)
    token = cfg.corosync_token_ms
    assert "transport: knet" in conf and f"token: {token}" in conf
    assert f"consensus: {model.corosync.consensus_ms}" in conf
    assert conf.count("knet_pong_count: 1") == 2 and "link_mode: active" in conf
    assert conf.count(f"knet_ping_timeout: {token}") == 2
    assert "token_retransmits_before_loss_const: 10" in conf
    assert "expected_votes: 3" in conf.split("quorum {")[1]
    # As `pcs cluster setup` then `pcs quorum device add` write it: the arbiter replaces
    # two_node; wait_for_all stays.
    assert "two_node" not in conf and "wait_for_all: 1" in conf
    assert "model: net" in conf and f"host: {cfg.arbiter_ip}" in conf
    for n in model.nodes:
        assert f"ring0_addr: {n.heartbeat_ip}" in conf
        assert f"ring1_addr: {n.service_ip}" in conf
    # Without the arbiter pcs writes two_node itself.
    lone = dataclasses.replace(model, corosync=dataclasses.replace(
        model.corosync, qdevice=None, two_node=True))
    assert "two_node: 1" in corosync_conf(lone)


def test_the_nodes_pcs_builds_the_cib_without_a_deprecated_form(node_tools, tmp_path):
    """pcs 0.12 (Debian 13) deprecates `resource create --group`, a bare colocation score and
    --wait on disable/enable; the script uses none of them, and the CIB is the guide's: two
    groups of three, the citizen kept off the peer's node under the id pcs always gave it."""
    script = tmp_path / "bootstrap.sh"
    script.write_text(script_for("testnet"))
    cib = tmp_path / "cib.xml"
    cib.write_text(node_tools.run(["cibadmin", "--empty"]).stdout)
    _, model = stack_model("testnet")
    ids = {n.instance_id_env: f"i-{n.node_id:017x}" for n in model.nodes}
    built = node_tools.run(["bash", str(script), "build-cib", str(cib)], env=ids,
                           paths=[tmp_path])
    assert built.returncode == 0, built.stderr
    assert "Deprecation Warning" not in built.stderr + built.stdout, built.stderr
    xml = node_tools.run(["cibadmin", "--query", "--scope", "configuration"],
                         env={"CIB_file": str(cib)}, paths=[tmp_path]).stdout
    import xml.etree.ElementTree as ET
    root = ET.fromstring(xml)
    groups = {g.get("id"): [r.get("id") for r in g.findall("primitive")]
              for g in root.iter("group")}
    assert groups == {"Peer": ["peer-awsvip", "peer-ip", "peer-service"],
                      "Ctz": ["ctz-awsvip", "ctz-ip", "ctz-service"]}
    [col] = root.iter("rsc_colocation")
    assert (col.get("id"), col.get("rsc"), col.get("with-rsc"), col.get("score")) == \
        ("colocation-Ctz-Peer--INFINITY", "Ctz", "Peer", "-INFINITY")


def test_two_node_flag_must_match_node_count_and_quorum_device():
    _, model = stack_model("testnet")
    for broken in (dataclasses.replace(model, corosync=dataclasses.replace(
                       model.corosync, two_node=True)),
                   dataclasses.replace(model, corosync=dataclasses.replace(
                       model.corosync, qdevice=None))):
        with pytest.raises(ValueError, match="two_node"):
            setup_command(broken)


# --- the script's own shell logic, with pcs replaced by a recorder --------------------------

@pytest.fixture
def fake_pcs(tmp_path):
    """A `pcs` on PATH that logs its arguments; `pcs status` answers as PCS_STATUS_RC says."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "pcs.log"
    for tool, body in {
        # `host auth` reads the password from stdin, as the real pcs does without -p.
        # `cluster setup` writes the quorum section as pcs does (the rest is left out).
        "pcs": f'echo "$*" >> {log}\n[ "$1" = status ] && exit "${{PCS_STATUS_RC:-1}}"\n'
               '[ "$1 $2" = "host auth" ] && cat >/dev/null\n'
               '[ "$1 $2" = "cluster setup" ] && printf "quorum {\\n    provider: '
               'corosync_votequorum\\n    wait_for_all: 1\\n}\\n" > "$COROSYNC_CONF"\n'
               'exit 0',
        "prep-ha-secret": "echo not-a-real-password",
    }.items():
        path = bindir / tool
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    script = tmp_path / "bootstrap.sh"
    text = script_for("testnet").replace("/usr/local/sbin/prep-ha-secret",
                                         str(bindir / "prep-ha-secret"))
    script.write_text(text)

    def run(*args, env=None):
        full = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}",
                "COROSYNC_CONF": str(tmp_path / "corosync.conf"), **(env or {})}
        proc = subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                              env=full, check=False)
        calls = log.read_text().splitlines() if log.exists() else []
        return proc, calls

    return tmp_path, run


def test_setup_on_fresh_nodes_authenticates_and_sets_up_without_force(fake_pcs):
    tmp, run = fake_pcs
    proc, calls = run("setup")
    assert proc.returncode == 0, proc.stderr
    assert calls[0] == "status"
    assert calls[1].startswith("host auth prep-ha-testnet-1 addr=10.41.2.11")
    assert calls[2].startswith("cluster setup prep-ha-testnet prep-ha-testnet-1")
    assert "--force" not in " ".join(calls)
    assert calls[3:5] == ["cluster start --all --wait=300", "cluster enable --all"]
    assert calls[5] == "host auth 10.41.4.10 -u hacluster"  # the password on stdin
    assert calls[6] == ("quorum device add timeout=12000 model net host=10.41.4.10 "
                        "algorithm=ffsplit heuristics mode=sync "
                        "exec_peer=/usr/local/sbin/prep-ha-holds-peer")
    # Then the expected votes, which pcs cannot set: written, sent to both nodes, reloaded.
    assert calls[7:] == ["cluster sync corosync", "cluster reload corosync"]
    conf = (tmp / "corosync.conf").read_text()
    assert "    provider: corosync_votequorum\n    expected_votes: 3\n" in conf


def test_setup_again_leaves_an_existing_cluster_alone(fake_pcs):
    tmp, run = fake_pcs
    (tmp / "corosync.conf").write_text("totem {\n    cluster_name: prep-ha-testnet\n}\n"
                                       "quorum {\n    expected_votes: 3\n"
                                       "    device {\n        model: net\n")
    proc, calls = run("setup", env={"PCS_STATUS_RC": "0"})
    assert proc.returncode == 0, proc.stderr
    assert "already set up" in proc.stdout and "quorum device already" in proc.stdout
    assert "expected_votes 3 already set" in proc.stdout
    assert not any(c.startswith(("cluster setup", "host auth", "cluster sync",
                                 "cluster reload")) for c in calls)


def test_setup_refuses_to_touch_a_foreign_running_cluster(fake_pcs):
    tmp, run = fake_pcs
    (tmp / "corosync.conf").write_text("totem {\n    cluster_name: someone-else\n}\n")
    proc, calls = run("setup", env={"PCS_STATUS_RC": "0"})
    assert proc.returncode == 1
    assert "refusing" in proc.stderr
    assert calls == ["status"]


def test_build_cib_names_the_missing_instance_id(fake_pcs):
    _, run = fake_pcs
    proc, calls = run("build-cib", "/nonexistent.xml")
    assert proc.returncode != 0
    assert "PREP_HA_INSTANCE_ID_1" in proc.stderr and "prep-ha-testnet-1" in proc.stderr
    assert calls == []


def test_setup_adds_the_arbiter_to_a_cluster_set_up_without_one(fake_pcs):
    tmp, run = fake_pcs
    (tmp / "corosync.conf").write_text("totem {\n    cluster_name: prep-ha-testnet\n}\n")
    proc, calls = run("setup", env={"PCS_STATUS_RC": "0"})
    assert proc.returncode == 0, proc.stderr
    assert not any(c.startswith("cluster setup") for c in calls)
    assert calls[-3].startswith("quorum device add timeout=12000 model net host=10.41.4.10")
