"""Run the real `__main__.py` of a stack under `pulumi.runtime.set_mocks`; capture its resources.

    from tests.pulumi_mocks import run_program
    resources = run_program("mainnet")                       # Pulumi.mainnet.yaml + fake secrets
    resources = run_program("testnet", {"managementAccess": "private"})

No Pulumi CLI and no cloud: config comes from Pulumi.<stack>.yaml (the way the CLI hands it
to a program: strings, lists as JSON), the two secret keys get fake values marked secret,
invokes (AMI lookup, partition, existing IGW) and resource outputs are faked here.
Secret inputs stay visible: `CapturedResource.secret_paths` lists every input path whose
value was a secret Output, and `is_secret(path)` checks one.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import runpy
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import rpc
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from tests.fixtures.fake_keys import FAKE_SSH_PRIVATE_KEY

PROJECT_DIR = Path(__file__).resolve().parent.parent
PROGRAM = PROJECT_DIR / "__main__.py"
PROJECT = "icon-prep-ha"
NAMESPACE = "icon-prep-ha"
ACCOUNT = "123456789012"

# Distinctive, so a test can grep any rendered text (user-data, policies) for a leak.
FAKE_KEYSTORE_PASSWORD = "FAKE-keystore-password-q7Zr93"
FAKE_KEYSTORE = json.dumps(json.loads(
    (Path(__file__).parent / "fixtures" / "fake_keystore.json").read_text()))
FAKE_HACLUSTER_PASSWORD = "FAKEhaclusterPassword5vQ2"
FAKE_SECRET_VALUES = (FAKE_KEYSTORE_PASSWORD, "FAKE-keystore-ciphertext-x81Lm",
                      FAKE_HACLUSTER_PASSWORD, "FAKE-ssh-key-m4Kd")
DEBIAN_AMI = "ami-0d3b5f0e6a1c2b3d4"


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
    # The physical id the mocks gave it; other resources' inputs refer to it.
    id: str = ""
    custom: bool = True
    # Resource options as the program passed them (parents' options are not merged in).
    ignore_changes: tuple[str, ...] = ()
    protect: bool = False

    def is_secret(self, path: str) -> bool:
        """Whether the input at `path`, or a value containing it, was a secret."""
        parts = path.split(".")
        return any(".".join(parts[:i]) in self.secret_paths for i in range(1, len(parts) + 1))


@dataclass(frozen=True)
class ProgramRun:
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


def stack_config(stack: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Pulumi.<stack>.yaml's `config:` plus the fake secrets, with overrides applied.

    Override keys without a namespace belong to icon-prep-ha; None removes a key.
    """
    doc = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text()) or {}
    config = {
        f"{NAMESPACE}:keystore": FAKE_KEYSTORE,
        f"{NAMESPACE}:keystorePassword": FAKE_KEYSTORE_PASSWORD,
        **(doc.get("config") or {}),
    }
    for key, value in (overrides or {}).items():
        full = key if ":" in key else f"{NAMESPACE}:{key}"
        if value is None:
            config.pop(full, None)
        else:
            config[full] = value
    return config


def run_program(stack: str, overrides: Mapping[str, Any] | None = None, *,
                plaintext_keys: Collection[str] = ()) -> list[CapturedResource]:
    """The resources `pulumi up` would declare for `stack` (see run_stack)."""
    return run_stack(stack, overrides, plaintext_keys=plaintext_keys).resources


def run_stack(stack: str, overrides: Mapping[str, Any] | None = None, *,
              plaintext_keys: Collection[str] = (),
              sink: list[CapturedResource] | None = None) -> ProgramRun:
    """Run __main__.py for `stack` under mocks; exceptions (e.g. ConfigError) propagate.

    `keystore` and `keystorePassword` default to fake values set as secrets; override them
    to change the value, and list them in `plaintext_keys` to store them in plain text.
    `sink`, if given, receives every registered resource as it happens, so a test can see
    what was declared before an exception.
    """
    config = stack_config(stack, overrides)
    secret_keys = [k for k in (f"{NAMESPACE}:keystore", f"{NAMESPACE}:keystorePassword")
                   if k in config and k.split(":", 1)[1] not in plaintext_keys]
    # A fresh context per run: the SDK keeps its settings, config and root stack in
    # contextvars, so runs (and stacks) cannot leak into one another.
    return contextvars.copy_context().run(_run, stack, config, secret_keys,
                                          sink if sink is not None else [])


