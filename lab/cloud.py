"""The lab's cloud host: what AWS is to the nodes, in one network namespace.

- the VPC router: .1 of every subnet, forwarding between them and the internet side, with
  EC2's source check (a packet leaves an ENI only from that subnet's addresses) and the
  1:1 NAT of Elastic IPs;
- the VPC's DHCP and DNS (dnsmasq): each ENI gets its primary private IP by MAC, and the AWS
  endpoint names and deb.debian.org resolve to this host, every other name to nothing;
- the AWS APIs: moto's server on 443 (TLS, lab CA), EC2 power made real (a stop kills the
  node's container, a start boots it again);
- the instance metadata service (lab/imds.py) on 169.254.169.254;
- the Debian mirror the nodes install from (lab/mirror.py), as deb.debian.org.

The servers run as `python -m lab.cloud serve RUN_DIR` inside the namespace; `wire()` runs
from the controller once the stack is deployed (DHCP leases and Elastic IPs come from it).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import logging
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path
from urllib.parse import parse_qs

from lab.netns import bridge_role, in_ns, run

IMDS_IP = "169.254.169.254"
ACCOUNT = "123456789012"
MIRROR_HOST = "deb.debian.org"
LOGGED_ACTIONS = ("StopInstances", "StartInstances", "RebootInstances",
                  "AssignPrivateIpAddresses", "UnassignPrivateIpAddresses", "ReplaceRoute")
# How long EC2 waits for a hung guest's OS shutdown before it forces the stop, unless the
# request says SkipOsShutdown. AWS publishes no figure; reports range from over 2 to about 5
# minutes. The lab's default, changed per run by writing seconds to RUN_DIR/HUNG_STOP_WAIT.
HUNG_STOP_WAIT_S = 120.0
HUNG_STOP_WAIT = "ec2-hung-stop-wait-s"
LOST_ZONES = "az-lost"  # RUN_DIR file: the AZs a drill took away (lab/weather.py), one a line
# The request being served (werkzeug serves each in a thread of its own): what moto's model
# of a stop does not see, the StopInstances parameters it does not know.
_REQUEST = threading.local()


@dataclass(frozen=True)
class CloudConfig:
    region: str
    # bridge -> CIDR: svc, hb, mgmt (node 2's zone: svc2, hb2, mgmt2 when multi-AZ), arb, inet
    subnets: dict[str, str]
    mirror: str  # the image's mirror directory
    zones: dict[str, str] = field(default_factory=dict)  # bridge -> AZ (not inet)
    # Multi-AZ: the peer's overlay IP and the NLB's subnets (one per node zone, in order),
    # whose route tables the NLB's traffic to it follows.
    overlay_ip: str | None = None
    nlb_subnets: tuple[str, ...] = ()

    def vpc_bridges(self) -> list[str]:
        """The stack's subnets (every bridge but the internet side)."""
        return [b for b in self.subnets if b != "inet"]

    def service_bridges(self) -> list[str]:
        """Where each node zone's AWS endpoints (and mirror) answer: its service subnet."""
        return [b for b in self.subnets if bridge_role(b) == "svc"]

    def bridges_of(self, zone: str) -> list[str]:
        return [b for b, z in self.zones.items() if z == zone]

    def router(self, bridge: str) -> str:
        return str(ipaddress.ip_network(self.subnets[bridge]).network_address + 1)

    def save(self, run_dir: Path) -> None:
        (run_dir / "cloud.json").write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, run_dir: Path) -> CloudConfig:
        doc = json.loads((run_dir / "cloud.json").read_text())
        return cls(**{**doc, "nlb_subnets": tuple(doc.get("nlb_subnets", ()))})


def endpoint_names(region: str) -> list[str]:
    # S3 names a bucket in front of the regional endpoint (BUCKET.s3.REGION.amazonaws.com).
    return [f"*.{region}.amazonaws.com", "*.amazonaws.com", f"*.s3.{region}.amazonaws.com"]


def make_certificates(run_dir: Path, region: str, ips: list[str]) -> Path:
    """A lab CA and a server certificate for the AWS endpoint names; returns the CA file."""
    ca_key, ca, key, csr, crt = (run_dir / n for n in
                                 ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=prep-ha lab CA", "-keyout", str(ca_key), "-out", str(ca)])
    run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={region} endpoints",
         "-keyout", str(key), "-out", str(csr)])
    ext = run_dir / "server.ext"
    sans = [f"DNS:{n}" for n in endpoint_names(region)] + [f"IP:{ip}" for ip in ips]
    ext.write_text(f"subjectAltName={','.join(sans)}\n")
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(crt)])
    return ca


# ---- evidence: what the EC2 API did, and when

