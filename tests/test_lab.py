"""The real-node lab: two nodes of the nodes' Debian release booted from the product's own
user-data and payload, the cluster
set up by the program's own bootstrap Commands over SSH, then every defect the real node path
had and every drill case, on those nodes. No timing assertions: CI machines vary.

The lab comes up once for the module (about 3 minutes after the image is cached).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.bootstrap import run_commands
from lab.cluster import KEYSTORE, Lab, down
from lab.drill import Drill
from lab.netns import namespaces
from lab.node import exec_in, exec_proc
from lab.observe import roles_on
from prep_ha.cluster.model import SERVICE_NIC, build_model
from prep_ha.cluster.pcs import corosync_conf
from prep_ha.config import load_stack_file
from tests.real_lab import booted_lab, drill_case

ROOT = Path(__file__).resolve().parent.parent
CFG = load_stack_file(str(ROOT / "Pulumi.testnet.yaml"), stack="testnet")
NODE1, NODE2 = CFG.node_names
VIPS = (CFG.peer_vip, CFG.citizen_vip)

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with booted_lab(CFG, tmp_path_factory) as running:
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
        # ... and the payload its tag names, checked, then installed whole.
        installed = exec_in(spec, "cat", "/var/lib/prep-ha/payload/current").strip()
        assert installed == deployment.node(spec.name).payload_digest
        assert exec_proc(spec, "test", "-e", "/var/lib/prep-ha/payload.failed").returncode == 1
        nics = exec_in(spec, "ip", "-br", "link")
        assert all(name in nics for name in ("ens5", "ens6", "ens7"))
        assert exec_in(spec, "mountpoint", "/app/icon").startswith("/app/icon is a mountpoint")


def test_bootstrap_commands_ran_over_ssh_in_order_and_end_healthy(lab):
    names = [r.name for r in lab.command_runs]
    # Independent Commands (the two waits, the two memberships) run in either order.
    assert sorted(names[:2]) == [f"pacemaker-{NODE1}-ready", f"pacemaker-{NODE2}-ready"]
    assert sorted(names[3:5]) == [f"pacemaker-{NODE1}-membership",
                                  f"pacemaker-{NODE2}-membership"]
    assert [names[2], *names[5:]] == ["pacemaker-corosync-setup", "pacemaker-cib-push",
                                      "pacemaker-health", "pacemaker-node-roll"]
    assert "healthy" in lab.command_runs[-2].stdout
    # The roll Command ran from the client over SSH, found both nodes on the stack's image.
    assert lab.command_runs[-1].stdout == f"roll: both nodes run {CFG.icon_image} and " \
        "their payloads, nothing to roll\n"
    assert lab.healthy()
    text = lab.pcs_status()
    assert f"Online: [ {NODE1} {NODE2} ]" in text and "stonith:fence_aws" in text


def _section(conf: str, name: str) -> str:
    """One top-level section of a corosync.conf, its nested sections included (pcs writes
    top-level sections unindented)."""
    body = ("\n" + conf).split(f"\n{name} {{", 1)[1]
    return body.split("\n}", 1)[0]


def test_nodes_run_what_pcs_set_up_through_pcsd_and_the_arbiters_vote(lab):
    expected = corosync_conf(build_model(CFG))
    for spec in lab.nodes:
        conf = exec_in(spec, "cat", "/etc/corosync/corosync.conf")
        for section in ("nodelist", "logging"):
            assert _section(conf, section) == _section(expected, section)
        assert [ln for ln in _section(conf, "totem").splitlines() if "cluster_uuid" not in ln] \
            == _section(expected, "totem").splitlines()
        quorum = _section(conf, "quorum")
        assert "model: net" in quorum and f"host: {CFG.arbiter_ip}" in quorum
        assert "algorithm: ffsplit" in quorum and "two_node" not in quorum
        assert exec_in(spec, "hostname").strip() == spec.name
        # The arbiter's vote counts: three expected votes, quorate with all three.
        votes = exec_in(spec, "corosync-quorumtool", "-s")
        assert "Expected votes:   3" in votes and "Quorate:          Yes" in votes, votes


def test_second_up_changes_nothing(lab):
    runs = run_commands(lab.deployment().commands, lab.key, update=True, echo=lambda _: None)
    out = {r.name: r.stdout for r in runs}
    assert "already set up" in out["pacemaker-corosync-setup"]
    assert "already pushed, nothing to do" in out["pacemaker-cib-push"]
    for node in (NODE1, NODE2):
        assert out[f"pacemaker-{node}-membership"].endswith(f"{node} is a cluster member\n")
    assert "healthy" in out["pacemaker-health"]


def test_ipaddr2_finds_the_nitro_nic_by_route_and_a_fixed_eth0_fails(lab):
    """Defect: the model said `nic=eth0`; Debian on Nitro has ens5, so IPaddr2 failed."""
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


def test_the_overlay_agent_finds_the_service_nic_by_its_boot_given_name(lab):
    """Multi-AZ's aws-vpc-move-ip needs `interface` by name; the kernel's name varies with the
    instance type and systemd, so prep-ha-network gives the service NIC a fixed altname. The
    packaged agent's monitor (IMDS, then the address on that interface; no API call) and the
    address it adds work through it on the node as booted."""
    spec = lab.node(NODE2)
    spare = CFG.service_subnet_cidr.replace(".0/24", ".151")
    link = json.loads(exec_in(spec, "ip", "-j", "link", "show", "dev", "ens5"))
    assert SERVICE_NIC in link[0].get("altnames", []), link

    def monitor() -> int:
        env = {"OCF_ROOT": "/usr/lib/ocf", "OCF_RESKEY_ip": spare,
               "OCF_RESKEY_interface": SERVICE_NIC, "OCF_RESKEY_routing_table": "rtb-unused",
               "OCF_RESKEY_region": CFG.region, "OCF_RESKEY_CRM_meta_interval": "10000"}
        return exec_proc(spec, "/usr/lib/ocf/resource.d/heartbeat/aws-vpc-move-ip", "monitor",
                         env=env).returncode

    assert monitor() == 7  # OCF_NOT_RUNNING
    exec_in(spec, "ip", "addr", "add", f"{spare}/32", "dev", SERVICE_NIC)
    try:
        assert monitor() == 0
    finally:
        exec_in(spec, "ip", "addr", "del", f"{spare}/32", "dev", SERVICE_NIC)
    assert monitor() == 7

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
    held = ["corosync", "libcorosync-common4", "libcfg7", "libknet1t64", "pacemaker",
            "pacemaker-cli-utils", "pcs", "resource-agents", "fence-agents-aws", "docker.io"]
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


# ---- the validator key and the cluster's credentials (issue 9)

IMDS_TOKEN = ("curl", "-sf", "-m", "3", "-X", "PUT", "http://169.254.169.254/latest/api/token",
              "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60")


def test_imds_answers_root_only_and_containers_are_kept_off_cluster_ports(lab):
    for spec in lab.nodes:
        assert exec_proc(spec, *IMDS_TOKEN).stdout.strip(), "root gets an IMDS token"
        as_nobody = exec_proc(spec, "runuser", "-u", "nobody", "--", *IMDS_TOKEN)
        assert as_nobody.returncode != 0 and not as_nobody.stdout.strip()
        # No Docker bridge exists in the lab (see the README's table): the rules are checked
        # as installed, in the chain Docker evaluates first and never flushes.
        rules = exec_in(spec, "iptables", "-S", "DOCKER-USER")
        for bridge in ("docker0", "br-+"):
            assert f"-A DOCKER-USER -i {bridge} -j PREP-HA-CONTAINERS" in rules
        drops = exec_in(spec, "iptables", "-S", "PREP-HA-CONTAINERS")
        assert "--dports 2224,3121,5403:5406,9664 -j DROP" in drops


def test_pcsd_listens_on_the_heartbeat_address_only(lab):
    for spec, fixed in zip(lab.nodes, CFG.nodes, strict=True):
        listening = exec_in(spec, "ss", "-Hltn", "sport = :2224").split()
        assert [a for a in listening if a.endswith(":2224")] == [f"{fixed.heartbeat_ip}:2224"]


def test_the_hacluster_exporter_serves_on_the_management_address_only(lab):
    for spec, fixed in zip(lab.nodes, CFG.nodes, strict=True):
        listening = exec_in(spec, "ss", "-Hltn", "sport = :9664").split()
        assert [a for a in listening if a.endswith(":9664")] == [f"{fixed.management_ip}:9664"]
        metrics = exec_in(spec, "curl", "-sf", "-m", "10",
                          f"http://{fixed.management_ip}:9664/metrics")
        assert "ha_cluster_pacemaker_nodes" in metrics


def test_the_bootstrap_pins_each_nodes_host_key(lab):
    from lab.client import SSH_UNREACHABLE, ssh
    ready = {c.host: c for c in lab.deployment().commands if c.name.endswith("-ready")}
    (host1, cmd1), (host2, cmd2) = sorted(ready.items(), key=lambda kv: kv[1].name)
    assert cmd1.host_key and cmd2.host_key and cmd1.host_key != cmd2.host_key
    assert ssh(lab.key, cmd1.user, host1, "true", host_key=cmd1.host_key).returncode == 0
    # Node 2's key at node 1's address: refused, as pulumi-command refuses a stranger.
    assert ssh(lab.key, cmd1.user, host1, "true",
               host_key=cmd2.host_key).returncode == SSH_UNREACHABLE


def test_the_key_lives_in_tmpfs_on_the_peer_node_only(lab):
    peer = peer_node(lab)
    other = next(s for s in lab.nodes if s.name != peer.name)
    listing = exec_in(peer, "stat", "-c", "%a %U %n", "/run/prep-ha/peer",
                      "/run/prep-ha/peer/keystore.json", "/run/prep-ha/peer/keysecret")
    assert listing.split("\n")[:3] == ["700 root /run/prep-ha/peer",
                                        "400 root /run/prep-ha/peer/keystore.json",
                                        "400 root /run/prep-ha/peer/keysecret"]
    assert exec_in(peer, "findmnt", "-no", "FSTYPE", "-T", "/run/prep-ha/peer").strip() == "tmpfs"
    for spec in (peer, other):
        assert exec_proc(spec, "test", "-e", "/app/icon/peer/config/keysecret").returncode != 0
    assert exec_proc(other, "test", "-e", "/run/prep-ha/peer").returncode != 0


# What the image logs once it has restored ICON's snapshot (lab/standins/icon_node.py); both
# roles' booting logs live on the node's data volume.
RESTORE_DONE = "[RESTORE] DOWNLOAD from ICON2 DB"


def restores_on(spec) -> int:
    return exec_in(spec, "sh", "-c", "cat /app/icon/*/logs/booting.log").count(RESTORE_DONE)


def test_fresh_data_volumes_start_from_the_snapshot_and_the_citizen_has_its_own_wallet(lab):
    peer = peer_node(lab)
    citizen = next(s for s in lab.nodes if s.name != peer.name)
    for spec in lab.nodes:
        # Formatted at first boot for a snapshot sync; the first start of a role restored.
        assert restores_on(spec) == 1
        assert exec_proc(spec, "test", "-e", "/app/icon/data/restore/RESTORED").returncode == 0
    keystore = exec_in(citizen, "cat", "/app/icon/ctz/key/keystore.json")
    address = json.loads(keystore)["address"]
    log = exec_in(citizen, "cat", "/app/icon/ctz/logs/booting.log")
    assert f"[goloop] wallet {address} from /goloop/key/keystore.json" in log
    assert address != json.loads(KEYSTORE.read_text())["address"]  # the validator's
    assert exec_in(citizen, "stat", "-c", "%a %U", "/app/icon/ctz/key",
                   "/app/icon/ctz/key/keysecret").split("\n")[:2] == ["700 root", "600 root"]


def test_the_leak_scan_finds_a_planted_leak(lab):
    from lab.leakscan import lab_secrets, scan_lab
    password = lab_secrets(lab)["keystore password"]
    spec = lab.nodes[1]
    exec_in(spec, "sh", "-c", 'umask 077; printf %s "$P" > /var/tmp/planted', env={"P": password})
    exec_in(spec, "systemd-run", "--unit", "planted", "-E", f"P={password}", "sleep", "600")
    try:
        hits = {(h.secret, h.category) for h in scan_lab(lab).hits}
        assert ("keystore password", "root volume files") in hits
        assert ("keystore password", "process argv and environment") in hits
    finally:
        exec_in(spec, "systemctl", "stop", "planted", check=False)
        exec_in(spec, "rm", "-f", "/var/tmp/planted")
    assert not scan_lab(lab).hits


def test_the_arbiter_installs_the_payload_its_tag_names(lab):
    """Nobody logs in to the arbiter: it follows its payload tag itself (a timer; started here
    instead of waiting for it)."""
    from lab import payloads

    drill = Drill(lab)
    name = CFG.arbiter_name
    changed = payloads.with_file(payloads.stored_payload(drill, name),
                                 "/usr/local/sbin/prep-ha-hacluster", "# lab: fixed\n")
    digest = payloads.publish(drill, name, changed)
    exec_in(lab.arbiter, "systemctl", "start", "prep-ha-payload-follow.service")
    assert exec_in(lab.arbiter, "cat", "/var/lib/prep-ha/payload/current").strip() == digest
    assert exec_in(lab.arbiter, "tail", "-1", "/usr/local/sbin/prep-ha-hacluster") == \
        "# lab: fixed\n"
    assert exec_in(lab.arbiter, "systemctl", "is-active", "corosync-qnetd").strip() == "active"


# The replacements first: the cases after them fence nodes through the host map they rewrote.
# Every case passes on both topologies (`python -m lab drill --stack mainnet`, README); CI runs
# links, split and freeze-active on the multi-AZ stack only (tests/test_lab_multi_az.py), to
# stay within its time.
@pytest.mark.parametrize("case", ["replace", "replace-lost", "payload-corrupt", "heartbeat",
                                  "service", "standby", "hang", "arbiter", "arbiter-split",
                                  "switchover", "upgrade", "payload-roll", "roll-refused",
                                  "restore-refused", "freeze-standby", "lone-start",
                                  "api-outage"])
def test_drill(lab, case):
    drill_case(lab, case)


def test_through_every_drill_no_data_volume_restored_twice(lab):
    """Fences, failovers, replacements (the volume moves to the new instance) and image rolls
    restarted both roles on both volumes: none restored the snapshot again."""
    for spec in lab.nodes:
        assert restores_on(spec) == 1
        assert exec_proc(spec, "test", "-e", "/app/icon/restore-pending").returncode != 0
        assert "FASTEST_START=false" in exec_in(spec, "sh", "-c",
                                                "cat /run/prep-ha/*-chain-sync.env")


def test_down_removes_every_namespace_mount_and_loop_device(lab):
    Drill(lab).restore()
    roots = [spec.root for spec in lab.nodes]
    down(lab.run_dir)
    assert namespaces() == []
    assert not lab.run_dir.exists()
    assert not any(root.is_mount() for root in roots)
