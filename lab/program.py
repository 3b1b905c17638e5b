"""Run the real `__main__.py` under `pulumi.runtime.set_mocks`, with a pluggable cloud.

    run = run_stack("testnet", cloud=FakeCloud("eu-central-1"), secrets={...})

No Pulumi CLI: config comes from Pulumi.<stack>.yaml the way the CLI hands it to a program
(strings, lists as JSON), the two secret keys get the caller's values marked secret, and a
`Cloud` answers each resource registration (id and outputs) and each provider function call.
The unit tests' cloud invents outputs (FakeCloud); the lab's cloud creates the resources in
moto (lab/deploy.py). Secret inputs stay visible: `CapturedResource.secret_paths` lists
every input path whose value was a secret Output, and `is_secret(path)` checks one.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import runpy
import sys
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pulumi
import yaml
from pulumi.runtime import rpc
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from prep_ha.release import DEBIAN_VERSION

PROJECT_DIR = Path(__file__).resolve().parent.parent
PROGRAM = PROJECT_DIR / "__main__.py"
PROJECT = "icon-prep-ha"
NAMESPACE = "icon-prep-ha"
ACCOUNT = "123456789012"
# The program's secret config keys: set with `pulumi config set --secret`.
SECRET_KEYS = ("keystore", "keystorePassword")


class Cloud(Protocol):
    """What answers the program's resource registrations and provider function calls.

    `inputs`/`args` arrive with secrets unwrapped. `new_resource` returns the physical id and
    the outputs to add to the inputs (Pulumi resources echo their inputs as outputs).
    Registrations may arrive from several threads; run_stack serialises them.
    """

    def new_resource(self, type_: str, name: str,
                     inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]: ...

    def call(self, token: str, args: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CapturedResource:
    """One resource the program registered: its type token, logical name and inputs.

    `inputs` has secrets unwrapped to their plain values (for easy assertions);
    `secret_paths` names each input that was secret, as dotted paths ("secretString",
    "rootBlockDevice.tags.Name", "ingress.0.cidrBlocks").
    """

    type: str
    name: str
    inputs: dict[str, Any]
    secret_paths: frozenset[str] = field(default_factory=frozenset)
    # The physical id the cloud gave it; other resources' inputs refer to it.
    id: str = ""
    custom: bool = True
    # Resource options as the program passed them (parents' options are not merged in).
    ignore_changes: tuple[str, ...] = ()
    protect: bool = False
    delete_before_replace: bool = False
    deleted_with: str = ""  # "type::name" of opts.deleted_with
    # "type::name" of opts.parent and of each opts.depends_on entry (components unexpanded).
    parent: str = ""
    depends_on: tuple[str, ...] = ()
    # Outputs the cloud added to the inputs (secrets unwrapped).
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.type}::{self.name}"

    def is_secret(self, path: str) -> bool:
        """Whether the input at `path`, or a value containing it, was a secret."""
        parts = path.split(".")
        return any(".".join(parts[:i]) in self.secret_paths for i in range(1, len(parts) + 1))


@dataclass(frozen=True)
class ProgramRun:
    # In registration order: a resource registers only after everything in its depends_on
    # (a component stands for its children) and every resource its inputs refer to.
    resources: list[CapturedResource]
    # Stack exports, resolved; `secret_outputs` names the ones exported as secrets.
    outputs: dict[str, Any]
    secret_outputs: frozenset[str]
    # Provider functions the program called: (token, args).
    invokes: list[tuple[str, dict[str, Any]]]

    def of_type(self, type_token: str) -> list[CapturedResource]:
        return [r for r in self.resources if r.type == type_token]

    def by_id(self, resource_id: str) -> CapturedResource:
        return next(r for r in self.resources if r.id == resource_id)

    def by_name(self, type_token: str, name: str) -> CapturedResource:
        return next(r for r in self.of_type(type_token) if r.name == name)


def stack_config(stack: str, overrides: Mapping[str, Any] | None = None, *,
                 secrets: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Pulumi.<stack>.yaml's `config:` plus `secrets` (keystore, keystorePassword), overridden.

    Override keys without a namespace belong to icon-prep-ha; None removes a key.
    """
    doc = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text()) or {}
    config = {
        **{f"{NAMESPACE}:{k}": v for k, v in (secrets or {}).items()},
        **(doc.get("config") or {}),
    }
    for key, value in (overrides or {}).items():
        full = key if ":" in key else f"{NAMESPACE}:{key}"
        if value is None:
            config.pop(full, None)
        else:
            config[full] = value
    return config