class EventLog:
    """EC2 calls and power events (wall clock, shared with the controller): drill evidence."""

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
        _REQUEST.skip_os_shutdown = form.get("SkipOsShutdown") == "true"
        if form.get("Action") in LOGGED_ACTIONS:
            log.write(action=form["Action"], params={k: v for k, v in form.items()
                                                     if k not in ("Action", "Version")})
        return app(environ, start_response)
    return wrapped


def lost_zones(run_dir: Path) -> set[str]:
    try:
        return set((run_dir / LOST_ZONES).read_text().split())
    except OSError:
        return set()


def hung_stop_wait(run_dir: Path) -> float:
    try:
        return float((run_dir / HUNG_STOP_WAIT).read_text())
    except (OSError, ValueError):
        return HUNG_STOP_WAIT_S


def _install_power(run_dir: Path, log: EventLog) -> None:
    """EC2 power is real: stopping an instance kills its node, starting it boots it (never in
    a zone the drill lost). A hung guest (every process frozen, lab.node.freeze) stopped
    without SkipOsShutdown stays `stopping` for hung_stop_wait() first, as EC2 waits out the
    OS shutdown it never gets."""
    from moto.ec2.models.instances import Instance

    from lab.node import init_pid, is_stopped, load_specs, power_off, power_on

    def node(instance_id: str):  # noqa: ANN202
        path = run_dir / "nodes.json"
        specs = load_specs(path) if path.exists() else []
        return next((s for s in specs if s.instance_id == instance_id), None)

    orig_stop, orig_start = Instance.stop, Instance.start

    def off(instance, spec) -> None:  # noqa: ANN001
        orig_stop(instance)
        power_off(spec)
        log.write(power="off", instance=instance.id, node=spec.name)

    def stop(self):  # noqa: ANN001, ANN202
        spec = node(self.id)
        if spec is None:
            return orig_stop(self)
        pid = init_pid(spec)
        hung = pid is not None and is_stopped(pid)
        wait = 0.0 if getattr(_REQUEST, "skip_os_shutdown", False) or not hung \
            else hung_stop_wait(run_dir)
        if wait <= 0:
            previous = copy.copy(self._state)
            off(self, spec)
            return previous
        previous = copy.copy(self._state)
        self._state.name, self._state.code = "stopping", 64
        log.write(stopping=self.id, node=spec.name, os_shutdown_wait=wait)

        def later() -> None:
            time.sleep(wait)
            if self._state.name == "stopping":
                off(self, spec)
        threading.Thread(target=later, daemon=True).start()
        return previous

    def start(self):  # noqa: ANN001, ANN202
        if self._placement.zone in lost_zones(run_dir):
            from moto.ec2.exceptions import EC2ClientError

            raise EC2ClientError("InsufficientInstanceCapacity",
                                 f"no capacity in {self._placement.zone} (the lab lost the zone)")
        result = orig_start(self)
        if (spec := node(self.id)) is not None:
            log.write(power="on", instance=self.id, node=spec.name)
            threading.Thread(target=power_on, args=(spec,), daemon=True).start()
        return result

    Instance.stop, Instance.start = stop, start


def serve(run_dir: Path) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    from lab.imds import Imds, install_ec2_semantics
    from lab.imds import serve as serve_imds
    from lab.mirror import serve_mirror

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    cfg = CloudConfig.load(run_dir)
    log = EventLog(run_dir / "cloud-events.jsonl")
    app = _logging_app(DomainDispatcherApplication(create_backend_app), log)
    api = make_server("0.0.0.0", 443, app, threaded=True,
                      ssl_context=(str(run_dir / "server.pem"), str(run_dir / "server.key")))
    threading.Thread(target=api.serve_forever, daemon=True).start()
    install_ec2_semantics()
    _install_power(run_dir, log)
    imds = serve_imds(Imds(region=cfg.region, account=ACCOUNT), (IMDS_IP, 80))
    threading.Thread(target=imds.serve_forever, daemon=True).start()
    for bridge in cfg.service_bridges():
        serve_mirror(Path(cfg.mirror), cfg.router(bridge), 80, hosts=(MIRROR_HOST,))
    if cfg.overlay_ip:
        from lab.overlay import follow_overlay_routes

        threading.Thread(target=follow_overlay_routes, args=(cfg, run_dir),
                         daemon=True).start()
    (run_dir / "cloud.ready").touch()
    while True:  # until the lab kills every process of the cloud namespace
        time.sleep(3600)


# ---- wiring that needs the deployed stack

@dataclass(frozen=True)
class Lease:
    mac: str
    ip: str
    hostname: str


