"""The lab's IMDS (lab/imds.py) over a deployed testnet stack in in-process moto.

Checked the way its real clients use it: the IMDSv2 token flow, EC2's listings, per-ENI data
that follows a VIP move, instance-role credentials through botocore and a real boto3
session, and the nodes' cloud-init (its own Ec2 datasource) crawling it over HTTP.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request

import boto3
import botocore.exceptions
import botocore.utils
import pytest

from lab.imds import Imds, install_ec2_semantics, serve
from lab.program import PROJECT_DIR
from prep_ha.config import load_stack_file
from tests.lab_fixtures import REGION, deploy_testnet, moto_server, ssh_keypair

CFG = load_stack_file(str(PROJECT_DIR / "Pulumi.testnet.yaml"), stack="testnet")
TTL = {"X-aws-ec2-metadata-token-ttl-seconds": "300"}


@pytest.fixture(scope="module")
def endpoint():
    with moto_server() as url:
        install_ec2_semantics()
        yield url


@pytest.fixture(scope="module")
def deployment(endpoint, tmp_path_factory):
    return deploy_testnet(endpoint, ssh_keypair(tmp_path_factory.mktemp("ssh")))


@pytest.fixture(scope="module")
def imds(deployment) -> Imds:
    return Imds(region=REGION)


@pytest.fixture(scope="module")
def http(imds, deployment):
    """The IMDS over HTTP on loopback; `peer["ip"]` is the instance address callers have."""
    peer = {"ip": deployment.nodes[0].eni(0).primary_ip}
    server = serve(imds, ("127.0.0.1", 0), peer_ip=lambda _: peer["ip"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", peer
    server.shutdown()
    thread.join()


def token(imds: Imds, ip: str) -> dict[str, str]:
    status, _, body = imds.handle("PUT", "/latest/api/token", TTL, ip)
    assert status == 200
    return {"X-aws-ec2-metadata-token": body.decode()}


def get(imds: Imds, ip: str, path: str) -> str:
    status, _, body = imds.handle("GET", path, token(imds, ip), ip)
    assert status == 200, (path, status)
    return body.decode()


def ec2(endpoint: str):
    return boto3.client("ec2", region_name=REGION, endpoint_url=endpoint,
                        aws_access_key_id="test", aws_secret_access_key="test")


def test_token_flow(imds, deployment):
    ip = deployment.nodes[0].eni(1).primary_ip  # any address of the instance will do
    status, headers, body = imds.handle("PUT", "/latest/api/token", TTL, ip)
    assert status == 200 and headers["X-Aws-Ec2-Metadata-Token-Ttl-Seconds"] == "300"
    good = {"X-aws-ec2-metadata-token": body.decode()}
    path = "/latest/meta-data/instance-id"
    assert imds.handle("GET", path, good, ip)[2] == deployment.nodes[0].instance_id.encode()
    assert imds.handle("GET", path, {}, ip)[0] == 401  # IMDSv1 is off
    assert imds.handle("GET", path, {"X-aws-ec2-metadata-token": "forged"}, ip)[0] == 401
    other = deployment.nodes[1].eni(0).primary_ip
    assert imds.handle("GET", path, good, other)[0] == 401  # tokens are per instance
    for ttl in ("0", "21601", "-5", "soon"):
        assert imds.handle("PUT", "/latest/api/token",
                           {"X-aws-ec2-metadata-token-ttl-seconds": ttl}, ip)[0] == 400
    assert imds.handle("PUT", "/latest/api/token", {}, ip)[0] == 400
    assert imds.handle("PUT", "/latest/api/token",
                       {"X-aws-ec2-metadata-token-ttl-seconds": "21600"}, ip)[0] == 200
    assert imds.handle("PUT", "/latest/api/token", {**TTL, "X-Forwarded-For": "10.0.0.9"},
                       ip)[0] == 403
    assert imds.handle("GET", path, {**good, "X-Forwarded-For": "10.0.0.9"}, ip)[0] == 403
    assert imds.handle("PUT", "/latest/api/token", TTL, "10.41.1.250")[0] == 403  # no instance
    assert imds.handle("POST", path, good, ip)[0] == 405
    assert imds.handle("GET", "/latest/meta-data/no-such-thing", good, ip)[0] == 404
    assert imds.hop_limit(ip) == 1


def test_tokens_expire():
    now = [1000.0]
    imds = Imds(region=REGION, clock=lambda: now[0])
    assert imds._token_ttl(None, "i-1") is None
    status, _, body = imds._new_token("2", "i-1")
    assert status == 200 and imds._token_ttl(body.decode(), "i-1") == 2
    now[0] += 2.5
    assert imds._token_ttl(body.decode(), "i-1") is None


def test_listings_like_ec2(imds, deployment):
    node = deployment.nodes[0]
    ip = node.eni(0).primary_ip
    versions = get(imds, ip, "/").splitlines()
    assert {"2009-04-04", "2016-09-02", "2018-09-24", "2021-03-23", "latest"} <= set(versions)
    assert get(imds, ip, "/latest/").splitlines() == ["dynamic", "meta-data", "user-data"]
    top = get(imds, ip, "/2021-03-23/meta-data/").splitlines()
    assert {"ami-id", "instance-id", "local-ipv4", "mac", "network/", "placement/", "iam/",
            "public-keys/", "services/", "block-device-mapping/"} <= set(top)
    assert get(imds, ip, "/2009-04-04/meta-data/instance-id") == node.instance_id
    assert sorted(get(imds, ip, "/latest/meta-data/network/interfaces/macs/").split()) == \
        sorted(f"{e.mac}/" for e in node.enis)
    assert get(imds, ip, "/latest/meta-data/public-keys/") == f"0={CFG.cluster_name}-admin"
    key = get(imds, ip, "/latest/meta-data/public-keys/0/openssh-key")
    assert key.startswith("ssh-ed25519 ") and key.endswith(f" {CFG.cluster_name}-admin")
    # botocore asks for the zone with a trailing slash; EC2 answers the leaf.
    assert get(imds, ip, "/latest/meta-data/placement/availability-zone/") == \
        CFG.availability_zone
    assert get(imds, ip, "/latest/meta-data/placement/region") == REGION
    assert get(imds, ip, "/latest/meta-data/services/partition") == "aws"
    status, headers, body = imds.handle("GET", "/latest/user-data", token(imds, ip), ip)
    assert status == 200 and body == base64.b64decode(node.user_data_base64)
    doc = json.loads(get(imds, ip, "/latest/dynamic/instance-identity/document"))
    assert {k: doc[k] for k in ("instanceId", "availabilityZone", "region", "privateIp",
                                "imageId", "accountId", "instanceType")} == {
        "instanceId": node.instance_id, "availabilityZone": CFG.availability_zone,
        "region": REGION, "privateIp": node.eni(0).primary_ip, "imageId": node.image_id,
        "accountId": "123456789012", "instanceType": CFG.instance_type}
    assert imds.handle("GET", "/1999-01-01/meta-data/", token(imds, ip), ip)[0] == 404


def test_per_mac_data(imds, deployment):
    node = deployment.nodes[1]
    ip = node.eni(2).primary_ip
    macs = "/latest/meta-data/network/interfaces/macs"
    for eni in node.enis:
        data = {leaf: get(imds, ip, f"{macs}/{eni.mac}/{leaf}") for leaf in (
            "device-number", "interface-id", "local-ipv4s", "mac", "owner-id", "subnet-id",
            "subnet-ipv4-cidr-block", "vpc-id", "vpc-ipv4-cidr-block", "vpc-ipv4-cidr-blocks",
            "security-group-ids")}
        assert data == {
            "device-number": str(eni.device_index), "interface-id": eni.eni_id,
            "local-ipv4s": "\n".join(eni.private_ips), "mac": eni.mac,
            "owner-id": "123456789012", "subnet-id": eni.subnet_id,
            "subnet-ipv4-cidr-block": eni.subnet_cidr, "vpc-id": deployment.vpc_id,
            "vpc-ipv4-cidr-block": CFG.vpc_cidr, "vpc-ipv4-cidr-blocks": CFG.vpc_cidr,
            "security-group-ids": "\n".join(eni.security_group_ids)}
        assert get(imds, ip, f"{macs}/{eni.mac}/security-groups").startswith("network-")
    eip = node.management_eip
    assert get(imds, ip, f"{macs}/{node.eni(2).mac}/public-ipv4s") == eip.public_ip
    assert get(imds, ip, f"{macs}/{node.eni(2).mac}/ipv4-associations/{eip.public_ip}") == \
        eip.private_ip
    assert imds.handle("GET", f"{macs}/{node.eni(0).mac}/public-ipv4s", token(imds, ip),
                       ip)[0] == 404


def test_vip_moves_like_ec2(endpoint, imds, deployment):
    n1, n2 = deployment.nodes
    client = ec2(endpoint)
    local_ipv4s = "/latest/meta-data/network/interfaces/macs/{}/local-ipv4s"

    def ips(node) -> list[str]:
        return get(imds, node.eni(0).primary_ip, local_ipv4s.format(node.eni(0).mac)).split()

    assert ips(n1) == [n1.eni(0).primary_ip, CFG.peer_vip]
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidIPAddress.InUse"):
        client.assign_private_ip_addresses(NetworkInterfaceId=n2.eni(0).eni_id,
                                           PrivateIpAddresses=[CFG.peer_vip])
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidIPAddress.InUse"):
        client.assign_private_ip_addresses(NetworkInterfaceId=n2.eni(0).eni_id,
                                           PrivateIpAddresses=[n1.eni(0).primary_ip],
                                           AllowReassignment=True)
    try:
        # What awsvip does on the node taking over.
        client.assign_private_ip_addresses(NetworkInterfaceId=n2.eni(0).eni_id,
                                           PrivateIpAddresses=[CFG.peer_vip],
                                           AllowReassignment=True)
        assert ips(n1) == [n1.eni(0).primary_ip]
        assert ips(n2) == [n2.eni(0).primary_ip, CFG.citizen_vip, CFG.peer_vip]
        # The VIP now identifies node 2 to the IMDS, as its source address would on EC2.
        assert get(imds, CFG.peer_vip, "/latest/meta-data/instance-id") == n2.instance_id
        [described] = client.describe_network_interfaces(
            NetworkInterfaceIds=[n1.eni(0).eni_id])["NetworkInterfaces"]
        assert [a["PrivateIpAddress"] for a in described["PrivateIpAddresses"]] == \
            [n1.eni(0).primary_ip]
    finally:
        client.assign_private_ip_addresses(NetworkInterfaceId=n1.eni(0).eni_id,
                                           PrivateIpAddresses=[CFG.peer_vip],
                                           AllowReassignment=True)
    assert ips(n1) == [n1.eni(0).primary_ip, CFG.peer_vip]
    install_ec2_semantics()  # idempotent: a second call must not wrap twice
    assert ips(n2) == [n2.eni(0).primary_ip, CFG.citizen_vip]


def test_instance_role_credentials(http, endpoint, deployment, monkeypatch):
    base, peer = http
    node = deployment.nodes[0]
    peer["ip"] = node.eni(0).primary_ip
    fetcher = botocore.utils.InstanceMetadataFetcher(
        timeout=5, num_attempts=1, config={"ec2_metadata_service_endpoint": base})
    creds = fetcher.retrieve_iam_role_credentials()
    assert creds["role_name"].startswith("node-iam-role-")
    assert creds["access_key"].startswith("ASIA") and creds["token"]
    region = botocore.utils.InstanceMetadataRegionFetcher(
        timeout=5, num_attempts=1, config={"ec2_metadata_service_endpoint": base})
    assert region.retrieve_region() == REGION

    # A real session finding its credentials the way prep-ha-secret and fence_aws do.
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_EC2_METADATA_DISABLED"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", base)
    session = boto3.session.Session(region_name=REGION)
    assert session.get_credentials().method == "iam-role"
    identity = session.client("sts", endpoint_url=endpoint).get_caller_identity()
    role = creds["role_name"]
    assert identity["Arn"] == \
        f"arn:aws:sts::123456789012:assumed-role/{role}/{node.instance_id}"
    sm = session.client("secretsmanager", endpoint_url=endpoint)
    value = sm.get_secret_value(SecretId=deployment.secrets[CFG.hacluster_secret_name])
    assert value["SecretString"] == deployment.generated_passwords["secrets-hacluster-password"]


# The nodes' cloud-init crawler and network renderers, against the IMDS.
CLOUD_INIT_CRAWL = r"""
import base64, ipaddress, json, os, sys, tempfile
from cloudinit import distros, helpers, util
from cloudinit.net import netplan, network_state
from cloudinit.sources import DataSourceEc2 as ec2

