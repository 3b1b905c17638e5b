"""The bootstrap Commands the real program declares (under mocks): what runs where, in what
order, with which script, and what a config change does to them."""

import json

import pytest

from components.cluster import CLOUD_INIT_DONE
from prep_ha.cluster.model import build_model
from prep_ha.cluster.pcs import model_digest, parse_script
from prep_ha.config import load_stack_file
from tests.pulumi_mocks import PROJECT_DIR, run_stack

COMMAND = "command:remote:Command"
INSTANCE = "aws:ec2/instance:Instance"


def commands(run):
    return {c.name: c for c in run.of_type(COMMAND)}


@pytest.fixture(scope="module", params=["testnet", "mainnet"])
def stack_run(request):
    stack = request.param
    cfg = load_stack_file(str(PROJECT_DIR / f"Pulumi.{stack}.yaml"), stack=stack)
    return cfg, run_stack(stack)


def test_commands_wait_setup_then_push_on_node1(stack_run):
    cfg, run = stack_run
    cmds = commands(run)
    assert set(cmds) == {"pacemaker-corosync-setup", "pacemaker-cib-push", "pacemaker-health",
                         *(f"pacemaker-{n}-ready" for n in cfg.node_names),
                         *(f"pacemaker-{n}-membership" for n in cfg.node_names)}
    node1_host = run.outputs["managementIps"][cfg.node_names[0]]
    for name, cmd in cmds.items():
        conn = cmd.inputs["connection"]
        assert conn["user"] == "admin"
        assert cmd.is_secret("connection.privateKey") or cmd.is_secret("connection")
        if not name.endswith(("-ready", "-membership")):
            assert conn["host"] == node1_host
    hosts = {cmds[f"pacemaker-{n}-ready"].inputs["connection"]["host"]
             for n in cfg.node_names}
    assert hosts == set(run.outputs["managementIps"].values())


def test_script_is_the_rendered_model_and_ids_come_from_the_instances(stack_run):
    cfg, run = stack_run
    cmds = commands(run)
    setup, push = cmds["pacemaker-corosync-setup"], cmds["pacemaker-cib-push"]
    model = build_model(cfg)
    assert setup.inputs["stdin"] == push.inputs["stdin"]
    assert parse_script(push.inputs["stdin"]) == model
    assert setup.inputs["create"] == "sudo bash -s setup"
    ids = [i.id for i in sorted(run.of_type(INSTANCE), key=lambda r: r.name)
           if "prep-ha:node" in i.inputs["tags"]]
    # Multi-AZ: the overlay IP's route tables too, exactly those the overlay routes are in.
    overlay = [r.inputs["routeTableId"] for r in run.of_type("aws:ec2/route:Route")
               if r.inputs.get("destinationCidrBlock") == f"{cfg.peer_vip}/32"]
    assert bool(overlay) is cfg.multi_az
    tables = [f"PREP_HA_ROUTE_TABLES={','.join(overlay)}"] if overlay else []
    assert push.inputs["create"] == " ".join(
        ["sudo env", *(f"PREP_HA_INSTANCE_ID_{n}={i}" for n, i in enumerate(ids, 1)), *tables,
         "bash -s push"])
    assert push.inputs["update"] == push.inputs["create"]
    assert push.inputs["triggers"] == [model_digest(model)]


def test_up_ends_with_the_health_check_after_every_push(stack_run):
    cfg, run = stack_run
    cmds = commands(run)
    health, push = cmds["pacemaker-health"], cmds["pacemaker-cib-push"]
    assert health.inputs["create"] == health.inputs["update"] == "sudo bash -s health"
    assert health.inputs["stdin"] == push.inputs["stdin"]
    assert health.inputs["triggers"][0] == push.inputs["triggers"][0]


def test_node_readiness_fails_on_cloud_init_errors_and_names_what_is_missing(stack_run):
    _, run = stack_run
    ready = [c for name, c in commands(run).items() if name.endswith("-ready")]
    for cmd in ready:
        text = cmd.inputs["create"]
        assert text.startswith("set -u\n" + CLOUD_INIT_DONE)
        for what in ("prep-ha-network", "prep-ha-hacluster-password", "pcsd", "/app/icon"):
            assert what in text


# A cloud-init status as the node's /run/cloud-init holds it after its first boot.
STAGES = ("init-local", "init", "modules-config", "modules-final")
NO_SYSTEMD = """#!/bin/sh
# The chroot runs no systemd: cloud-init's status asks it for its environment and units.
[ "$1" = show-environment ] && exit 0
printf 'ActiveState=inactive\\nUnitFileState=enabled\\nSubState=dead\\nMainPID=0\\n'
"""


