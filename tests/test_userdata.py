"""What each node runs: its payload (the guide's units, the node's scripts, no secrets) and the
user-data that fetches it (valid cloud-config, small)."""

from __future__ import annotations

import base64
import configparser
import io
import json
import runpy
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml

from prep_ha.config import load_stack_file
from prep_ha.payload import TAG, Payload, object_key
from prep_ha.userdata import (
    MAX_USER_DATA_BYTES,
    NodeSettings,
    compress,
    decode_user_data,
    fill,
    node_payload,
    render_user_data,
)
from tests.pulumi_mocks import FAKE_SECRET_VALUES, PROJECT_DIR, ProgramRun, run_stack

INSTANCE = "aws:ec2/instance:Instance"
SECRET = "aws:secretsmanager/secret:Secret"
BUCKET_OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"


@pytest.fixture(scope="module", params=["testnet", "mainnet"])
def stack_run(request) -> tuple[str, ProgramRun]:
    return request.param, run_stack(request.param)


def user_data_of(run: ProgramRun) -> list[str]:
    return [decode_user_data(r.inputs["userDataBase64"])
            for r in sorted(run.of_type(INSTANCE), key=lambda r: r.name)
            if "prep-ha:node" in r.inputs["tags"]]


def payloads_of(run: ProgramRun, arbiter: bool = False) -> list[Payload]:
    """Each node's payload as the program stored it (node 1 first), the one its tag names;
    with `arbiter`, the arbiter's alone."""
    stored = {r.inputs["key"]: r for r in run.of_type(BUCKET_OBJECT)}
    instances = sorted((r for r in run.of_type(INSTANCE)
                        if ("prep-ha:node" not in r.inputs["tags"]) == arbiter),
                       key=lambda r: r.name)
    return [Payload.from_archive(base64.b64decode(
        stored[object_key(i.inputs["tags"][TAG])].inputs["contentBase64"]))
        for i in instances]


def files_of(payload: Payload) -> dict[str, dict]:
    return {f.path: {"content": f.content, "permissions": f.mode, "effect": f.effect}
            for f in payload.files}


def unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment]
    parser.read_string(text)
    return parser


def secret_arns(run: ProgramRun) -> dict[str, str]:
    return {s.inputs["name"].split("/", 1)[1]: s.id for s in run.of_type(SECRET)}


def sample(**changes: str) -> NodeSettings:
    values = dict(
        node_name="prep-ha-testnet-1", region="eu-central-1", icon_network="LisbonNet",
        icon_image="iconloop/icon2-node:v1.4.6", data_volume_id="vol-0123456789abcdef0",
        heartbeat_ip="10.41.2.11", heartbeat_cidr="10.41.2.0/24", management_ip="10.41.3.11",
        management_cidr="10.41.3.0/24", peer_vip="10.41.1.100", citizen_vip="10.41.1.101",
        p2p_advertise="203.0.113.9:7100",
        keystore_secret_id="arn:aws:secretsmanager:eu-central-1:1:secret:c/keystore-Ab",
        keystore_password_secret_id="arn:aws:secretsmanager:eu-central-1:1:secret:c/kp-Ab",
        hacluster_secret_id="arn:aws:secretsmanager:eu-central-1:1:secret:c/hc-Ab")
    values.update(changes)
    return NodeSettings(**values)


