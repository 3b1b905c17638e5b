"""Failover scenarios on Pacemaker's own scheduler: the rendered script's `pcs -f` part builds
the CIB for real, crm_verify checks it, crm_simulate plays each failure."""

import pytest

from prep_ha.cluster.model import CTZ_GROUP, PEER_GROUP
from prep_ha.cluster.simulate import (
    Simulator,
    fence_key,
    fencing_failure_report,
    members,
    peer_monitor_failures,
)
from tests.test_cluster_model import stack_model

pytestmark = pytest.mark.usefixtures("node_tools")


@pytest.fixture(scope="module")
def sim():
    _, model = stack_model("testnet")
    with Simulator(model) as s:
        yield s


def where(sim, t, group):
    return {n for r in members(sim.model, group) for n in t.after.get(r, ())}


def assert_peer_never_twice(sim, t):
    for rsc in members(sim.model, PEER_GROUP):
        assert len(t.before.get(rsc, ())) <= 1 and len(t.after.get(rsc, ())) <= 1
    assert not (where(sim, t, PEER_GROUP) & where(sim, t, CTZ_GROUP))


@pytest.mark.parametrize("stack", ["testnet", "mainnet"])
def test_both_nodes_up(stack):
    _, model = stack_model(stack)
    with Simulator(model) as s:
        t = s.steady()
        assert where(s, t, PEER_GROUP) == {s.node1}
        assert where(s, t, CTZ_GROUP) == {s.node2}
        assert t.after.get("fence-aws") in ((s.node1,), (s.node2,))
        assert t.fenced() == []


def test_node1_fails_is_fenced_before_peer_moves(sim):
    t = sim.simulate(sim.steady().output_cib, "--node-fail", sim.node1)
    assert t.fenced() == [sim.node1]
    fence = t.index("fence", sim.node1)
    for rsc in members(sim.model, PEER_GROUP):
        assert t.index("start", rsc, sim.node2) > fence
        assert t.depends_on(f"{rsc}_start_0", fence_key(sim.model, sim.node1))
        # The citizen releases the shared chain volume before the peer starts there.
        assert t.depends_on(f"{rsc}_start_0", "ctz-service_stop_0")
    assert where(sim, t, PEER_GROUP) == {sim.node2}
    assert where(sim, t, CTZ_GROUP) == set()
    assert sim.node1 not in t.online_after
    assert_peer_never_twice(sim, t)


def test_node2_fails_is_fenced_and_peer_is_untouched(sim):
    t = sim.simulate(sim.steady().output_cib, "--node-fail", sim.node2)
    assert t.fenced() == [sim.node2]
    peer = set(members(sim.model, PEER_GROUP))
    assert not [s for s in t.steps if s.target in peer and s.kind in ("stop", "start")]
    assert where(sim, t, PEER_GROUP) == {sim.node1}
    assert where(sim, t, CTZ_GROUP) == set()


def test_peer_service_failure_restarts_in_place_then_moves(sim):
    first, second = peer_monitor_failures(sim, 2)
    # First failure: restart on node 1, nothing else moves, nobody is fenced.
    assert [(s.kind, s.target, s.node) for s in first.steps if s.kind != "monitor"] == [
        ("stop", "peer-service", sim.node1), ("start", "peer-service", sim.node1)]
    assert where(sim, first, PEER_GROUP) == {sim.node1}
    assert where(sim, first, CTZ_GROUP) == {sim.node2}
    # Second failure reaches migration-threshold: Peer moves, the citizen swaps places.
    assert second.fenced() == []
    assert where(sim, second, PEER_GROUP) == {sim.node2}
    assert where(sim, second, CTZ_GROUP) == {sim.node1}
    assert second.index("stop", "ctz-service", sim.node2) < second.index(
        "start", "peer-service", sim.node2)
    assert second.index("stop", "peer-awsvip", sim.node1) < second.index(
        "start", "ctz-awsvip", sim.node1)
    for t in (first, second):
        assert_peer_never_twice(sim, t)


def test_fencing_failure_moves_nothing(sim):
    t, blocked = fencing_failure_report(sim.model, sim)
    peer_starts = {f"{r}_start_0" for r in members(sim.model, PEER_GROUP)}
    assert peer_starts <= blocked
    # The citizen's stop does not wait for fencing: node 2 ends idle, never running both.
    assert "ctz-service_stop_0" not in blocked


def test_node1_returns_after_failover_peer_stays(sim):
    failed = sim.simulate(sim.steady().output_cib, "--node-fail", sim.node1)
    back = sim.simulate(failed.output_cib, "--node-up", sim.node1)
    assert back.fenced() == []
    assert where(sim, back, PEER_GROUP) == {sim.node2}
    assert where(sim, back, CTZ_GROUP) == {sim.node1}
    peer = set(members(sim.model, PEER_GROUP))
    assert not [s for s in back.steps if s.target in peer and s.kind in ("stop", "start")]