def _as_cli_string(value: Any) -> str:
    # The CLI passes every config value as a string; objects and lists as JSON.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _run(stack: str, config: dict[str, Any], secret_keys: list[str],
         sink: list[CapturedResource]) -> ProgramRun:
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_all_config({k: _as_cli_string(v) for k, v in config.items()},
                                  secret_keys)
    mocks = _Mocks(str(config.get("aws:region", "us-east-1")), sink)
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


def _unwrap(value: Any, path: str, secrets: set[str]) -> Any:
    if rpc.is_rpc_secret(value):
        secrets.add(path)
        return _unwrap(rpc.unwrap_rpc_secret(value), path, secrets)
    if isinstance(value, dict):
        return {k: _unwrap(v, f"{path}.{k}" if path else k, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v, f"{path}.{i}", secrets) for i, v in enumerate(value)]
    return value


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self, region: str, captured: list[CapturedResource]) -> None:
        self.region = region
        self.captured = captured
        self.invokes: list[tuple[str, dict[str, Any]]] = []
        self._options: dict[tuple[str, str], pulumi.ResourceOptions] = {}
        self._serial = itertools.count(1)

    def record_options(self, args: pulumi.ResourceTransformationArgs) -> None:
        self._options[(args.type_, args.name)] = args.opts

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        self.invokes.append((args.token, _unwrap(args.args, "", set())))
        if args.token == "aws:ec2/getAmi:getAmi":
            return {"id": DEBIAN_AMI, "imageId": DEBIAN_AMI, "name": "debian-12-amd64-20260101-1",
                    "architecture": "x86_64"}
        if args.token == "aws:index/getPartition:getPartition":
            return {"id": "aws", "partition": "aws", "dnsSuffix": "amazonaws.com"}
        if args.token == "aws:ec2/getInternetGateway:getInternetGateway":
            return {"id": "igw-0existing", "internetGatewayId": "igw-0existing"}
        return {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        secrets: set[str] = set()
        inputs = _unwrap(args.inputs, "", secrets)
        rid, extra = self._outputs(args.typ, args.name, inputs, next(self._serial))
        opts = self._options.get((args.typ, args.name)) or pulumi.ResourceOptions()
        self.captured.append(CapturedResource(
            type=args.typ, name=args.name, inputs=inputs, secret_paths=frozenset(secrets),
            id=rid, custom=bool(args.custom), ignore_changes=tuple(opts.ignore_changes or ()),
            protect=bool(opts.protect)))
        return rid, {**args.inputs, **extra}

    def _outputs(self, typ: str, name: str, inputs: dict, n: int) -> tuple[str, dict]:
        hexid = f"{n:017x}"
        arn = f"arn:aws:mock:{self.region}:{ACCOUNT}:{name}"
        if typ == "aws:ec2/eip:Eip":
            return f"eipalloc-{hexid}", {"allocationId": f"eipalloc-{hexid}",
                                         "publicIp": f"203.0.113.{n % 250 + 1}"}
        if typ == "aws:ec2/instance:Instance":
            return f"i-{hexid}", {"arn": arn}
        if typ == "aws:ebs/volume:Volume":
            return f"vol-{hexid}", {"arn": arn}
        if typ == "aws:ec2/networkInterface:NetworkInterface":
            return f"eni-{hexid}", {}
        if typ == "aws:secretsmanager/secret:Secret":
            sarn = (f"arn:aws:secretsmanager:{self.region}:{ACCOUNT}:secret:"
                    f"{inputs.get('name', name)}-AbC{n:03d}")
            return sarn, {"arn": sarn}
        if typ == "aws:lb/targetGroup:TargetGroup":
            return arn, {"arn": arn}
        if typ == "aws:lb/loadBalancer:LoadBalancer":
            return arn, {"arn": arn, "dnsName": f"{name}-{n}.elb.{self.region}.amazonaws.com"}
        if typ == "aws:iam/role:Role":
            return f"{name}-{n}", {"arn": f"arn:aws:iam::{ACCOUNT}:role/{name}", "name": name}
        if typ == "aws:iam/instanceProfile:InstanceProfile":
            return f"{name}-{n}", {"arn": f"arn:aws:iam::{ACCOUNT}:instance-profile/{name}",
                                   "name": name}
        if typ == "tls:index/privateKey:PrivateKey":
            return f"{name}-{n}", {"privateKeyOpenssh": FAKE_SSH_PRIVATE_KEY,
                                   "publicKeyOpenssh": "ssh-ed25519 AAAAFAKE"}
        if typ == "random:index/randomPassword:RandomPassword":
            return f"{name}-{n}", {"result": FAKE_HACLUSTER_PASSWORD}
        if typ == "aws:ec2/placementGroup:PlacementGroup":
            return f"{name}-{n}", {"name": inputs.get("name", name)}
        return f"{name}-{n}", {"arn": arn}
