"""Bring the lab up and down: namespaces, the cloud host, two booted nodes, the pushed CIB.

`up` clears stale state first; `down` kills every process in the lab's namespaces and deletes
them (their links and mounts go with them), and is safe to run at any time.
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
from dataclasses import dataclass
from pathlib import Path

from lab import netns
from lab.cloud import IMDS_IP, CloudConfig, make_certificates
from lab.model import product_model
from lab.netns import wait_for
from lab.node import (
    NodeSpec,
    exec_in,
    exec_proc,
    is_on,
    kill_ns,
    power_on,
    prepare_state,
    save_specs,
)
from lab.topology import CLOUD_NS, Topology, hosts_file, topology
from prep_ha.cluster.model import ClusterModel
from prep_ha.cluster.pcs import corosync_conf, render_script
from prep_ha.config import StackConfig, load_stack_file

RUN_DIR = Path(os.environ.get("PREP_HA_LAB_DIR", "/var/tmp/prep-ha-lab"))
REPO = Path(__file__).resolve().parent.parent
REQUIRED_TOOLS = ("ip", "unshare", "nsenter", "corosync", "pacemakerd", "pcs", "crm_mon",
                  "openssl", "fence_aws", "/usr/bin/aws", "curl")


def missing_tools() -> list[str]:
    return [t for t in REQUIRED_TOOLS if shutil.which(t) is None]


@dataclass
class Status:
    online: tuple[str, ...]  # cluster members, standby or not
    standby: tuple[str, ...]
    # resource id -> nodes it is active on
    placements: dict[str, tuple[str, ...]]
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


class Lab:
    """A running lab in `run_dir`; usable from a fresh process after `up` (e.g. `lab drill`)."""

    def __init__(self, cfg: StackConfig, run_dir: Path = RUN_DIR,
                 model: ClusterModel | None = None):
        self.cfg = cfg
        self.model = model or product_model(cfg)
        self.topo: Topology = topology(cfg, run_dir)
        self.run_dir = run_dir
        self.timings: dict[str, float] = {}
        self.pushes: list[subprocess.CompletedProcess[str]] = []

    @classmethod
    def from_stack(cls, stack: str, run_dir: Path = RUN_DIR) -> Lab:
        return cls(load_stack_file(str(REPO / f"Pulumi.{stack}.yaml"), stack=stack), run_dir)

    @property
    def nodes(self) -> tuple[NodeSpec, NodeSpec]:
        return self.topo.nodes

    def node(self, name: str) -> NodeSpec:
        return next(n for n in self.nodes if n.name == name)

    # ---- lifecycle
    def up(self, timeout: float = 240) -> dict[str, float]:
        """Fresh lab: returns timings (s) of its phases."""
        t0 = time.monotonic()
        down(self.run_dir)
        self.run_dir.mkdir(parents=True)
        netns.create([CLOUD_NS, netns.PREFIX + "client", *(n.ns for n in self.nodes)],
                      self.topo.ports)
        self._start_cloud()
        inventory = self.inventory()
        key = secrets.token_bytes(256)
        conf = corosync_conf(self.model)
        for spec, inst in zip(self.nodes, inventory, strict=True):
            # The node's service NIC carries the MAC EC2 gave its primary ENI, as on AWS.
            netns.in_ns(spec.ns, "ip", "link", "set", "eth0", "address", inst["mac"])
            prepare_state(spec, conf, key, hosts_file(self.topo))
        t_cloud = time.monotonic()
        for spec in self.nodes:
            power_on(spec)
        self.wait_members(timeout)
        t_quorum = time.monotonic()
        self.push()
        self.wait_healthy(timeout)
        t_end = time.monotonic()
        return {"cloud": t_cloud - t0, "quorum": t_quorum - t_cloud,
                "push_to_healthy": t_end - t_quorum, "total": t_end - t0}

    def _start_cloud(self) -> None:
        (self.run_dir / "aws").mkdir()
        (self.run_dir / "aws" / "config").write_text(
            f"[default]\nregion = {self.cfg.region}\noutput = text\n")
        (self.run_dir / "aws" / "credentials").write_text(
            "[default]\naws_access_key_id = lab\naws_secret_access_key = lab\n")
        # The metadata address exists only on the cloud host's service NIC.
        netns.in_ns(CLOUD_NS, "ip", "addr", "add", f"{IMDS_IP}/32", "dev", "eth0")
        make_certificates(self.run_dir, self.cfg.region, self.topo.cloud_ip)
        cloud = CloudConfig(self.cfg.region, self.cfg.availability_zone, self.cfg.cluster_name,
                            self.cfg.vpc_cidr, self.cfg.service_subnet_cidr, self.topo.cloud_ip,
                            (self.cfg.peer_vip, self.cfg.citizen_vip))
        (self.run_dir / "cloud.json").write_text(json.dumps(cloud.__dict__))
        save_specs(self.run_dir / "nodes.json", list(self.nodes))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(self.run_dir / "cloud.out", "ab") as log:
            subprocess.Popen(["ip", "netns", "exec", CLOUD_NS, sys.executable, "-m", "lab.cloud",
                              "serve", str(self.run_dir)], cwd=REPO, env=env, stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        wait_for(lambda: (self.run_dir / "inventory.json").exists(), 60, "the cloud host")

    def inventory(self) -> list[dict]:
        return json.loads((self.run_dir / "inventory.json").read_text())

    def instance_ids(self) -> dict[str, str]:
        """PREP_HA_INSTANCE_ID_n -> moto's instance id, as the bootstrap passes them."""
        return {n.instance_id_env: inst["instance_id"]
                for n, inst in zip(self.model.nodes, self.inventory(), strict=True)}

    def push(self, model: ClusterModel | None = None) -> str:
        """Run the rendered script's `push` in node 1, as components/cluster.py does over SSH."""
        script = render_script(model or self.model, hacluster_secret_id="lab")
        (self.run_dir / "bootstrap.sh").write_text(script)
        target = next(n for n in self.nodes if is_on(n))
        proc = exec_proc(target, "bash", "-s", "push", input=script, env=self.instance_ids(),
                         timeout=180)
        self.pushes.append(proc)
        if proc.returncode != 0:
            raise netns.LabError(f"push failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    # ---- observation
    def status(self, via: NodeSpec | None = None) -> Status | None:
        for spec in ([via] if via else self.nodes):
            if spec is None or not is_on(spec):
                continue
            xml = exec_in(spec, "crm_mon", "-1", "--output-as", "xml", check=False, timeout=30)
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
                 timeout, "both nodes online in Pacemaker")

    def healthy(self) -> bool:
        s = self.status()
        if s is None or len(s.online) != 2 or s.standby or s.failed:
            return False
        groups = {g.id: {n for r in g.members for n in s.where(r.id)} for g in self.model.groups}
        fence = {n for f in self.model.fence_devices for n in s.where(f.id)}
        full = all(len(s.where(r.id)) == 1 for g in self.model.groups for r in g.members)
        return full and bool(fence) and all(len(v) == 1 for v in groups.values()) and \
            len(set().union(*groups.values())) == 2

    def wait_healthy(self, timeout: float) -> None:
        wait_for(self.healthy, timeout, "a healthy cluster (both groups and fencing started)")


def down(run_dir: Path = RUN_DIR) -> None:
    """Kill every lab process, delete every lab namespace. Idempotent; safe at any time."""
    for ns in netns.namespaces():
        kill_ns(ns)
    netns.destroy()
    if run_dir.exists():
        shutil.rmtree(run_dir)


class running_lab:  # noqa: N801 - used as a context manager, reads like one
    """`with running_lab(lab):` brings the lab up and always takes it down, also on Ctrl-C/TERM."""

    def __init__(self, lab: Lab, keep: bool = False):
        self.lab, self.keep = lab, keep

    def __enter__(self) -> Lab:
        self._old = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            self.lab.timings = self.lab.up()
        except BaseException:
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