def test_node1_standby_is_a_clean_move_without_fencing(sim):
    cib = sim.set_node_attribute(sim.steady().output_cib, sim.node1, "standby", "on")
    t = sim.simulate(cib)
    assert t.fenced() == []
    assert where(sim, t, PEER_GROUP) == {sim.node2}
    assert where(sim, t, CTZ_GROUP) == set()
    assert t.index("stop", "peer-service", sim.node1) < t.index("start", "peer-awsvip", sim.node2)
    assert_peer_never_twice(sim, t)


def test_simulate_command_prints_every_scenario(capsys):
    from prep_ha.__main__ import main

    assert main(["simulate", "--stack", "testnet"]) == 0
    out = capsys.readouterr().out
    for title in ("both nodes up", "node 1 fails", "node 2 fails", "peer service fails twice",
                  "node 1 returns after a failover", "node 1 in standby", "fencing node 1 fails"):
        assert f"== {title}" in out
    assert "fence prep-ha-testnet-1 through the EC2 API" in out


def health(sim, cib):
    """The bootstrap script's own `health` step, with the nodes' crm_mon and python3 reading
    a simulated CIB."""
    return sim.tools.run(["bash", str(sim.dir / "bootstrap.sh"), "health"],
                         env={"CIB_file": str(cib), "HEALTH_TIMEOUT": "0"}, paths=[sim.dir],
                         timeout=60)


def test_health_passes_on_a_healthy_pair(sim):
    result = health(sim, sim.steady().output_cib)
    assert result.returncode == 0, result.stderr
    assert "healthy" in result.stdout


def test_health_fails_naming_a_lost_node_and_a_stopped_group(sim):
    t = sim.simulate(sim.steady().output_cib, "--node-fail", sim.node1)
    result = health(sim, t.output_cib)
    assert result.returncode == 1
    assert f"node {sim.node1} is not online" in result.stderr
    assert "group Ctz is not started on one node" in result.stderr


def test_health_fails_naming_a_failed_action(sim):
    first = peer_monitor_failures(sim, 1)[-1]
    result = health(sim, first.output_cib)
    assert result.returncode == 1
    assert "failed action: peer-service_monitor_2000" in result.stderr


def test_split_side_without_the_arbiters_vote_neither_fences_nor_starts_peer(sim):
    t = sim.simulate(sim.steady().output_cib, "--node-fail", sim.node1, quorum=False)
    assert t.fenced() == []
    assert sim.node2 not in where(sim, t, PEER_GROUP)  # still node 1's, as far as it knows
    assert not any(s.kind == "start" and s.node == sim.node2 for s in t.steps)
    # Stops still run without quorum: node 2 releases its citizen, as the order asks
    # before Peer could ever start there (it never does).
    assert sim.node2 not in where(sim, t, CTZ_GROUP)


def test_split_side_with_the_arbiters_vote_fences_the_standby_off_and_keeps_peer(sim):
    t = sim.simulate(sim.steady().output_cib, "--node-fail", sim.node2)
    assert t.fenced() == [sim.node2]
    assert [s.fence_action for s in t.steps if s.kind == "fence"] == ["off"]
    assert where(sim, t, PEER_GROUP) == {sim.node1}
    assert not any(s.target.startswith("peer") for s in t.steps if s.kind in ("stop", "start"))


def test_arbiter_lost_then_split_keeps_peer_where_it_runs_and_fences_nobody(sim):
    t = sim.simulate(sim.steady().output_cib, "--node-fail", sim.node2, quorum=False)
    assert t.fenced() == []
    assert where(sim, t, PEER_GROUP) == {sim.node1}


def test_the_nodes_pacemaker_drops_the_transition_when_events_are_injected_in_one_call(sim):
    """Why Simulator.simulate makes two calls: on the nodes' Pacemaker (2.1.8 and later) one
    call with an injected event prints no <transition> and no revised status, exit code 0.
    The day this fails, Pacemaker fixed it and the two calls may become one again."""
    steady = sim.steady().output_cib
    xml = sim.run(["crm_simulate", "--xml-file", str(steady), "--node-fail", sim.node1,
                   "--simulate", "--output-as", "xml"])
    assert "<modifications>" in xml or "<modifications/>" in xml or "modify_node" in xml
    assert "<transition" not in xml and "revised_cluster_status" not in xml
    # The same scenario in two calls does have the fence and the takeover.
    two = sim.simulate(steady, "--node-fail", sim.node1)
    assert two.fenced() == [sim.node1] and two.steps