base, macs = sys.argv[1], json.loads(sys.argv[2])
ec2.identify_platform = lambda: ec2.CloudNames.AWS  # this host's DMI is not EC2's
tmp = tempfile.mkdtemp()
paths = helpers.Paths({"cloud_dir": tmp, "run_dir": tmp})
distro = distros.fetch("debian")("debian", {}, paths)  # the node's: netplan renders
ds = ec2.DataSourceEc2({"datasource": {"Ec2": {"metadata_urls": [base], "timeout": 5,
                                              "max_wait": 10}}}, distro, paths)
ok = ds._get_data()


def lease(nic, distro=None):  # the VPC's DHCP, which names the subnet's router (.1)
    mac = next(m for m, n in macs.items() if n == nic)
    cidr = ds.metadata["network"]["interfaces"]["macs"][mac]["subnet-ipv4-cidr-block"]
    return {"routers": str(ipaddress.ip_network(cidr).network_address + 1)}


distro.dhcp_client.dhcp_discovery = lease  # this host has no such NIC to ask DHCP on
config = ec2.convert_ec2_metadata_network_config(ds.metadata["network"], distro,
                                                 macs_to_nics=macs, fallback_nic="ens5")
state = network_state.parse_net_config_data(config)
rendered = {}
# netplan only: the node renders with it (no ifupdown on the image).
for name, renderer, path in (("netplan", netplan.Renderer, "etc/netplan/50-cloud-init.yaml"),):
    target = tempfile.mkdtemp()
    renderer({"postcmds": False, "netplan_path": path, "eni_path": path,
              "links_path_prefix": None}).render_network_state(state, target=target)
    # netplan's own API writes to the running system's /etc/netplan (a throwaway tmpfs here).
    written = f"{target}/{path}" if os.path.exists(f"{target}/{path}") else f"/{path}"
    rendered[name] = open(written).read()
