"""The lab's cloud host: moto as EC2 (over TLS, at the real endpoint name) and a per-node IMDSv2.

The packaged agents are not pointed at moto by an endpoint option (fence_aws has none, and
Debian's boto3 1.26 and aws CLI 2.9 predate AWS_ENDPOINT_URL): each node's /etc/hosts maps
ec2.<region>.amazonaws.com to this host, which serves moto on 443 with a certificate from a
lab CA the nodes trust through AWS_CA_BUNDLE. EC2 power is real here: stopping an instance
in moto kills that node's processes, starting it boots the node again.

Run inside the cloud namespace as `python -m lab.cloud serve RUN_DIR`.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from urllib.parse import parse_qs

from lab.netns import run
from lab.node import NodeSpec, load_specs, power_off, power_on

IMDS_IP = "169.254.169.254"
LOGGED_ACTIONS = ("StopInstances", "StartInstances", "RebootInstances",
                  "AssignPrivateIpAddresses", "UnassignPrivateIpAddresses")


def endpoint_host(region: str) -> str:
    return f"ec2.{region}.amazonaws.com"


def make_certificates(run_dir: Path, region: str, cloud_ip: str) -> Path:
    """A lab CA and a server certificate for the EC2 endpoint name; returns the CA bundle."""
    ca_key, ca, key, csr, crt = (run_dir / n for n in
                                 ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=prep-ha lab CA", "-keyout", str(ca_key), "-out", str(ca)])
    run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={endpoint_host(region)}",
         "-keyout", str(key), "-out", str(csr)])
    ext = run_dir / "server.ext"
    ext.write_text(f"subjectAltName=DNS:{endpoint_host(region)},IP:{cloud_ip}\n")
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(crt)])
    return ca


@dataclass(frozen=True)
class CloudConfig:
    region: str
    availability_zone: str
    cluster_name: str
    vpc_cidr: str
    service_subnet_cidr: str
    cloud_ip: str
    vips: tuple[str, str]  # VIP i starts on node i's primary ENI

    @classmethod
    def load(cls, run_dir: Path) -> CloudConfig:
        data = json.loads((run_dir / "cloud.json").read_text())
        return cls(**{**data, "vips": tuple(data["vips"])})


class EventLog:
    """What the EC2 API did and when (wall clock, shared with the controller): drill evidence."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def write(self, **event: object) -> None:
        with self._lock, self.path.open("a") as f:
            f.write(json.dumps({"t": time.time(), **event}) + "\n")


def read_events(run_dir: Path, since: float = 0) -> list[dict]:
    path = run_dir / "cloud-events.jsonl"
    if not path.exists():
        return []
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in events if e["t"] >= since]


def _logging_app(app, log: EventLog):  # noqa: ANN001, ANN202 - WSGI
    def wrapped(environ, start_response):  # noqa: ANN001, ANN202
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = BytesIO(body)
        form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
        if form.get("Action") in LOGGED_ACTIONS:
            log.write(action=form["Action"], params={k: v for k, v in form.items()
                                                     if k not in ("Action", "Version")})
        return app(environ, start_response)
    return wrapped


def _install_ec2_semantics(nodes: dict[str, NodeSpec], log: EventLog) -> None:
    """Give moto what the drill depends on: real power, and EC2's IP reassignment."""
    from moto.ec2.models.elastic_network_interfaces import NetworkInterfaceBackend
    from moto.ec2.models.instances import Instance

    orig_stop, orig_start = Instance.stop, Instance.start
    orig_assign = NetworkInterfaceBackend.assign_private_ip_addresses

    def stop(self):  # noqa: ANN001, ANN202
        result = orig_stop(self)
        spec = nodes.get(self.id)
        if spec is not None:
            power_off(spec)
            log.write(power="off", instance=self.id, node=spec.name)
        return result

    def start(self):  # noqa: ANN001, ANN202
        result = orig_start(self)
        spec = nodes.get(self.id)
        if spec is not None:
            log.write(power="on", instance=self.id, node=spec.name)
            threading.Thread(target=power_on, args=(spec,), daemon=True).start()
        return result

    def assign(self, eni_id, private_ip_addresses=None, secondary_ips_count=None):  # noqa: ANN001, ANN202
        # awsvip passes --allow-reassignment: EC2 takes the address off its current ENI.
        # moto would leave it on both, and the old node's awsvip monitor would then lie.
        for eni in self.enis.values():
            if eni.id != eni_id:
                eni.private_ip_addresses = [
                    a for a in eni.private_ip_addresses if a.get("Primary")
                    or a.get("PrivateIpAddress") not in (private_ip_addresses or ())]
        return orig_assign(self, eni_id, private_ip_addresses, secondary_ips_count)

    Instance.stop, Instance.start = stop, start
    NetworkInterfaceBackend.assign_private_ip_addresses = assign