def run_stack(stack: str, overrides: Mapping[str, Any] | None = None, *, cloud: Cloud,
              secrets: Mapping[str, str] | None = None, plaintext_keys: Collection[str] = (),
              sink: list[CapturedResource] | None = None) -> ProgramRun:
    """Run __main__.py for `stack` with `cloud` behind the mocks; exceptions propagate.

    `secrets` gives `keystore` and `keystorePassword`, set as secret config unless listed in
    `plaintext_keys`. `sink`, if given, receives every registered resource as it happens, so
    a caller can see what was declared before an exception.
    """
    config = stack_config(stack, overrides, secrets=secrets)
    secret_keys = [f"{NAMESPACE}:{k}" for k in SECRET_KEYS
                   if f"{NAMESPACE}:{k}" in config and k not in plaintext_keys]
    # A fresh context per run: the SDK keeps its settings, config and root stack in
    # contextvars, so runs (and stacks) cannot leak into one another.
    return contextvars.copy_context().run(_run, stack, config, secret_keys, cloud,
                                          sink if sink is not None else [])


def _as_cli_string(value: Any) -> str:
    # The CLI passes every config value as a string; objects and lists as JSON.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _run(stack: str, config: dict[str, Any], secret_keys: list[str], cloud: Cloud,
         sink: list[CapturedResource]) -> ProgramRun:
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_all_config({k: _as_cli_string(v) for k, v in config.items()},
                                  secret_keys)
    mocks = _Mocks(cloud, sink)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False)
    # Legacy stack transformations run in the SDK itself (the mock monitor runs no
    # transforms), so they can see each resource's options before it registers.
    pulumi.runtime.register_stack_transformation(mocks.record_options)
    if str(PROJECT_DIR) not in sys.path:
        sys.path.insert(0, str(PROJECT_DIR))

    _sync_await(run_pulumi_func(lambda: runpy.run_path(str(PROGRAM), run_name="__main__")))

    root = pulumi.runtime.get_root_resource()
    outputs: dict[str, Any] = {}
    secret_outputs: set[str] = set()
    for key, value in (root.outputs if root is not None else {}).items():
        out = pulumi.Output.from_input(value)
        outputs[key] = _sync_await(out.future())
        if _sync_await(out.is_secret()):
            secret_outputs.add(key)
    return ProgramRun(list(mocks.captured), outputs, frozenset(secret_outputs), mocks.invokes)


def unwrap_secrets(value: Any, path: str = "", secrets: set[str] | None = None) -> Any:
    """`value` with every RPC secret replaced by its plain value; paths collected in `secrets`."""
    secrets = secrets if secrets is not None else set()
    if rpc.is_rpc_secret(value):
        secrets.add(path)
        return unwrap_secrets(rpc.unwrap_rpc_secret(value), path, secrets)
    if isinstance(value, dict):
        return {k: unwrap_secrets(v, f"{path}.{k}" if path else k, secrets)
                for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v, f"{path}.{i}", secrets) for i, v in enumerate(value)]
    return value


def _key_of(resource: Any) -> str:
    return f"{resource._type}::{resource._name}" if isinstance(resource, pulumi.Resource) else ""


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self, cloud: Cloud, captured: list[CapturedResource]) -> None:
        self.cloud = cloud
        self.captured = captured
        self.invokes: list[tuple[str, dict[str, Any]]] = []
        self._options: dict[tuple[str, str], pulumi.ResourceOptions] = {}
        # The SDK registers from executor threads; one at a time keeps the capture order
        # equal to the order the cloud saw, and the cloud free of locking.
        self._lock = threading.Lock()

    def record_options(self, args: pulumi.ResourceTransformationArgs) -> None:
        self._options[(args.type_, args.name)] = args.opts

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        plain = unwrap_secrets(args.args)
        with self._lock:
            self.invokes.append((args.token, plain))
            return self.cloud.call(args.token, plain)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        secrets: set[str] = set()
        inputs = unwrap_secrets(args.inputs, "", secrets)
        opts = self._options.get((args.typ, args.name)) or pulumi.ResourceOptions()
        depends = opts.depends_on if isinstance(opts.depends_on, list | tuple) else (
            [opts.depends_on] if opts.depends_on is not None else [])
        with self._lock:
            rid, extra = self.cloud.new_resource(args.typ, args.name, inputs)
            self.captured.append(CapturedResource(
                type=args.typ, name=args.name, inputs=inputs, secret_paths=frozenset(secrets),
                id=rid, custom=bool(args.custom),
                ignore_changes=tuple(opts.ignore_changes or ()), protect=bool(opts.protect),
                delete_before_replace=bool(opts.delete_before_replace),
                deleted_with=_key_of(opts.deleted_with), parent=_key_of(opts.parent),
                depends_on=tuple(k for k in map(_key_of, depends) if k),
                outputs=unwrap_secrets(extra)))
        return rid, {**args.inputs, **extra}