def dnsmasq_conf(cfg: CloudConfig, leases: list[Lease], run_dir: Path) -> str:
    """EC2's DHCP (fixed address per ENI, router .1) and DNS (the lab's names only). Each node
    zone's endpoints and mirror answer on its service router; a name lists every zone's, as
    the regional name of an interface endpoint lists each AZ's address."""
    endpoints = [cfg.router(b) for b in cfg.service_bridges()]
    lines = ["no-resolv", "no-hosts", "bind-interfaces", "except-interface=lo", "user=root",
             f"pid-file={run_dir / 'dnsmasq.pid'}", f"log-facility={run_dir / 'dnsmasq.log'}",
             f"dhcp-leasefile={run_dir / 'dnsmasq.leases'}",
             # EC2 hands an ENI its address whoever asks; a new instance (a fresh root, a
             # new machine-id, so a new DHCP client id) on the same ENI gets the same one.
             "dhcp-ignore-clid",
             f"domain={cfg.region}.compute.internal",
             *(f"address=/amazonaws.com/{ip}" for ip in endpoints),
             *(f"address=/{MIRROR_HOST}/{ip}" for ip in endpoints),
             # Every other name: no answer, so nothing on a node ever reaches outside.
             "address=/#/"]
    for bridge in cfg.vpc_bridges():
        net = ipaddress.ip_network(cfg.subnets[bridge])
        lines += [f"interface={bridge}",
                  f"dhcp-range=set:{bridge},{net.network_address},static,{net.netmask},1h",
                  f"dhcp-option=tag:{bridge},option:dns-server,{_resolver(cfg, bridge)}"]
    lines += [f"dhcp-host={le.mac},{le.ip},{le.hostname}" for le in leases]
    return "\n".join(lines) + "\n"


def _resolver(cfg: CloudConfig, bridge: str) -> str:
    """The VPC resolver a subnet's DHCP names: its own zone's (a lost AZ takes only its own)."""
    zone = cfg.zones.get(bridge)
    return next((cfg.router(b) for b in cfg.service_bridges() if cfg.zones.get(b) == zone),
                cfg.router(cfg.service_bridges()[0]))


def wire(cfg: CloudConfig, ns: str, leases: list[Lease], elastic_ips: dict[str, str],
         run_dir: Path, unchecked: dict[str, str] | None = None) -> None:
    """DHCP/DNS, the source check and the Elastic IPs' 1:1 NAT (public -> private).
    `unchecked`: MAC -> bridge of the ENIs whose source/destination check is off."""
    conf = run_dir / "dnsmasq.conf"
    conf.write_text(dnsmasq_conf(cfg, leases, run_dir))
    in_ns(ns, "dnsmasq", f"--conf-file={conf}")
    for mac, bridge in (unchecked or {}).items():
        in_ns(ns, "iptables", "-A", "FORWARD", "-i", bridge, "-m", "mac", "--mac-source", mac,
              "-j", "ACCEPT")
    for bridge in cfg.vpc_bridges():
        # EC2 delivers a packet out of an ENI only from that ENI's own addresses.
        in_ns(ns, "iptables", "-A", "FORWARD", "-i", bridge, "!", "-s", cfg.subnets[bridge],
              "-j", "DROP")
    for public, private in elastic_ips.items():
        in_ns(ns, "ip", "addr", "add", f"{public}/32", "dev", "inet")
        in_ns(ns, "iptables", "-t", "nat", "-A", "PREROUTING", "-d", public, "-j", "DNAT",
              "--to-destination", private)
        in_ns(ns, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", private, "-o", "inet",
              "-j", "SNAT", "--to-source", public)


# ---- the controller's window onto the EC2 API (run inside the namespace)

def _client(run_dir: Path, service: str = "ec2", **config: object):  # noqa: ANN202
    import boto3
    from botocore.config import Config

    cfg = CloudConfig.load(run_dir)
    return boto3.client(service, region_name=cfg.region, endpoint_url="https://127.0.0.1",
                        verify=False, aws_access_key_id="lab", aws_secret_access_key="lab",
                        config=Config(**config))


_ec2 = _client


def alerts(run_dir: Path, topic_arn: str, cluster: str, since: str) -> None:
    """Print what the stack's alerting delivered since the epoch time `since`: the topic's
    messages (through a queue subscribed to it on the first call) and the metric sums."""
    import datetime as dt

    from lab.alerts import AlertWatch

    watch = AlertWatch.start(_client(run_dir, "sns"), _client(run_dir, "sqs"), topic_arn)
    seen = watch.delivered(dt.datetime.fromtimestamp(float(since), dt.UTC),
                           _client(run_dir, "cloudwatch"), cluster)
    print(json.dumps({"alerts": [{"subject": a.subject, "message": a.message,
                                  "t": a.timestamp.timestamp()} for a in seen.alerts],
                      "metrics": seen.metrics}))


