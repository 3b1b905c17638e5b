"""The bootstrap Commands the real program declares (under mocks): what runs where, in what
order, with which script, and what a config change does to them."""

import pytest

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
    assert push.inputs["create"] == (
        "sudo env " + " ".join(f"PREP_HA_INSTANCE_ID_{n}={i}" for n, i in enumerate(ids, 1))
        + " bash -s push")
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
        # The exit status of cloud-init is checked, not dropped with `;`.
        assert "if ! out=$(sudo cloud-init status --wait --long" in text
        for what in ("prep-ha-network", "prep-ha-hacluster-password", "pcsd", "/app/icon"):
            assert what in text


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
