"""Bring the lab up and down: the cloud, the stack deployed into it, two booted nodes, the
bootstrap Commands run over SSH, and a view of the cluster they made.

`up` clears stale state first; `down` kills every process in the lab's namespaces, unmounts
the nodes' volumes and deletes the namespaces, and is safe to run at any time.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lab import cloud, netns, node
from lab.bootstrap import CommandRun, run_commands
from lab.client import generate_key
from lab.deploy import Command, Deployment
from lab.image import ensure_image
from lab.netns import LabError, in_ns, ns_argv, wait_for
from lab.node import NodeSpec, exec_in, is_on, save_specs
from lab.standins.packages import build_debs
from lab.topology import (
    CLIENT_NS,
    CLOUD_NS,
    client_ports,
    cloud_config,
    cloud_ports,
    node_specs,
)
from prep_ha.config import StackConfig, load_stack_file

RUN_DIR = Path(os.environ.get("PREP_HA_LAB_DIR", "/var/tmp/prep-ha-lab"))
REPO = Path(__file__).resolve().parent.parent
KEYSTORE = REPO / "tests" / "fixtures" / "fake_keystore.json"
REQUIRED_TOOLS = ("ip", "nsenter", "systemd-nspawn", "debootstrap", "dnsmasq", "iptables", "nft",
                  "openssl", "ssh", "ssh-keygen", "curl", "losetup", "mkfs.ext4", "dpkg-deb")
BOOT_TIMEOUT = 600


def missing_tools() -> list[str]:
    return [t for t in REQUIRED_TOOLS if shutil.which(t) is None]


def lab_skip_reason() -> str | None:
    """Why this machine cannot run the lab, or None."""
    if os.geteuid() != 0:
        return "the lab needs root (namespaces, nspawn, loop devices)"
    if missing := missing_tools():
        return f"the lab needs {', '.join(missing)} (bash .ci/run installs them)"
    return None


@dataclass
class Status:
    online: tuple[str, ...]  # cluster members, standby or not
    standby: tuple[str, ...]
    placements: dict[str, tuple[str, ...]]  # resource id -> nodes it is active on
    failed: tuple[str, ...]

    def where(self, rsc: str) -> tuple[str, ...]:
        return self.placements.get(rsc, ())


def parse_crm_mon(xml: str) -> Status:
    root = ET.fromstring(xml)
    members = [n for n in root.iter("node")
               if n.get("online") == "true" and n.get("type") == "member"]
    online = tuple(n.get("name", "") for n in members)
    standby = tuple(n.get("name", "") for n in members if n.get("standby") == "true")
    placements = {r.get("id", ""): tuple(n.get("name", "") for n in r.findall("node"))
                  for r in root.iter("resource") if r.get("active") == "true"}
    failed = tuple(r.get("id", "") for r in root.iter("resource") if r.get("failed") == "true")
    return Status(online, standby, placements, failed)


@dataclass
class Lab:
    """A lab in `run_dir`; usable from a fresh process after `up` (e.g. `lab drill`)."""

    cfg: StackConfig
    run_dir: Path = RUN_DIR
    # The benchmark's guide variant replaces the bootstrap script (see lab/bench.py).
    script_of: Callable[[Command], str | None] = lambda c: None
    timings: dict[str, float] = field(default_factory=dict)
    command_runs: list[CommandRun] = field(default_factory=list)

    @classmethod
    def from_stack(cls, stack: str, run_dir: Path = RUN_DIR) -> Lab:
        cfg = load_stack_file(str(REPO / f"Pulumi.{stack}.yaml"), stack=stack)
        return cls(cfg, run_dir)

    @property
    def key(self) -> Path:
        return self.run_dir / "admin.key"

    def deployment(self) -> Deployment:
        return Deployment.from_json((self.run_dir / "deployment.json").read_text())

    @property
    def hosts(self) -> list[NodeSpec]:
        """Every instance the stack runs: the two nodes and the arbiter."""
        return node.load_specs(self.run_dir / "nodes.json")

    @property
    def nodes(self) -> list[NodeSpec]:
        """The two cluster nodes."""
        return [h for h in self.hosts if h.name in self.cfg.node_names]

    @property
    def arbiter(self) -> NodeSpec | None:
        return next((h for h in self.hosts if h.name == self.cfg.arbiter_name), None)

    def node(self, name: str) -> NodeSpec:
        return next(n for n in self.nodes if n.name == name)

    def secret_values(self) -> dict:
        """What the stack keeps secret, for leak searches (never printed)."""
        return json.loads((self.run_dir / "secret-values.json").read_text())

    # ---- lifecycle
    def up(self, echo: Callable[[str], None] = print) -> dict[str, float]:
        t0 = time.monotonic()
        down(self.run_dir)
        self.run_dir.mkdir(parents=True)
        image = ensure_image(lab_debs=build_debs(self.run_dir / "debs"), echo=echo)
        t_image = time.monotonic()
        cloud_cfg = self._start_cloud(image.mirror)
        deployment = self._deploy(echo)
        t_deploy = time.monotonic()
        specs = node_specs(deployment, cloud_cfg, self.run_dir)
        save_specs(self.run_dir / "nodes.json", specs)
        netns.add_hosts([s.ns for s in specs])
        for spec in specs:
            netns.plug(spec.ports())
            node.create_disks(spec, image.rootfs, self.run_dir / "ca.pem")
        cloud.wire(cloud_cfg, CLOUD_NS, leases(deployment),
                   {e.public_ip: e.private_ip for e in deployment.elastic_ips if e.private_ip},
                   self.run_dir, unchecked=unchecked_enis(deployment, cloud_cfg))
        for spec in specs:  # EC2 starts an instance as soon as it exists
            node.power_on(spec)
        echo(f"nodes booting: {', '.join(s.name for s in specs)}; running the bootstrap "
             "Commands as `pulumi up` does")
        self.command_runs = run_commands(deployment.commands, self.key, stdin_of=self.script_of,
                                         echo=echo)
        t_end = time.monotonic()
        return {"image": t_image - t0, "deploy": t_deploy - t_image,
                "boot_to_healthy": t_end - t_deploy, "total": t_end - t0}

    def _start_cloud(self, mirror: Path) -> cloud.CloudConfig:
        cfg = cloud_config(self.cfg, mirror)
        cfg.save(self.run_dir)
        netns.create_switch(list(cfg.subnets))
        netns.add_hosts([CLOUD_NS, CLIENT_NS])
        netns.plug(cloud_ports(cfg) + client_ports())
        in_ns(CLOUD_NS, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        in_ns(CLOUD_NS, "ip", "addr", "add", f"{cloud.IMDS_IP}/32", "dev", "lo")
        in_ns(CLIENT_NS, "ip", "route", "add", "default", "via", cfg.router("inet"))
        cloud.make_certificates(self.run_dir, self.cfg.region,
                                [cfg.router(b) for b in cfg.subnets])
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(self.run_dir / "cloud.out", "ab") as log:
            subprocess.Popen(ns_argv(CLOUD_NS, sys.executable, "-m", "lab.cloud", "serve",
                                     str(self.run_dir)), cwd=REPO, env=env, stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        wait_for(lambda: (self.run_dir / "cloud.ready").exists(), 60, "the cloud host")
        return cfg

    def _deploy(self, echo: Callable[[str], None]) -> Deployment:
        """`pulumi up` of the stack into moto, run where the operator sits (the client)."""
        generate_key(self.key)
        password = self.run_dir / "keystore-password"
        fd = os.open(password, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(18))
        out = self.run_dir / "deployment.json"
        argv = ns_argv(CLIENT_NS, sys.executable, "-m", "lab.deploy", self.cfg.stack,
                       "--endpoint", f"https://{cloud.CloudConfig.load(self.run_dir).router('inet')}",
                       "--ca-bundle", str(self.run_dir / "ca.pem"), "--region", self.cfg.region,
                       "--ssh-key", str(self.key), "--keystore", str(KEYSTORE.resolve()),
                       "--keystore-password-file", str(password), "--out", str(out),
                       "--secret-values", str(self.run_dir / "secret-values.json"))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=600, check=False)
        if proc.returncode != 0:
            raise LabError(f"deploying the stack into moto failed:\n{proc.stdout}{proc.stderr}")
        deployment = Deployment.from_json(out.read_text())
        echo(f"stack {self.cfg.stack} deployed into moto: "
             f"{', '.join(f'{n.node} {n.instance_id}' for n in deployment.instances)}")
        return deployment

    # ---- observation
    def status(self, via: NodeSpec | None = None) -> Status | None:
        for spec in ([via] if via else self.nodes):
            if spec is None or not is_on(spec):
                continue
            xml = node.exec_proc(spec, "crm_mon", "-1", "--output-as", "xml", timeout=30).stdout
            if xml.strip().startswith("<"):
                try:
                    return parse_crm_mon(xml)
                except ET.ParseError:
                    continue
        return None

    def pcs_status(self) -> str:
        spec = next(n for n in self.nodes if is_on(n))
        return exec_in(spec, "pcs", "status", check=False, timeout=60)

    def wait_members(self, timeout: float) -> None:
        names = {n.name for n in self.nodes}
        wait_for(lambda: (s := self.status()) is not None and set(s.online) == names,
                 timeout, "both nodes online in Pacemaker", 1)

    def healthy(self) -> bool:
        """The bootstrap's own health check (the `health` Command), run on a live node."""
        health = next(c for c in self.deployment().commands if c.name.endswith("-health"))
        spec = next((n for n in self.nodes if is_on(n)), None)
        if spec is None:
            return False
        proc = node.exec_proc(spec, "bash", "-s", "health", input=health.stdin,
                              env={"HEALTH_TIMEOUT": "0"}, timeout=60)
        return proc.returncode == 0

    def wait_healthy(self, timeout: float) -> None:
        wait_for(self.healthy, timeout, "a healthy cluster (both roles and fencing started)", 2)