def test_cloud_init_schema_accepts_every_node_and_the_arbiter(stack_run, tmp_path,
                                                              node_tools):
    """The nodes' cloud-init (25.1 on Debian 13) validates every instance's user-data, with
    no deprecated key either (a deprecation makes a node's `cloud-init status` "degraded")."""
    _, run = stack_run
    arbiter = [decode_user_data(r.inputs["userDataBase64"]) for r in run.of_type(INSTANCE)
               if r.inputs["tags"].get("prep-ha:role") == "arbiter"]
    assert len(arbiter) == 1
    for index, user_data in enumerate(user_data_of(run) + arbiter):
        path = tmp_path / f"node{index + 1}.yaml"
        path.write_text(user_data)
        result = node_tools.run(["cloud-init", "schema", "-c", str(path)], paths=[path],
                                timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"Valid schema {path}" in result.stdout, result.stdout
        assert "deprecat" not in (result.stdout + result.stderr).lower(), result.stdout


HOTPLUG = """
import sys, yaml
from cloudinit import helpers, stages
from cloudinit.event import EventScope, EventType
from cloudinit.sources import DataSourceEc2 as ec2
cfg = yaml.safe_load(open(sys.argv[1]))
ds = ec2.DataSourceEc2(cfg, None, helpers.Paths({}))
print(stages.update_event_enabled(datasource=ds, cfg=cfg, event_source_type=EventType.HOTPLUG,
                                  scope=EventScope.NETWORK))
"""


def test_the_nodes_cloud_init_applies_no_network_config_on_an_eni_hotplug(stack_run, tmp_path,
                                                                            node_tools):
    """cloud-init 25.1's Ec2 datasource turns hotplug on by default, and its hotplug handler
    applies the IMDS network config (the VIPs as static addresses) even with network config
    disabled. The user-data's `updates` keeps it to a new instance's first boot."""
    _, run = stack_run
    for index, user_data in enumerate(user_data_of(run)):
        path = tmp_path / f"node{index + 1}.yaml"
        path.write_text(user_data)
        seen = node_tools.run(["python3", "-c", HOTPLUG, str(path)], paths=[path])
        assert seen.returncode == 0, seen.stderr
        assert seen.stdout.strip() == "False"
        # The control: without the key, the nodes' cloud-init would handle hotplug events.
        doc = yaml.safe_load(user_data)
        del doc["updates"]
        path.write_text("#cloud-config\n" + yaml.safe_dump(doc))
        seen = node_tools.run(["python3", "-c", HOTPLUG, str(path)], paths=[path])
        assert seen.stdout.strip() == "True", seen.stderr


def test_user_data_only_fetches_the_payload_and_stays_small(stack_run):
    stack, run = stack_run
    region = load_stack_file(str(PROJECT_DIR / f"Pulumi.{stack}.yaml"), stack=stack).region
    bucket = run.of_type("aws:s3/bucket:Bucket")[0].outputs["bucket"]
    for instance in run.of_type(INSTANCE):
        user_data = decode_user_data(instance.inputs["userDataBase64"])
        size = len(compress(user_data))
        print(f"{instance.name}: user-data {size} bytes gzip'd")
        assert size < 4 * 1024 and MAX_USER_DATA_BYTES == 8 * 1024
        assert "{{" not in user_data
        doc = yaml.safe_load(user_data)
        assert user_data.startswith("#cloud-config\n") and doc["hostname"]
        boot = ["/usr/local/sbin/prep-ha-boot", bucket, region]
        # The nodes install the SSH host key the stack pins first: a node whose payload fails
        # is still reached, and its readiness check says why.
        host_key = [] if instance.name.startswith("arbiter") else [
            "/usr/local/sbin/prep-ha-ssh-host-key"]
        assert doc["runcmd"] == [*([host_key] if host_key else []), boot]
        assert [f["path"] for f in doc["write_files"]] == [boot[0], *host_key]


def test_user_data_past_its_budget_is_refused(tmp_path):
    """Content that grows goes into the payload: user-data above 8 KiB gzip'd is an error."""
    import shutil
    shutil.copytree(PROJECT_DIR / "cloud-init", tmp_path / "t")
    installer = tmp_path / "t/files/prep-ha-boot"
    installer.write_text(installer.read_text() + "# " + base64.b64encode(
        __import__("os").urandom(9000)).decode() + "\n")
    with pytest.raises(ValueError, match="above its budget of 8192"):
        render_user_data("prep-ha-testnet-1", "eu-central-1", "b", ssh_host_key=True,
                         template_dir=tmp_path / "t")


def test_no_secret_values_only_secret_ids(stack_run):
    _, run = stack_run
    arns = secret_arns(run)
    for text in user_data_of(run) + [f.content for p in payloads_of(run) + payloads_of(
            run, arbiter=True) for f in p.files]:
        for value in FAKE_SECRET_VALUES:
            assert value not in text
        assert "BEGIN OPENSSH" not in text
    for payload in payloads_of(run):
        files = files_of(payload)
        peer = files["/etc/systemd/system/peer.service"]["content"]
        assert ('prep-ha-secret --keystore --to /run/prep-ha/peer/keystore.json '
                f'"{arns["keystore"]}"') in peer
        assert (f'prep-ha-secret --to /run/prep-ha/peer/keysecret '
                f'"{arns["keystore-password"]}"') in peer
        hacluster = files["/usr/local/sbin/prep-ha-hacluster"]["content"]
        assert f'SECRET_ID="{arns["hacluster-password"]}"' in hacluster
        assert "ExecStart=/usr/local/sbin/prep-ha-hacluster set" in \
            files["/etc/systemd/system/prep-ha-hacluster-password.service"]["content"]


def hacluster_script(tmp_path: Path, secret_script: str) -> tuple[list[str], Path]:
    """prep-ha-hacluster as the node has it, with the fetch and chpasswd stubbed."""
    content = files_of(node_payload(sample()))["/usr/local/sbin/prep-ha-hacluster"]
    bindir, record = tmp_path / "bin", tmp_path / "chpasswd.in"
    bindir.mkdir()
    for name, body in (("fetch", secret_script), ("chpasswd", f"cat > {record}")):
        (bindir / name).write_text("#!/bin/sh\n" + body + "\n")
        (bindir / name).chmod(0o755)
    script = tmp_path / "prep-ha-hacluster"
    script.write_text(content["content"].replace("/usr/local/sbin/prep-ha-secret",
                                                 str(bindir / "fetch")))
    return ["env", f"PATH={bindir}:/usr/bin:/bin", "bash", str(script)], record


def test_hacluster_password_reaches_chpasswd_only_when_fetched(tmp_path):
    command, record = hacluster_script(tmp_path, "echo s3cret")
    assert subprocess.run([*command, "set"], check=False).returncode == 0
    assert record.read_text() == "hacluster:s3cret\n"


@pytest.mark.parametrize("fetch", ["exit 1", "echo -n ''"], ids=["fetch-fails", "empty"])
def test_failed_hacluster_fetch_never_sets_an_empty_password(tmp_path, fetch):
    command, record = hacluster_script(tmp_path, fetch)
    assert subprocess.run([*command, "set"], check=False).returncode != 0
    assert not record.exists()


def test_packages_and_first_boot_commands(stack_run):
    stack, run = stack_run
    cfg = load_stack_file(str(PROJECT_DIR / f"Pulumi.{stack}.yaml"), stack=stack)
    volumes = {v.id for v in run.of_type("aws:ebs/volume:Volume")}
    seen_volumes = set()
    for payload in payloads_of(run):
        assert {"pacemaker", "pacemaker-cli-utils", "pcs", "corosync", "resource-agents",
                "fence-agents-aws", "python3-boto3", "awscli", "docker.io",
                "docker-compose"} <= set(payload.packages)
        # Debian 13's fence-agents is every agent (fence-agents-all, 600 packages).
        assert "fence-agents" not in payload.packages
        commands = [" ".join(c) for c in payload.first_boot]
        assert "systemctl disable --now corosync.service pacemaker.service" in commands
        assert "systemctl enable --now pcsd.service" in commands
        # The firewall before anything else that starts services.
        assert commands[0] == "systemctl enable --now prep-ha-firewall.service"
        assert any(c.startswith("systemctl enable --now prep-ha-pull-image") for c in commands)
        [mount] = [c for c in payload.first_boot if c[0] == "/usr/local/sbin/prep-ha-data-volume"]
        seen_volumes.add(mount[1])
        assert mount[2] == cfg.chain_sync  # how a volume it formats is filled
        # Never enabled: Pacemaker alone starts the ICON services.
        assert not any("peer.service" in c or "ctz.service" in c for c in commands)
    assert seen_volumes == volumes


def test_peer_and_citizen_units(stack_run):
    _, run = stack_run
    for payload in payloads_of(run):
        files = files_of(payload)
        for name in ("peer", "ctz"):
            parsed = unit(files[f"/etc/systemd/system/{name}.service"]["content"])
            assert not parsed.has_section("Install")
            service = parsed["Service"]
            assert service["Type"] == "simple"
            assert service["Restart"] == "no"
            assert "--abort-on-container-exit" in service["ExecStart"]
            assert f"/etc/prep-ha/{name}.yml" in service["ExecStart"]
            assert parsed["Unit"]["RequiresMountsFor"] == "/app/icon"
        peer = unit(files["/etc/systemd/system/peer.service"]["content"])["Service"]
        assert peer["RuntimeDirectory"] == "prep-ha/peer" and peer["UMask"] == "0077"
        assert peer["RuntimeDirectoryMode"] == "0700"
        pre = {name: [ln.split("=", 1)[1] for ln in
                      files[f"/etc/systemd/system/{name}.service"]["content"].splitlines()
                      if ln.startswith("ExecStartPre=")] for name in ("peer", "ctz")}
        for name, steps in pre.items():
            # The env_file compose reads (for `down` too) first, then a fenced node's leftover
            # container goes before anything else happens.
            assert steps[:2] == [
                f"/usr/local/sbin/prep-ha-chain-sync /app/icon /run/prep-ha/{name}-chain-sync.env",
                f"/usr/bin/docker-compose -p {name} -f /etc/prep-ha/{name}.yml down"]
        # The citizen fetches no secret: it makes its own wallet on the data volume.
        assert pre["ctz"][2:] == [
            "/bin/rm -f /app/icon/ctz/config/keystore.json /app/icon/ctz/config/keysecret",
            "/usr/local/sbin/prep-ha-citizen-key /app/icon/ctz/key"]
        assert [s.split()[0] for s in pre["peer"][2:]] == [
            "/bin/rm", "/usr/local/sbin/prep-ha-secret", "/usr/local/sbin/prep-ha-secret"]


def test_compose_files(stack_run):
    stack, run = stack_run
    cfg = load_stack_file(str(PROJECT_DIR / f"Pulumi.{stack}.yaml"), stack=stack)
    # Single-AZ: the NLB's Elastic IP; multi-AZ: its DNS name (README: One AZ or three).
    endpoint = run.outputs["p2pEndpoint"]
    host = endpoint.rsplit(":", 1)[0]
    assert (host == run.outputs["nlbDnsName"]) is cfg.multi_az
    for index, payload in enumerate(payloads_of(run)):
        files = files_of(payload)
        peer = yaml.safe_load(files["/etc/prep-ha/peer.yml"]["content"])["services"]["icon2-node"]
        ctz = yaml.safe_load(files["/etc/prep-ha/ctz.yml"]["content"])["services"]["icon2-node"]
        for name, service in (("peer", peer), ("ctz", ctz)):
            # The image comes from the node's icon-image.env (rolled by prep-ha-image).
            assert service["image"] == "${ICON_IMAGE:?set in /etc/prep-ha/icon-image.env}"
            assert service["environment"]["SERVICE"] == cfg.icon_network
            assert service["restart"] == "no"
            assert "network_mode" not in service  # bridge: no IMDS from containers
            assert "/app/icon/data:/goloop/data" in service["volumes"]
            # FASTEST_START only from prep-ha-chain-sync; the image's key generation off.
            assert service["env_file"] == f"/run/prep-ha/{name}-chain-sync.env"
            assert "FASTEST_START" not in service["environment"]
            assert service["environment"]["IS_AUTOGEN_CERT"] == "false"
        assert files["/etc/prep-ha/icon-image.env"]["content"] == \
            f"ICON_IMAGE=iconloop/icon2-node:{cfg.icon_image_tag}\n"
        assert peer["environment"]["ROLE"] == 3
        assert ctz["environment"]["ROLE"] == 0
        assert peer["environment"]["GOLOOP_P2P"] == endpoint and endpoint.endswith(":7100")
        # The citizen advertises its VIP, or (multi-AZ, no VIP) its node's own address.
        assert ctz["environment"]["GOLOOP_P2P"] == \
            f"{cfg.citizen_vip or cfg.nodes[index].service_ip}:7100"
        # The key only in the read-only tmpfs mount; nothing secret in the environment
        # (Docker keeps it in config.v2.json) and no keystore in /goloop/config (the image's
        # start-up would write KEY_PASSWORD over GOLOOP_KEY_SECRET).
        for service, key_dir in ((peer, "/run/prep-ha/peer:/goloop/secret"),
                                 (ctz, "/app/icon/ctz/key:/goloop/key")):
            assert not {"KEY_PASSWORD", "KEY_STORE_FILENAME"} & set(service["environment"])
            key_mount = key_dir.split(":")[1]
            assert service["environment"]["GOLOOP_KEY_STORE"] == f"{key_mount}/keystore.json"
            assert service["environment"]["GOLOOP_KEY_SECRET"] == f"{key_mount}/keysecret"
            assert f"{key_dir}:ro" in service["volumes"]
        # The citizen's wallet is its own: nothing of the P-Rep's key reaches it.
        assert not any(v.split(":")[0].startswith("/run") for v in ctz["volumes"])
        assert "secret" not in json.dumps(ctz["volumes"])


def network_script(payload: Payload, tmp_path: Path) -> dict:
    """prep-ha-network as the node has it, loaded as a module (its main() not run)."""
    path = tmp_path / "prep-ha-network.py"
    path.write_text(payload.file("/usr/local/sbin/prep-ha-network").content)
    return runpy.run_path(str(path), run_name="prep_ha_network")


def networkd_files(tools, netplan_doc: dict, tmp_path: Path) -> dict[str, str]:
    """What the nodes' netplan renders for systemd-networkd from the document."""
    root = tmp_path / "root"
    (root / "etc/netplan").mkdir(parents=True)
    (root / "etc/netplan/50-prep-ha.yaml").write_text(yaml.safe_dump(netplan_doc))
    (root / "etc/netplan/50-prep-ha.yaml").chmod(0o600)
    result = tools.run(["netplan", "generate", "--root-dir", str(root)], paths=[root])
    assert result.returncode == 0, result.stderr
    out = root / "run/systemd/network"
    return {p.name: p.read_text() for p in out.glob("*.network")}


def test_node_network_owned_by_networkd(stack_run, tmp_path, node_tools):
    """The VIPs never become static addresses, networkd keeps IPaddr2's VIP on reconfigure,
    and the management ENI answers out of itself through a rule networkd owns."""
    stack, run = stack_run
    cfg = load_stack_file(str(PROJECT_DIR / f"Pulumi.{stack}.yaml"), stack=stack)
    for index, payload in enumerate(payloads_of(run)):
        node = cfg.nodes[index]
        script = network_script(payload, tmp_path)
        nics = {"service": {"mac": "02:00:00:00:00:05", "primary": node.service_ip},
                "heartbeat": {"mac": "02:00:00:00:00:06", "primary": node.heartbeat_ip},
                "management": {"mac": "02:00:00:00:00:07", "primary": node.management_ip}}
        files = networkd_files(node_tools, script["netplan"](nics), tmp_path / str(index))
        service = files["10-netplan-service.network"]
        # netplan 1.1's `critical` is networkd's KeepConfiguration=: foreign static addresses
        # (IPaddr2's VIP) survive a networkd restart or reconfigure (proven in the lab).
        assert "DHCP=ipv4" in service and "KeepConfiguration=true" in service
        assert "\nAddress=" not in service  # no VIP, no secondary address at all
        assert f"Address={node.heartbeat_ip}/24" in files["10-netplan-heartbeat.network"]
        mgmt = files["10-netplan-management.network"]
        gateway = node.zone.management_cidr.replace(".0/24", ".1")
        assert f"Address={node.management_ip}/24" in mgmt
        assert f"Gateway={gateway}" in mgmt and "Table=102" in mgmt
        assert f"From={node.management_ip}" in mgmt and "Priority=102" in mgmt


def test_network_script_refuses_enis_the_stack_did_not_declare(stack_run, tmp_path):
    _, run = stack_run
    script = network_script(payloads_of(run)[0], tmp_path)
    nics = {"service": {"mac": "m0", "primary": "10.9.9.9"},
            "heartbeat": {"mac": "m1", "primary": "10.9.9.10"},
            "management": {"mac": "m2", "primary": "10.9.9.11"}}
    with pytest.raises(SystemExit, match="heartbeat ENI has 10.9.9.10"):
        script["netplan"](nics)


# Source packages whose upgrade restarts the cluster or the validator's container.
HELD_SOURCES = {"corosync", "pacemaker", "kronosnet", "libqb", "pcs", "resource-agents",
                "fence-agents", "docker.io", "docker-compose", "containerd", "runc"}


def test_unattended_upgrades_leave_the_cluster_stack_alone(stack_run, node_tools):
    """Every binary package the nodes have installed from the cluster stack's and the
    container runtime's sources is held (Debian 13 names them: libknet1t64, libcfg7, ...)."""
    _, run = stack_run
    conf = files_of(payloads_of(run)[0])["/etc/apt/apt.conf.d/51prep-ha-unattended-upgrades"]
    import re
    patterns = re.findall(r'"(\^[^"]+)"', conf["content"])
    listed = node_tools.run(["dpkg-query", "-W", "-f", "${Package} ${source:Package}\n"])
    assert listed.returncode == 0, listed.stderr
    installed = dict(line.split() for line in listed.stdout.splitlines())
    held = [p for p, source in installed.items() if source in HELD_SOURCES]
    assert {"corosync", "libcfg7", "libvotequorum8", "libknet1t64", "pacemaker",
            "libcrmcommon68", "pcs", "fence-agents-aws", "resource-agents"} <= set(held)
    for package in held:
        assert any(re.match(p, package) for p in patterns), package
    for package in ("openssl", "libc6", "openssh-server", "python3-boto3", "cloud-init"):
        assert not any(re.match(p, package) for p in patterns), package


def test_scripts_parse(tmp_path):
    files = files_of(node_payload(sample()))
    for path in ("/usr/local/sbin/prep-ha-data-volume",):
        script = tmp_path / Path(path).name
        script.write_text(files[path]["content"])
        result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert files[path]["permissions"] == "0755"
    compile(files["/usr/local/sbin/prep-ha-secret"]["content"], "prep-ha-secret", "exec")
    compile(files["/usr/local/sbin/prep-ha-network"]["content"], "prep-ha-network", "exec")
    json.loads(files["/etc/docker/daemon.json"]["content"])
    assert "region = eu-central-1" in files["/root/.aws/config"]["content"]
    assert files["/root/.aws/config"]["permissions"] == "0600"


def test_prep_ha_secret_prints_the_value(tmp_path, monkeypatch):
    moto = pytest.importorskip("moto")
    import boto3

    script = tmp_path / "prep-ha-secret"
    script.write_text(files_of(node_payload(sample()))["/usr/local/sbin/prep-ha-secret"]
                      ["content"])
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    with moto.mock_aws():
        arn = boto3.client("secretsmanager", region_name="eu-central-1").create_secret(
            Name="prep-ha-testnet/hacluster-password", SecretString="s3cret")["ARN"]
        for secret_id in (arn, "prep-ha-testnet/hacluster-password"):
            monkeypatch.setattr(sys, "argv", ["prep-ha-secret", secret_id])
            out = io.StringIO()
            with redirect_stdout(out), pytest.raises(SystemExit) as exit_:
                runpy.run_path(str(script), run_name="__main__")
            assert exit_.value.code == 0
            assert out.getvalue() == "s3cret\n"


def test_unknown_placeholder_is_an_error():
    with pytest.raises(KeyError, match="nope"):
        fill("a {{ nope }} b", {})
    assert fill("{{a}}-{{ a }}", {"a": "x"}) == "x-x"


def test_unsafe_values_are_refused():
    with pytest.raises(ValueError, match="node_name"):
        node_payload(sample(node_name="x; rm -rf /"))


def test_fence_restart_alert_powers_on_only_a_node_fenced_off(tmp_path):
    """The alert agent as Pacemaker 2.1 calls it (the action is in the description)."""
    script = tmp_path / "prep-ha-fence-restart"
    script.write_text((PROJECT_DIR / "cloud-init/files/prep-ha-fence-restart").read_text())
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls"
    for tool in ("stonith_admin", "logger", "setsid"):
        stub = bindir / tool
        body = 'exec "$@"' if tool == "setsid" else f'echo "{tool} $*" >> {calls}'
        stub.write_text(f"#!/bin/sh\n{body}\n")
        stub.chmod(0o755)

    def alert(**env: str) -> list[str]:
        calls.unlink(missing_ok=True)
        full = {"PATH": f"{bindir}:/usr/bin:/bin", "CRM_alert_kind": "fencing",
                "CRM_alert_rc": "0", "CRM_alert_node": "n2", **env}
        subprocess.run(["sh", str(script)], env=full, check=True, timeout=30)
        import time
        time.sleep(0.3)  # the power-on is backgrounded
        return calls.read_text().splitlines() if calls.exists() else []

    off = "Operation off of n2 by n1 for pacemaker-controld.1@n1: OK (ref=x)"
    assert "stonith_admin --unfence n2 --timeout 600" in alert(CRM_alert_desc=off)
    assert alert(CRM_alert_desc=off, CRM_alert_rc="1") == []
    assert alert(CRM_alert_desc=off.replace("off", "reboot", 1)) == []
    assert alert(CRM_alert_desc=off, CRM_alert_kind="node") == []
    assert alert(CRM_alert_desc="Operation off of n22 by n1: OK") == []