raw = ds.userdata_raw if isinstance(ds.userdata_raw, bytes) else ds.userdata_raw.encode()
print(json.dumps({
    "ok": ok, "api_version": ds._crawled_metadata["_metadata_api_version"],
    "instance_id": ds.get_instance_id(), "availability_zone": ds.availability_zone,
    "region": ds.region, "keys": ds.get_public_ssh_keys(),
    "user_data_base64": base64.b64encode(raw).decode(),
    "user_data": util.decomp_gzip(raw, decode=False).decode(),  # as cloud-init reads it
    "metadata": ds.metadata, "network": config, "rendered": rendered}, default=str))
"""


def test_cloud_init_crawls_the_imds(http, deployment, node_tools):
    base, peer = http
    node = deployment.nodes[0]  # holds the peer VIP on its primary ENI
    peer["ip"] = node.eni(0).primary_ip
    macs = {e.mac: f"ens{5 + e.device_index}" for e in node.enis}
    # The nodes' cloud-init (25.1), reaching the test's IMDS on loopback.
    out = node_tools.run(["python3", "-c", CLOUD_INIT_CRAWL, base, json.dumps(macs)],
                         network=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["ok"] and seen["api_version"] == "2021-03-23"
    assert (seen["instance_id"], seen["availability_zone"], seen["region"]) == \
        (node.instance_id, CFG.availability_zone, REGION)
    assert seen["user_data_base64"] == node.user_data_base64
    assert seen["user_data"] == node.user_data
    assert seen["keys"] == [get_key(deployment)]
    md = seen["metadata"]
    assert md["local-hostname"] == f"ip-{node.eni(0).primary_ip.replace('.', '-')}." \
                                   f"{REGION}.compute.internal"
    assert md["iam"]["info"]["InstanceProfileArn"] == node.instance_profile_arn
    assert "security-credentials" not in md["iam"]  # cloud-init never materialises them
    primary = md["network"]["interfaces"]["macs"][node.eni(0).mac]
    assert primary["local-ipv4s"] == [node.eni(0).primary_ip, CFG.peer_vip]

    # What the nodes' cloud-init renders from it (apply_full_imds_network_config defaults to
    # True): DHCP on all three ENIs, and the VIP the primary ENI held at first boot pinned
    # as a static address on ens5 -- after a failover it would come back at every boot.
    print("netplan:\n" + seen["rendered"]["netplan"])
    ethernets = seen["network"]["ethernets"]
    assert ethernets["ens5"]["addresses"] == [f"{CFG.peer_vip}/24"]
    assert "addresses" not in ethernets["ens6"] and "addresses" not in ethernets["ens7"]
    assert {n: e["dhcp4-overrides"]["route-metric"] for n, e in ethernets.items()} == \
        {"ens5": 100, "ens6": 200, "ens7": 300}
    # cloud-init 24.1 and later add a policy route per secondary ENI (table 100 + device
    # index): prep-ha-network replaces them with its own (management only, table 102).
    assert "routing-policy" not in ethernets["ens5"]
    assert [r["table"] for r in ethernets["ens6"]["routing-policy"]] == [101]
    assert [r["table"] for r in ethernets["ens7"]["routing-policy"]] == [102]
    assert f"- \"{CFG.peer_vip}/24\"" in seen["rendered"]["netplan"]  # netplan 1.1 quotes


def get_key(deployment) -> str:
    key = deployment.run.by_name("tls:index/privateKey:PrivateKey", "admin-ssh-key")
    return key.outputs["publicKeyOpenssh"].strip() + f" {CFG.cluster_name}-admin"


def test_http_server_answers_curl_style_requests(http, deployment):
    base, peer = http
    node = deployment.nodes[1]
    peer["ip"] = node.eni(0).primary_ip
    request = urllib.request.Request(f"{base}/latest/api/token", method="PUT", headers=TTL)
    with urllib.request.urlopen(request, timeout=5) as response:
        tok = response.read().decode()
    request = urllib.request.Request(f"{base}/latest/meta-data/mac",
                                     headers={"X-aws-ec2-metadata-token": tok})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.read().decode() == node.eni(0).mac
        assert response.headers["Server"].startswith("EC2ws")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{base}/latest/meta-data/mac", timeout=5)
    assert err.value.code == 401
