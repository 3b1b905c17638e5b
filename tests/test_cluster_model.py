"""The cluster model and its pcs script: content, determinism, round trip, and the script's
own branches (setup guard, instance ids), run with bash."""

import dataclasses
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from prep_ha.cluster.model import CTZ_GROUP, PEER_GROUP, build_model
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
    assert fence.agent == "fence_aws"
    assert {node for node, _ in fence.host_map} == {n.name for n in m.nodes}
    assert dict(fence.params)["region"] == cfg.region
    assert [(c.resource, c.with_resource, c.score) for c in m.colocations] == [
        (CTZ_GROUP, PEER_GROUP, "-INFINITY")]
    # The recovered node must not pull the peer back: stickiness beats the preference.
    stickiness = int(dict(m.resource_defaults)["resource-stickiness"])
    assert all(int(loc.score) < stickiness for loc in m.locations)
    assert m.locations[0].node == m.nodes[0].name and m.locations[0].resource == PEER_GROUP
    # Priority on Peer is what makes priority-fencing-delay favour the peer's node.
    assert dict(m.group(PEER_GROUP).meta)["priority"] > "0"
    assert m.property("priority-fencing-delay")
    assert [r.agent for r in m.group(PEER_GROUP).members] == [
        "ocf:heartbeat:awsvip", "ocf:heartbeat:IPaddr2", "systemd:peer"]
    assert [r.agent for r in m.group(CTZ_GROUP).members] == [
        "ocf:heartbeat:awsvip", "ocf:heartbeat:IPaddr2", "systemd:ctz"]
    vips = {dict(r.params).get("secondary_private_ip") for g in m.groups for r in g.members}
    assert {cfg.peer_vip, cfg.citizen_vip} <= vips
    peer_monitor = next(o for o in m.group(PEER_GROUP).members[2].ops if o.name == "monitor")
    assert int(peer_monitor.interval.rstrip("s")) <= 10  # the guide's 1 min is too slow
    assert m.corosync.two_node and m.corosync.consensus_ms >= 1.2 * m.corosync.token_ms


def test_script_never_disables_stonith_and_never_forces_setup():
    script = script_for("mainnet")
    commands = "\n".join(ln for ln in script.splitlines() if not ln.lstrip().startswith("#"))
    assert "stonith-enabled=false" not in commands
    assert "--force" not in commands.replace("--group Peer --force", "").replace(
        "--group Ctz --force", "")
    assert "cluster destroy" not in commands
    # STONITH is configured in the same build as the resources, before the single push.
    build = script.split("build_cib() {")[1].split("\n}")[0]
    assert build.index("stonith create") < build.index("resource create")


def test_parse_reads_what_pcs_will_run_not_comments():
    script = script_for("testnet").replace(
        'pcs -f "$CIB" constraint colocation add Ctz with Peer -- -INFINITY',
        '# colocation removed')
    assert parse_script(script).colocations == ()
    tampered = script_for("testnet").replace("stonith-enabled=true", "stonith-enabled=false")
    assert parse_script(tampered).property("stonith-enabled") == "false"


def test_corosync_conf_from_pcs_has_two_links_and_two_node_quorum():
    if shutil.which("pcs") is None:
        pytest.skip("pcs is not installed (apt-get install pcs)")
    _, model = stack_model("testnet")
    conf = corosync_conf(model)
    assert "transport: knet" in conf and "token: 10000" in conf and "consensus: 12000" in conf
    assert "two_node: 1" in conf and "wait_for_all: 1" in conf
    for n in model.nodes:
        assert f"ring0_addr: {n.heartbeat_ip}" in conf
        assert f"ring1_addr: {n.service_ip}" in conf


def test_two_node_flag_must_match_node_count():
    _, model = stack_model("testnet")
    broken = dataclasses.replace(model, nodes=model.nodes[:1])
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
        "pcs": f'echo "$*" >> {log}\n[ "$1" = status ] && exit "${{PCS_STATUS_RC:-1}}"\nexit 0',
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
    _, run = fake_pcs
    proc, calls = run("setup")
    assert proc.returncode == 0, proc.stderr
    assert calls[0] == "status"
    assert calls[1].startswith("host auth prep-ha-testnet-1 addr=10.41.2.11")
    assert calls[2].startswith("cluster setup prep-ha-testnet prep-ha-testnet-1")
    assert "--force" not in " ".join(calls)
    assert calls[-2:] == ["cluster start --all --wait=300", "cluster enable --all"]


def test_setup_again_leaves_an_existing_cluster_alone(fake_pcs):
    tmp, run = fake_pcs
    (tmp / "corosync.conf").write_text("totem {\n    cluster_name: prep-ha-testnet\n}\n")
    proc, calls = run("setup", env={"PCS_STATUS_RC": "0"})
    assert proc.returncode == 0, proc.stderr
    assert "already set up" in proc.stdout
    assert not any(c.startswith(("cluster setup", "host auth")) for c in calls)


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
