"""The lab's `pulumi up`: the real program, with moto as the cloud behind the Pulumi mocks.

Runs where the operator sits (the lab's client namespace), against moto's endpoint over TLS:
every resource the program declares is created in moto by lab/motocloud.py (whose docstring
lists which types are real in moto and which are faked: placement group, Commands,
components). Resources register in the SDK's order: a resource only after its depends_on (a
component standing for its children) and the resources its inputs refer to, as the engine
creates them. The Commands are not run here: they are described, in that order, for the lab
to run over SSH as pulumi-command would.

The result, a Deployment, is JSON round-trippable and carries no secret value: the values
stored in Secrets Manager, the generated passwords, the SSH private key and the ProgramRun
stay in memory (or go, only if asked, to a separate 0600 file).

    python -m lab.deploy testnet --endpoint https://10.x.y.z --ca-bundle ca.pem \
        --region eu-central-1 --ssh-key admin.key --keystore ks.json \
        --keystore-password-file pw --out deployment.json [--secret-values secrets.json]

The keystore and its password reach moto as they reach AWS: the program's keystore-put local
Command runs `python -m prep_ha put-keystore` here, given the files' paths (never the values)
in the environment, as scripts/deploy gives them.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import gzip
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.motocloud import MotoCloud, seed_debian_amis
from lab.program import ACCOUNT, ProgramRun, run_stack, stack_config
from prep_ha.keystore import KEYSTORE_ENV, PASSWORD_FILE_ENV
from prep_ha.payload import TAG as PAYLOAD_TAG

__all__ = ["Command", "Deployment", "ElasticIp", "Eni", "MotoCloud", "Node", "Volume",
           "deploy", "main", "seed_debian_amis"]

COMMAND = "command:remote:Command"
LOCAL_COMMAND = "command:local:Command"
INSTANCE = "aws:ec2/instance:Instance"
NODE_TAG = "prep-ha:node"


def _json_fields(obj: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(obj):
        if not f.metadata.get("json", True):
            continue
        value = getattr(obj, f.name)
        if isinstance(value, list):
            value = [_json_fields(v) if dataclasses.is_dataclass(v) else v for v in value]
        elif dataclasses.is_dataclass(value):
            value = _json_fields(value)
        out[f.name] = value
    return out


def _memory_only(default: Any = None, factory: Any = None) -> Any:
    """A field kept in memory only: not written to JSON, not compared."""
    if factory is not None:
        return field(default_factory=factory, compare=False, repr=False,
                     metadata={"json": False})
    return field(default=default, compare=False, repr=False, metadata={"json": False})


@dataclass
class Eni:
    eni_id: str
    device_index: int
    mac: str
    private_ips: list[str]  # primary first
    primary_ip: str
    subnet_id: str
    subnet_cidr: str
    security_group_ids: list[str]
    description: str
    # EC2's source/destination check; off on a multi-AZ service ENI (the overlay IP).
    source_dest_check: bool = True


@dataclass
class Volume:
    volume_id: str
    device: str


@dataclass
class ElasticIp:
    allocation_id: str
    public_ip: str
    private_ip: str  # "" when not associated
    eni_id: str
    name: str  # the Name tag


@dataclass
class Node:
    node: str  # the prep-ha:node tag (the arbiter, which has none: its Name)
    instance_id: str
    # What EC2 holds (base64 of the bytes run_instances got), and its text as cloud-init reads
    # it (gunzipped when the program sends it gzip-compressed).
    user_data_base64: str
    user_data: str
    image_id: str
    instance_type: str
    availability_zone: str
    key_name: str
    instance_profile_arn: str
    enis: list[Eni]  # by device index
    data_volumes: list[Volume]
    management_eip: ElasticIp | None
    cluster_node: bool = True  # False for the quorum arbiter
    # The payload its tag names (prep_ha/payload.py), in the deployment's payload bucket.
    payload_digest: str = ""

    def eni(self, device_index: int) -> Eni:
        return next(e for e in self.enis if e.device_index == device_index)


@dataclass
class Command:
    """A command:remote:Command as declared: the lab runs it over SSH, in this order."""

    name: str
    host: str
    user: str
    port: int
    create: str
    update: str | None
    delete: str | None
    stdin: str | None
    triggers: list[Any] | None
    environment: dict[str, str] | None
    depends_on: list[str]  # names of the Commands it waits for
    host_key: str | None = None  # the public host key the connection pins
    private_key: str | None = _memory_only()
    # A command:local:Command the lab runs where the operator sits, in order with the rest.
    local: bool = False
    # Its stdin was the admin SSH key (a secret): not kept here, the lab passes its key file.
    stdin_is_admin_key: bool = False


@dataclass
class Deployment:
    stack: str
    region: str
    account: str
    vpc_id: str
    vpc_cidr: str
    subnets: dict[str, dict[str, str]]  # role ("service", ...) -> {id, cidr, availability_zone}
    instances: list[Node]
    secrets: dict[str, str]  # Secrets Manager name -> ARN
    elastic_ips: list[ElasticIp]
    load_balancer: dict[str, str]  # arn, dns_name, public_ip
    commands: list[Command]
    outputs: dict[str, Any]  # the stack's non-secret exports
    payload_bucket: str  # where the instances' payloads are (components/payload.py)
    # In memory only: the values the program stored in Secrets Manager (by secret name) and
    # the passwords generated for it (by logical name); and the program run itself.
    secret_values: dict[str, str] = _memory_only(factory=dict)
    generated_passwords: dict[str, str] = _memory_only(factory=dict)
    run: ProgramRun | None = _memory_only()

    def node(self, name: str) -> Node:
        return next(n for n in self.instances if n.node == name)

    @property
    def nodes(self) -> list[Node]:
        """The two cluster nodes (without the arbiter), node 1 first."""
        return [n for n in self.instances if n.cluster_node]

    def to_json(self) -> str:
        return json.dumps(_json_fields(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        doc = json.loads(text)

        def eip(d: dict | None) -> ElasticIp | None:
            return ElasticIp(**d) if d else None

        nodes = [Node(**{**n, "enis": [Eni(**e) for e in n["enis"]],
                         "data_volumes": [Volume(**v) for v in n["data_volumes"]],
                         "management_eip": eip(n["management_eip"])})
                 for n in doc["instances"]]
        return cls(**{**doc, "instances": nodes,
                      "elastic_ips": [ElasticIp(**e) for e in doc["elastic_ips"]],
                      "commands": [Command(**c) for c in doc["commands"]]})


def _user_data_text(encoded: str | None) -> str:
    raw = base64.b64decode(encoded) if encoded else b""
    return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()


def _describe(cloud: MotoCloud, stack: str, run: ProgramRun) -> Deployment:
    ec2 = cloud.ec2
    vpcs = run.of_type("aws:ec2/vpc:Vpc")
    subnet_resources = run.of_type("aws:ec2/subnet:Subnet")
    subnet_ids = [s.id for s in subnet_resources]
    subnets = {s["SubnetId"]: s for s in ec2.describe_subnets(SubnetIds=subnet_ids)["Subnets"]}
    vpc_id = vpcs[0].id if vpcs else next(iter(subnets.values()))["VpcId"]
    [vpc] = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"]

    ours = {r.id for r in run.of_type("aws:ec2/eip:Eip")}
    eips = []
    described = ec2.describe_addresses(AllocationIds=sorted(ours))["Addresses"] if ours else []
    for a in described:
        tags = {t["Key"]: t["Value"] for t in a.get("Tags", [])}
        eips.append(ElasticIp(a["AllocationId"], a["PublicIp"], a.get("PrivateIpAddress", ""),
                              a.get("NetworkInterfaceId", ""), tags.get("Name", "")))
    eip_by_eni = {e.eni_id: e for e in eips if e.eni_id}

    nodes = []
    for resource in sorted(run.of_type(INSTANCE), key=lambda r: r.name):
        [inst] = ec2.describe_instances(InstanceIds=[resource.id])["Reservations"][0]["Instances"]
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        attr = ec2.describe_instance_attribute(InstanceId=resource.id, Attribute="userData")
        encoded = attr.get("UserData", {}).get("Value")
        enis = []
        for nic in sorted(inst["NetworkInterfaces"], key=lambda n: n["Attachment"]["DeviceIndex"]):
            ips = sorted(nic["PrivateIpAddresses"], key=lambda a: not a.get("Primary"))
            subnet = subnets.get(nic["SubnetId"]) or ec2.describe_subnets(
                SubnetIds=[nic["SubnetId"]])["Subnets"][0]
            enis.append(Eni(nic["NetworkInterfaceId"], nic["Attachment"]["DeviceIndex"],
                            nic["MacAddress"], [a["PrivateIpAddress"] for a in ips],
                            nic["PrivateIpAddress"], nic["SubnetId"], subnet["CidrBlock"],
                            [g["GroupId"] for g in nic.get("Groups", [])],
                            nic.get("Description", ""), nic.get("SourceDestCheck", True)))
        volumes = [Volume(m["Ebs"]["VolumeId"], m["DeviceName"])
                   for m in inst.get("BlockDeviceMappings", [])
                   if m["DeviceName"] != inst.get("RootDeviceName")
                   and m["Ebs"]["VolumeId"] in {v.id for v in run.of_type("aws:ebs/volume:Volume")}]
        management = next((eip_by_eni[e.eni_id] for e in enis
                           if e.device_index == 2 and e.eni_id in eip_by_eni), None)
        nodes.append(Node(
            node=tags.get(NODE_TAG, tags.get("Name", resource.name)),
            instance_id=resource.id,
            user_data_base64=encoded or "", user_data=_user_data_text(encoded),
            image_id=inst["ImageId"], instance_type=inst["InstanceType"],
            availability_zone=inst["Placement"]["AvailabilityZone"],
            key_name=inst.get("KeyName", ""),
            instance_profile_arn=inst.get("IamInstanceProfile", {}).get("Arn", ""),
            enis=enis, data_volumes=volumes, management_eip=management,
            cluster_node=NODE_TAG in tags, payload_digest=tags.get(PAYLOAD_TAG, "")))
    nodes.sort(key=lambda n: n.node)  # node 1, node 2, then the arbiter (lab/topology.py)

    by_key = {r.key: r for r in run.resources}
    commands = []
    for c in run.resources:
        # The remote Commands this one waits for.
        waits = [by_key[k].name for k in c.depends_on
                 if k in by_key and by_key[k].type == COMMAND]
        if c.type == LOCAL_COMMAND and c.name in cloud.deferred_local_commands:
            commands.append(_local(c, cloud.ssh_private_key, waits))
        if c.type != COMMAND:
            continue
        conn = c.inputs.get("connection") or {}
        commands.append(Command(
            name=c.name, host=conn.get("host", ""), user=conn.get("user", "root"),
            port=int(conn.get("port", 22)), create=c.inputs.get("create", ""),
            update=c.inputs.get("update"), delete=c.inputs.get("delete"),
            stdin=c.inputs.get("stdin"), triggers=c.inputs.get("triggers"),
            environment=c.inputs.get("environment"),
            depends_on=waits,
            host_key=conn.get("hostKey"), private_key=conn.get("privateKey")))

    lbs = run.of_type("aws:lb/loadBalancer:LoadBalancer")
    load_balancer = {}
    if lbs:
        lb = lbs[0]
        alloc = next((m.get("allocationId") for m in lb.inputs.get("subnetMappings") or []), "")
        load_balancer = {"arn": lb.id, "dns_name": lb.outputs.get("dnsName", ""),
                         "public_ip": next((e.public_ip for e in eips
                                            if e.allocation_id == alloc), "")}
    return Deployment(
        stack=stack, region=cloud.region, account=ACCOUNT, vpc_id=vpc_id,
        vpc_cidr=vpc["CidrBlock"],
        subnets={s.name.split("-", 1)[-1]: {"id": s.id, "cidr": subnets[s.id]["CidrBlock"],
                                             "availability_zone":
                                                 subnets[s.id]["AvailabilityZone"]}
                 for s in subnet_resources},
        instances=nodes,
        secrets={s.inputs.get("name", s.outputs.get("name", s.name)): s.id
                 for s in run.of_type("aws:secretsmanager/secret:Secret")},
        elastic_ips=eips, load_balancer=load_balancer, commands=commands,
        outputs={k: v for k, v in run.outputs.items() if k not in run.secret_outputs},
        payload_bucket=next(b.id for b in run.of_type("aws:s3/bucket:Bucket")),
        secret_values=dict(cloud.secret_values), generated_passwords=dict(cloud.passwords),
        run=run)


def _local(c: Any, admin_key: str, depends_on: list[str]) -> Command:
    stdin = c.inputs.get("stdin")
    if stdin is not None and c.is_secret("stdin") and stdin.strip() != admin_key.strip():
        raise ValueError(f"local Command {c.name}: a secret stdin that is not the admin key")
    secret = stdin is not None and c.is_secret("stdin")
    return Command(name=c.name, host="", user="", port=0, create=c.inputs.get("create", ""),
                   update=c.inputs.get("update"), delete=c.inputs.get("delete"),
                   stdin=None if secret else stdin, triggers=c.inputs.get("triggers"),
                   environment=c.inputs.get("environment"), depends_on=depends_on,
                   local=True, stdin_is_admin_key=secret)


def deploy(stack: str, *, endpoint: str, ca_bundle: str | None, region: str,
           ssh_key: tuple[str, str], keystore_file: Path, keystore_password_file: Path,
           overrides: dict | None = None) -> Deployment:
    """Run the program for `stack` against moto at `endpoint`; describe what it created.

    `ssh_key` is (private OpenSSH text, public OpenSSH line) of an ed25519 key: the program's
    tls.PrivateKey. The stack's own `aws:region` must equal `region`.
    """
    configured = stack_config(stack, overrides).get("aws:region")
    if configured not in (None, region):
        raise ValueError(f"stack {stack} is configured for {configured}, not {region}")
    cloud = MotoCloud(endpoint=endpoint, ca_bundle=ca_bundle, region=region, ssh_key=ssh_key)
    cloud.local_env.update({KEYSTORE_ENV: str(keystore_file),
                            PASSWORD_FILE_ENV: str(keystore_password_file)})
    run = run_stack(stack, {"aws:region": region, **(overrides or {})}, cloud=cloud)
    return _describe(cloud, stack, run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stack")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--ca-bundle")
    parser.add_argument("--region", required=True)
    parser.add_argument("--ssh-key", required=True, type=Path,
                        help="ed25519 private key file; the public key is FILE.pub")
    parser.add_argument("--keystore", required=True, type=Path)
    parser.add_argument("--keystore-password-file", required=True, type=Path)
    parser.add_argument("--override", action="append", default=[], metavar="KEY=JSON",
                        help="stack config override; the value is JSON (or a plain string)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--secret-values", type=Path,
                        help="also write the secret values and generated passwords (mode 0600)")
    args = parser.parse_args(argv)

    overrides: dict[str, Any] = {}
    for item in args.override:
        key, _, raw = item.partition("=")
        try:
            overrides[key] = json.loads(raw)
        except ValueError:
            overrides[key] = raw
    deployment = deploy(
        args.stack, endpoint=args.endpoint, ca_bundle=args.ca_bundle, region=args.region,
        ssh_key=(args.ssh_key.read_text(), Path(f"{args.ssh_key}.pub").read_text().strip()),
        keystore_file=args.keystore.resolve(),
        keystore_password_file=args.keystore_password_file.resolve(),
        overrides=overrides)
    _write(args.out, deployment.to_json())
    if args.secret_values:
        _write(args.secret_values, json.dumps({
            "secret_values": deployment.secret_values,
            "generated_passwords": deployment.generated_passwords}), mode=0o600)
    return 0


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # also when a stale .tmp was left with other permissions
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.rename(path)


if __name__ == "__main__":
    sys.exit(main())