def describe(run_dir: Path) -> None:
    """Print {instance id: {state, ips}} as EC2 (moto) holds it."""
    out = {}
    for r in _ec2(run_dir).describe_instances()["Reservations"]:
        for i in r["Instances"]:
            ips = [a["PrivateIpAddress"] for n in i.get("NetworkInterfaces", [])
                   for a in n["PrivateIpAddresses"]]
            out[i["InstanceId"]] = {"state": i["State"]["Name"], "ips": ips}
    print(json.dumps(out))


def replace_ec2_instance(ec2, old_id: str) -> str:  # noqa: ANN001 - a boto3 EC2 client
    """What `pulumi up --replace` of a node's instance does in EC2, delete before create: the
    volume and the other ENIs detached (EC2 stops the instance first), the instance
    terminated, a new one run on the same primary ENI with the same inputs, everything
    attached again. Returns the new instance id."""
    import base64

    [old] = ec2.describe_instances(InstanceIds=[old_id])["Reservations"][0]["Instances"]
    user_data = ec2.describe_instance_attribute(
        InstanceId=old_id, Attribute="userData").get("UserData", {}).get("Value")
    nics = {n["Attachment"]["DeviceIndex"]: n for n in old["NetworkInterfaces"]}
    volumes = [(m["DeviceName"], m["Ebs"]["VolumeId"]) for m in old["BlockDeviceMappings"]
               if m["DeviceName"] != old.get("RootDeviceName")]
    ec2.stop_instances(InstanceIds=[old_id])  # the volume attachment's stop before detaching
    for device, volume in volumes:
        ec2.detach_volume(VolumeId=volume, InstanceId=old_id, Device=device)
    for index, nic in nics.items():
        if index:
            ec2.detach_network_interface(AttachmentId=nic["Attachment"]["AttachmentId"])
    ec2.terminate_instances(InstanceIds=[old_id])
    metadata = {k: old["MetadataOptions"][k] for k in ("HttpEndpoint", "HttpTokens",
                                                       "HttpPutResponseHopLimit",
                                                       "InstanceMetadataTags")}
    new_id = ec2.run_instances(
        ImageId=old["ImageId"], InstanceType=old["InstanceType"], MinCount=1, MaxCount=1,
        KeyName=old["KeyName"], IamInstanceProfile={"Arn": old["IamInstanceProfile"]["Arn"]},
        Placement={"AvailabilityZone": old["Placement"]["AvailabilityZone"]},
        NetworkInterfaces=[{"DeviceIndex": 0, "NetworkInterfaceId": nics[0]["NetworkInterfaceId"]}],
        UserData=base64.b64decode(user_data) if user_data else b"", MetadataOptions=metadata,
        TagSpecifications=[{"ResourceType": "instance", "Tags": old.get("Tags", [])}],
    )["Instances"][0]["InstanceId"]
    for index, nic in sorted(nics.items()):
        if index:
            ec2.attach_network_interface(NetworkInterfaceId=nic["NetworkInterfaceId"],
                                         InstanceId=new_id, DeviceIndex=index)
    for device, volume in volumes:
        ec2.attach_volume(VolumeId=volume, InstanceId=new_id, Device=device)
    return new_id


def _s3(run_dir: Path):  # noqa: ANN202
    from lab.motocloud import S3_CLIENT

    return _client(run_dir, "s3", **S3_CLIENT)


def get_object(run_dir: Path, bucket: str, key: str, path: str) -> None:
    Path(path).write_bytes(_s3(run_dir).get_object(Bucket=bucket, Key=key)["Body"].read())


def put_object(run_dir: Path, bucket: str, key: str, path: str) -> None:
    _s3(run_dir).put_object(Bucket=bucket, Key=key, Body=Path(path).read_bytes())


def tag_instances(run_dir: Path, key: str, value: str, *ids: str) -> None:
    _ec2(run_dir).create_tags(Resources=list(ids), Tags=[{"Key": key, "Value": value}])


def start_instances(run_dir: Path, *ids: str) -> None:
    _ec2(run_dir).start_instances(InstanceIds=list(ids))


def stop_instances(run_dir: Path, *ids: str) -> None:
    _ec2(run_dir).stop_instances(InstanceIds=list(ids), Force=True)


if __name__ == "__main__":
    import urllib3

    urllib3.disable_warnings()  # the controller's own calls to 127.0.0.1 skip the lab CA
    command, directory = sys.argv[1], Path(sys.argv[2])
    {"serve": serve, "describe": describe, "start": start_instances,
     "stop": stop_instances, "alerts": alerts, "get-object": get_object,
     "put-object": put_object, "tag": tag_instances,
     "replace": lambda d, old: print(replace_ec2_instance(_ec2(d), old))}[command](
        directory, *sys.argv[3:])