def cloud_init_verdict(tools, tmp_path, snippet: str, *, warnings=(), errors=()):
    """`snippet` run by the nodes' bash against the nodes' cloud-init (25.1) after a first
    boot that ended with these recoverable warnings or errors."""
    v1 = {stage: {"errors": [], "recoverable_errors": {}, "start": i, "finished": i + 0.5}
          for i, stage in enumerate(STAGES)}
    v1["init"]["recoverable_errors"] = {"WARNING": list(warnings)} if warnings else {}
    v1["modules-final"]["errors"] = list(errors)
    (tmp_path / "status.json").write_text(json.dumps(
        {"v1": {**v1, "datasource": "DataSourceEc2Local", "stage": None}}))
    (tmp_path / "result.json").write_text(json.dumps(
        {"v1": {"datasource": "DataSourceEc2Local", "errors": list(errors)}}))
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name, body in (("systemctl", NO_SYSTEMD), ("sudo", '#!/bin/sh\nexec "$@"\n')):
        (bindir / name).write_text(body)
        (bindir / name).chmod(0o755)
    prepare = (f"mkdir -p /run/cloud-init && cp {tmp_path}/status.json {tmp_path}/result.json "
               "/run/cloud-init/ && touch /run/cloud-init/enabled\n")
    return tools.run(["bash", "-c", prepare + snippet], paths=[tmp_path], timeout=60,
                     env={"PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin"})


def test_node_readiness_accepts_a_degraded_cloud_init_and_stops_on_a_failed_one(
        tmp_path, node_tools):
    """Debian 13's cloud-init exits 2 ("degraded done") on any warning: ready, warnings shown.
    An error still stops the bootstrap, naming it."""
    warned = cloud_init_verdict(node_tools, tmp_path, CLOUD_INIT_DONE + "echo READY",
                                warnings=["Deprecated cloud-config provided: chpasswd.list"])
    assert warned.returncode == 0, warned.stderr
    assert warned.stdout.strip().endswith("READY")
    assert "degraded, not failed" in warned.stderr and "chpasswd.list" in warned.stderr
    failed = cloud_init_verdict(node_tools, tmp_path, CLOUD_INIT_DONE + "echo READY",
                                errors=["('scripts_user', RuntimeError('runcmd failed'))"])
    assert failed.returncode == 1 and "READY" not in failed.stdout
    assert "did not finish cleanly" in failed.stderr and "runcmd failed" in failed.stderr
    # The control: the check the bootstrap had before stops on the warning alone.
    before = ("if ! out=$(sudo cloud-init status --wait --long 2>&1); then exit 1; fi\n"
              "echo READY")
    assert cloud_init_verdict(node_tools, tmp_path, before,
                              warnings=["Deprecated"]).returncode == 1


def test_destroy_stops_the_cluster_and_setup_is_never_replaced(stack_run):
    _, run = stack_run
    setup = commands(run)["pacemaker-corosync-setup"]
    assert setup.inputs["delete"].startswith("sudo pcs cluster stop --all")
    # triggers would replace the Command, and a replacement runs `delete` on a live cluster.
    assert "triggers" not in setup.inputs
    assert setup.inputs["update"] == setup.inputs["create"]


def test_a_model_change_changes_the_push_trigger_and_script():
    base = commands(run_stack("testnet"))["pacemaker-cib-push"]
    moved = commands(run_stack("testnet", {"peerVip": "10.41.1.150"}))["pacemaker-cib-push"]
    assert moved.inputs["triggers"] != base.inputs["triggers"]
    assert "secondary_private_ip=10.41.1.150" in moved.inputs["stdin"]
    same = commands(run_stack("testnet"))["pacemaker-cib-push"]
    assert same.inputs["triggers"] == base.inputs["triggers"]
    assert same.inputs["stdin"] == base.inputs["stdin"]


def test_a_replaced_node_is_retired_by_the_other_node_first_then_rejoins(stack_run):
    cfg, run = stack_run
    cmds = commands(run)
    hosts = run.outputs["managementIps"]
    ids = run.outputs["instanceIds"]
    setup, push = cmds["pacemaker-corosync-setup"], cmds["pacemaker-cib-push"]
    for node, other in (cfg.node_names, cfg.node_names[::-1]):
        member = cmds[f"pacemaker-{node}-membership"]
        assert member.inputs["connection"]["host"] == hosts[other]
        assert member.inputs["create"] == f"sudo bash -s rejoin {node}"
        assert member.inputs["delete"] == f"sudo bash -s retire {node}"
        assert member.inputs["stdin"] == push.inputs["stdin"]
        # A new instance id replaces the membership: delete (retire) before create (rejoin).
        assert member.inputs["triggers"] == [ids[node]]
        assert member.delete_before_replace
        # `pulumi destroy` deletes the setup too: no retire of a cluster being torn down.
        assert member.deleted_with == setup.key
        assert member.key in push.depends_on
        assert cmds[f"pacemaker-{node}-ready"].inputs["triggers"] == [ids[node]]
    # The instance goes first (its primary ENI attaches to one instance at a time), and
    # the health check runs again after a replacement.
    instances = [i for i in run.of_type(INSTANCE) if "prep-ha:node" in i.inputs["tags"]]
    assert all(i.delete_before_replace for i in instances)
    assert cmds["pacemaker-health"].inputs["triggers"][1:] == [ids[n] for n in cfg.node_names]