def leases(deployment: Deployment) -> list[cloud.Lease]:
    return [cloud.Lease(e.mac, e.primary_ip, f"ip-{e.primary_ip.replace('.', '-')}")
            for inst in deployment.instances for e in inst.enis]


def unchecked_enis(deployment: Deployment, cfg: cloud.CloudConfig) -> dict[str, str]:
    """MAC -> bridge of every ENI whose source/destination check is off (multi-AZ service
    ENIs: the node answers from the overlay IP, no address of their subnet)."""
    bridge_of = {cidr: bridge for bridge, cidr in cfg.subnets.items()}
    return {e.mac: bridge_of[e.subnet_cidr] for n in deployment.instances for e in n.enis
            if not e.source_dest_check}


def down(run_dir: Path = RUN_DIR) -> None:
    """Kill every lab process, free the nodes' volumes, delete every lab namespace."""
    specs_file = run_dir / "nodes.json"
    specs = node.load_specs(specs_file) if specs_file.exists() else []
    for ns in netns.namespaces():
        node.kill_ns(ns)
    for spec in specs:
        node.destroy_disks(spec)
    netns.destroy()
    if run_dir.exists():
        shutil.rmtree(run_dir)


class running_lab:  # noqa: N801 - used as a context manager, reads like one
    """`with running_lab(lab):` brings the lab up and always takes it down, also on Ctrl-C/TERM."""

    def __init__(self, lab: Lab, keep: bool = False, echo: Callable[[str], None] = print):
        self.lab, self.keep, self.echo = lab, keep, echo

    def __enter__(self) -> Lab:
        self._old = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            self.lab.timings = self.lab.up(self.echo)
        except BaseException:
            if not self.keep:
                down(self.lab.run_dir)
            raise
        return self.lab

    def __exit__(self, *exc: object) -> None:
        try:
            if not self.keep:
                down(self.lab.run_dir)
        finally:
            signal.signal(signal.SIGTERM, self._old)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")