class FakeCloud:
    """Invented but well-formed outputs: EC2-style ids, ARNs, TEST-NET-3 Elastic IPs.

    The unit tests' cloud, and the lab's fallback for what moto cannot create. The key pair,
    password and AMI it answers with are the caller's (tests pass distinctive fakes).
    """

    def __init__(self, region: str, *, ssh_private_key: str = "", ssh_public_key: str = "",
                 password: str = "", ami_id: str = "ami-0d3b5f0e6a1c2b3d4",
                 ami_name: str = f"debian-{DEBIAN_VERSION}-amd64-20260101-1") -> None:
        self.region = region
        self.ssh_private_key = ssh_private_key
        self.ssh_public_key = ssh_public_key
        self.password = password
        self.ami_id = ami_id
        self.ami_name = ami_name
        self._serial = itertools.count(1)

    def call(self, token: str, args: dict[str, Any]) -> dict[str, Any]:
        if token == "aws:ec2/getAmi:getAmi":
            return {"id": self.ami_id, "imageId": self.ami_id, "name": self.ami_name,
                    "architecture": "x86_64"}
        if token == "aws:index/getPartition:getPartition":
            return {"id": "aws", "partition": "aws", "dnsSuffix": "amazonaws.com"}
        if token == "aws:ec2/getInternetGateway:getInternetGateway":
            return {"id": "igw-0existing", "internetGatewayId": "igw-0existing"}
        return {}

    def new_resource(self, type_: str, name: str,
                     inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        n = next(self._serial)
        hexid = f"{n:017x}"
        region = self.region
        arn = f"arn:aws:mock:{region}:{ACCOUNT}:{name}"
        if type_ == "aws:ec2/eip:Eip":
            return f"eipalloc-{hexid}", {"allocationId": f"eipalloc-{hexid}",
                                         "publicIp": f"203.0.113.{n % 250 + 1}"}
        if type_ == "aws:ec2/instance:Instance":
            return f"i-{hexid}", {"arn": arn}
        if type_ == "aws:ebs/volume:Volume":
            return f"vol-{hexid}", {"arn": arn}
        if type_ == "aws:ec2/networkInterface:NetworkInterface":
            return f"eni-{hexid}", {}
        if type_ == "aws:secretsmanager/secret:Secret":
            sarn = (f"arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:"
                    f"{inputs.get('name', name)}-AbC{n:03d}")
            return sarn, {"arn": sarn}
        if type_ == "aws:lb/targetGroup:TargetGroup":
            return arn, {"arn": arn}
        if type_ == "aws:lb/loadBalancer:LoadBalancer":
            return arn, {"arn": arn, "dnsName": f"{name}-{n}.elb.{region}.amazonaws.com"}
        if type_ == "aws:iam/role:Role":
            return f"{name}-{n}", {"arn": f"arn:aws:iam::{ACCOUNT}:role/{name}", "name": name}
        if type_ == "aws:iam/instanceProfile:InstanceProfile":
            return f"{name}-{n}", {"arn": f"arn:aws:iam::{ACCOUNT}:instance-profile/{name}",
                                   "name": name}
        if type_ == "tls:index/privateKey:PrivateKey":
            return f"{name}-{n}", {"privateKeyOpenssh": self.ssh_private_key,
                                   "publicKeyOpenssh": self.ssh_public_key}
        if type_ == "random:index/randomPassword:RandomPassword":
            return f"{name}-{n}", {"result": self.password}
        if type_ == "aws:s3/bucket:Bucket":
            bucket = f"{inputs.get('bucketPrefix', name + '-')}{n:08d}"
            return bucket, {"bucket": bucket, "arn": f"arn:aws:s3:::{bucket}"}
        if type_ == "aws:ec2/placementGroup:PlacementGroup":
            return f"{name}-{n}", {"name": inputs.get("name", name)}
        return f"{name}-{n}", {"arn": arn}