def create_inventory(ec2, cfg: CloudConfig, specs: list[NodeSpec]) -> list[dict]:  # noqa: ANN001
    """The stack's two instances, their primary (service) ENIs and the VIPs, as EC2 holds them."""
    vpc = ec2.create_vpc(CidrBlock=cfg.vpc_cidr)["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=cfg.service_subnet_cidr,
                               AvailabilityZone=cfg.availability_zone)["Subnet"]["SubnetId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    inventory = []
    for spec, vip in zip(specs, cfg.vips, strict=True):
        inst = ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, InstanceType="m6i.xlarge",
            SubnetId=subnet, PrivateIpAddress=spec.service_ip,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                {"Key": "Name", "Value": spec.name},
                {"Key": "prep-ha:cluster", "Value": cfg.cluster_name}]}],
        )["Instances"][0]
        eni = inst["NetworkInterfaces"][0]
        ec2.assign_private_ip_addresses(NetworkInterfaceId=eni["NetworkInterfaceId"],
                                        PrivateIpAddresses=[vip], AllowReassignment=True)
        inventory.append({"node": spec.name, "instance_id": inst["InstanceId"],
                          "eni_id": eni["NetworkInterfaceId"], "mac": eni["MacAddress"],
                          "service_ip": spec.service_ip})
    return inventory


def _imds_handler(by_ip: dict[str, dict]):  # noqa: ANN202
    tokens: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, body: str = "") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:  # noqa: N802
            if self.path != "/latest/api/token":
                return self._send(404)
            token = secrets.token_urlsafe(24)
            tokens.add(token)
            self._send(200, token)

        def do_GET(self) -> None:  # noqa: N802
            # IMDSv2 required, as on the product's instances.
            if self.headers.get("X-aws-ec2-metadata-token") not in tokens:
                return self._send(401)
            node = by_ip.get(self.client_address[0])
            if node is None:
                return self._send(404)
            answers = {
                "/latest/meta-data/instance-id": node["instance_id"],
                "/latest/meta-data/mac": node["mac"],
                f"/latest/meta-data/network/interfaces/macs/{node['mac']}/interface-id":
                    node["eni_id"],
            }
            body = answers.get(self.path)
            self._send(200, body) if body is not None else self._send(404)

    return Handler


def serve(run_dir: Path) -> None:
    import boto3
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    cfg = CloudConfig.load(run_dir)
    specs = load_specs(run_dir / "nodes.json")
    log = EventLog(run_dir / "cloud-events.jsonl")
    app = _logging_app(DomainDispatcherApplication(create_backend_app), log)
    server = make_server(cfg.cloud_ip, 443, app, threaded=True,
                         ssl_context=(str(run_dir / "server.pem"), str(run_dir / "server.key")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ec2 = boto3.client("ec2", region_name=cfg.region, endpoint_url=f"https://{cfg.cloud_ip}",
                       verify=str(run_dir / "ca.pem"), aws_access_key_id="lab",
                       aws_secret_access_key="lab")
    inventory = create_inventory(ec2, cfg, specs)
    _install_ec2_semantics({i["instance_id"]: s for i, s in zip(inventory, specs, strict=True)},
                           log)
    imds = ThreadingHTTPServer((IMDS_IP, 80),
                               _imds_handler({i["service_ip"]: i for i in inventory}))
    threading.Thread(target=imds.serve_forever, daemon=True).start()
    tmp = run_dir / "inventory.json.tmp"
    tmp.write_text(json.dumps(inventory, indent=1))
    tmp.rename(run_dir / "inventory.json")
    # Lives until the lab kills every process of the cloud namespace.
    while True:
        time.sleep(3600)


def describe(run_dir: Path) -> None:
    """Print {instance id: state} as moto holds it (run inside the cloud namespace)."""
    import boto3

    cfg = CloudConfig.load(run_dir)
    ec2 = boto3.client("ec2", region_name=cfg.region, endpoint_url=f"https://{cfg.cloud_ip}",
                       verify=str(run_dir / "ca.pem"), aws_access_key_id="lab",
                       aws_secret_access_key="lab")
    out = {}
    for r in ec2.describe_instances()["Reservations"]:
        for i in r["Instances"]:
            ips = [a["PrivateIpAddress"] for n in i.get("NetworkInterfaces", [])
                   for a in n["PrivateIpAddresses"]]
            out[i["InstanceId"]] = {"state": i["State"]["Name"], "ips": ips}
    print(json.dumps(out))


if __name__ == "__main__":
    command, directory = sys.argv[1], Path(sys.argv[2])
    {"serve": serve, "describe": describe}[command](directory)
