"""The real-node lab: two Debian 12 nodes booted from the product's own user-data, the cluster
set up by the program's own bootstrap Commands over SSH, then every defect the real node path
had and every drill case, on those nodes. No timing assertions: CI machines vary.

The lab comes up once for the module (about 3 minutes after the image is cached).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lab.bootstrap import run_commands
from lab.cluster import Lab, down, missing_tools, running_lab
from lab.drill import Drill
from lab.netns import namespaces
from lab.node import exec_in, exec_proc
from lab.observe import roles_on
from prep_ha.cluster.model import build_model
from prep_ha.cluster.pcs import corosync_conf
from prep_ha.config import load_stack_file

ROOT = Path(__file__).resolve().parent.parent
CFG = load_stack_file(str(ROOT / "Pulumi.testnet.yaml"), stack="testnet")
NODE1, NODE2 = CFG.node_names
VIPS = (CFG.peer_vip, CFG.citizen_vip)

pytestmark = pytest.mark.lab


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (namespaces, nspawn, loop devices)"
    if missing := missing_tools():
        return f"the lab needs {', '.join(missing)} (bash .ci/run installs them)"
    return None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if reason := _skip_reason():
        pytest.skip(reason)
    with running_lab(Lab(CFG, tmp_path_factory.mktemp("lab") / "run")) as running:
        yield running


def peer_node(lab: Lab):
    status = lab.status()
    assert status is not None
    return lab.node(status.where("peer-service")[0])


def test_nodes_boot_from_the_products_user_data_with_cloud_init_clean(lab):
    deployment = lab.deployment()
    for spec in lab.nodes:
        status = exec_in(spec, "cloud-init", "status", "--long")
        assert "status: done" in status and "DataSourceEc2Local" in status, status
        assert exec_proc(spec, "systemctl", "is-system-running").stdout.strip() == "running", \
            exec_in(spec, "systemctl", "--failed", "--no-legend", check=False)
        # The user-data cloud-init ran is the one the program declared for this instance
        # (gzip-compressed, as EC2 holds it).
        seen = exec_in(spec, "zcat", "-f", "/var/lib/cloud/instance/user-data.txt")
        assert seen == deployment.node(spec.name).user_data
        nics = exec_in(spec, "ip", "-br", "link")
        assert all(name in nics for name in ("ens5", "ens6", "ens7"))
        assert exec_in(spec, "mountpoint", "/app/icon").startswith("/app/icon is a mountpoint")


def test_bootstrap_commands_ran_over_ssh_in_order_and_end_healthy(lab):
    names = [r.name for r in lab.command_runs]
    assert names == [f"pacemaker-{NODE1}-ready", f"pacemaker-{NODE2}-ready",
                     "pacemaker-corosync-setup", "pacemaker-cib-push", "pacemaker-health"]
    assert "healthy" in lab.command_runs[-1].stdout
    assert lab.healthy()
    text = lab.pcs_status()
    assert f"Online: [ {NODE1} {NODE2} ]" in text and "stonith:fence_aws" in text


def test_nodes_run_the_corosync_conf_pcs_setup_wrote_through_pcsd(lab):
    expected = corosync_conf(build_model(CFG))
    for spec in lab.nodes:
        conf = exec_in(spec, "cat", "/etc/corosync/corosync.conf")
        assert [ln for ln in conf.splitlines() if "cluster_uuid" not in ln] == \
            expected.splitlines()
        assert exec_in(spec, "hostname").strip() == spec.name


def test_second_up_changes_nothing(lab):
    runs = run_commands(lab.deployment().commands, lab.key, update=True, echo=lambda _: None)
    out = {r.name: r.stdout for r in runs}
    assert "already set up" in out["pacemaker-corosync-setup"]
    assert "already pushed, nothing to do" in out["pacemaker-cib-push"]
    assert "healthy" in out["pacemaker-health"]


def test_ipaddr2_finds_the_nitro_nic_by_route_and_a_fixed_eth0_fails(lab):
    """Defect: the model said `nic=eth0`; Debian 12 on Nitro has ens5, so IPaddr2 failed."""
    spec = lab.node(NODE2)
    [ip] = [r for g in build_model(CFG).groups for r in g.members if r.id == "ctz-ip"]
    spare = CFG.service_subnet_cidr.replace(".0/24", ".150")
    params = {**dict(ip.params), "ip": spare}

    def agent(action: str, **extra: str):
        env = {"OCF_ROOT": "/usr/lib/ocf", **{f"OCF_RESKEY_{k}": v
                                              for k, v in {**params, **extra}.items()}}
        return exec_proc(spec, "/usr/lib/ocf/resource.d/heartbeat/IPaddr2", action, env=env)

    assert "nic" not in params
    assert agent("start").returncode == 0
    assert f"inet {spare}/" in exec_in(spec, "ip", "-4", "-o", "addr", "show", "dev", "ens5")
    assert agent("stop").returncode == 0
    fixed = agent("start", nic="eth0")
    assert fixed.returncode == 6, fixed  # OCF_ERR_CONFIGURED: fatal, the group never starts


def test_vips_are_never_static_addresses_on_a_node(lab):
    """Defect: cloud-init pinned the VIP each ENI held at first boot (apply_full_imds...)."""
    for spec in lab.nodes:
        netplan = exec_in(spec, "sh", "-c", "cat /etc/netplan/*.yaml")
        assert not any(vip in netplan for vip in VIPS), netplan
        assert exec_proc(spec, "test", "-e", "/etc/netplan/50-cloud-init.yaml").returncode == 1
        assert "config: disabled" in exec_in(
            spec, "cat", "/etc/cloud/cloud.cfg.d/99-prep-ha-network.cfg")


def test_networkd_restart_keeps_the_vip_and_the_management_route(lab):
    """Defect (unverified before): networkd drops addresses and rules it did not make."""
    spec = peer_node(lab)
    pid = roles_on(spec)["peer"]
    for command in (["networkctl", "reconfigure", "ens5"], ["networkctl", "reload"],
                    ["systemctl", "restart", "systemd-networkd"]):
        exec_in(spec, *command)
        exec_in(spec, "sleep", "3")
        addresses = exec_in(spec, "ip", "-4", "-o", "addr", "show", "dev", "ens5")
        assert f"inet {CFG.peer_vip}/" in addresses, (command, addresses)
        rules = exec_in(spec, "ip", "rule")
        assert "lookup 102" in rules, (command, rules)
    assert roles_on(spec).get("peer") == pid
    assert lab.healthy()


def test_unattended_upgrades_leave_the_cluster_stack_alone(lab):
    """Defect: a corosync security update restarted the cluster on a live node."""
    spec = lab.nodes[1]
    check = (
        "import apt_pkg, importlib.machinery, sys\n"
        "uu = importlib.machinery.SourceFileLoader('uu', '/usr/bin/unattended-upgrade')"
        ".load_module()\n"
        "apt_pkg.init_config()\n"
        "bl = apt_pkg.config.value_list('Unattended-Upgrade::Package-Blacklist')\n"
        "for name in sys.argv[1:]:\n"
        "    print(name, uu.is_pkgname_in_blacklist(name, bl))\n")
    held = ["corosync", "libcorosync-common4", "libknet1", "pacemaker", "pacemaker-cli-utils",
            "pcs", "resource-agents", "fence-agents", "docker.io"]
    free = ["libc6", "openssl", "openssh-server", "systemd"]
    out = exec_in(spec, "python3", "-c", check, *held, *free)
    verdict = dict(line.split() for line in out.splitlines())
    assert all(verdict[p] == "True" for p in held), verdict
    assert all(verdict[p] == "False" for p in free), verdict
    installed = exec_in(spec, "dpkg-query", "-W", "-f", "${Package}\n", *held[:-1])
    assert set(installed.split()) == set(held[:-1])  # they really are on the node


def test_health_names_what_is_wrong_on_a_live_cluster(lab):
    """Defect: `pulumi up` succeeded with the validator down."""
    health = next(c for c in lab.deployment().commands if c.name == "pacemaker-health")
    spec = lab.node(NODE1)
    exec_in(spec, "pcs", "node", "standby", NODE2, "--wait=120")
    try:
        proc = exec_proc(spec, "bash", "-s", "health", input=health.stdin,
                         env={"HEALTH_TIMEOUT": "0"})
        assert proc.returncode == 1
        assert f"node {NODE2} is in standby" in proc.stderr
        assert "group Ctz is not started on one node" in proc.stderr
    finally:
        exec_in(spec, "pcs", "node", "unstandby", NODE2)
    lab.wait_healthy(300)


@pytest.mark.parametrize("case", ["heartbeat", "service", "standby", "hang", "links"])
def test_drill(lab, case):
    result = Drill(lab).cases()[case]()
    print(result.report())
    assert result.checks and result.passed, result.report()


def test_down_removes_every_namespace_mount_and_loop_device(lab):
    Drill(lab).restore()
    roots = [spec.root for spec in lab.nodes]
    down(lab.run_dir)
    assert namespaces() == []
    assert not lab.run_dir.exists()
    assert not any(root.is_mount() for root in roots)
