"""One lab node: a Debian system of the nodes' release, booted by systemd-nspawn in its own
network namespace.

What EC2 gives an instance, the lab gives the container:
- the AMI: an overlayfs whose lower layer is the cached image (lab/image.py) and whose upper
  layer is the node's own root volume, kept across stop/start like an EBS root volume;
- ENIs: veths named as on a Nitro instance (`ens5` for device 0, `ens6`, `ens7`), carrying the
  MAC addresses EC2 (moto) gave the ENIs, plugged into the bridge of their subnet;
- the data volume: a loop device seen as /dev/nvme1n1, with the udev `by-id` name a Nitro
  instance has for that EBS volume;
- power: EC2 stop is SIGKILL of the container's init (every process dies at once, NICs go
  dark); start boots the same root volume again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lab.netns import LabError, Port, bridge_role, in_ns, ns_argv, run, run_proc, wait_for

# The agents and admins must find Debian's tools, not a developer's pyenv shims.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DATA_DEVICE = "nvme1n1"
DATA_IMAGE_BYTES = 2 * 1024**3  # sparse; the lab's chain is tiny
# Nitro names ENI device n `ens<5+n>`; the product must never assume a name.
NIC_NAME_BASE = 5
# What the container may do beyond nspawn's default set: networkd configures links
# (NET_ADMIN), corosync locks its memory (IPC_LOCK). Not SYS_TIME: chrony must not set the
# host's clock.
CAPABILITIES = "CAP_NET_ADMIN,CAP_IPC_LOCK"
# The node's systemd gets cgroup v2 (the unified hierarchy), as on EC2, whatever this machine
# mounts: systemd 257 on a legacy v1 hierarchy cannot stop a user's manager cleanly (the
# admin's next SSH login then waits out its 2-minute stop timeout) and deprecates v1.
CGROUP_V2 = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
LAB_CA_NAME = "prep-ha-lab.crt"

# veths have no permanent MAC address, and netplan renders `match: macaddress` as networkd's
# PermanentMACAddress=, which a veth never matches. The lab wraps netplan's generator (every
# `netplan generate`, the boot-time generator and cloud-init's run it) to match the same MAC
# as the current address, which on an ENI is the permanent one.
NETPLAN_GENERATE = """#!/bin/bash
# prep-ha lab only (dpkg-divert of netplan's generator): veths have no permanent MAC.
# argv[0] passes through: netplan knows it runs as the boot-time systemd generator by it.
(exec -a "$0" /usr/libexec/netplan/generate.real "$@") || exit $?
for f in /run/systemd/network/10-netplan-*.network; do
  [ -e "$f" ] || continue
  mac=$(sed -n 's/^PermanentMACAddress=//p' "$f")
  [ -n "$mac" ] || continue
  mkdir -p "$f.d"
  printf '[Match]\\nPermanentMACAddress=\\nMACAddress=%s\\n' "$mac" > "$f.d/prep-ha-lab.conf"
done
"""
# cloud-init tells EC2 from other clouds by DMI (ignored inside a container) or by the Xen
# hypervisor's /sys/hypervisor/uuid. Without it, it takes an unknown cloud and uses IMDSv1,
# which the product's instances refuse. cloud-init (25.1: one process, cloud-init-main, runs
# every stage) gets that file in a mount namespace of its own in which only /sys differs: the
# mounts it makes anywhere else (runcmd mounting the data volume) are the node's, as on EC2.
EC2_IDENTITY = """#!/bin/sh
# prep-ha lab only: run cloud-init with the EC2 identity it reads (cloud-init-main's drop-in).
# /sys becomes a tmpfs holding hypervisor/uuid and the node's real sysfs subtrees, bound
# back (udevadm, run by cloud-init's netplan renderer, only accepts devices on sysfs).
set -e
if [ -z "${PREP_HA_LAB_IDENTITY:-}" ]; then
  # Same PID (no fork): systemd's notify socket keeps talking to its main process.
  PREP_HA_LAB_IDENTITY=1 exec unshare --mount --propagation unchanged -- "$0" "$@"
fi
# The new mounts below stack on /sys and /run, made private here: they stay in this namespace,
# while "/" stays shared with the node's, so a mount on any other path reaches the node.
mount --make-rprivate /sys
mount --make-private /run
real=/run/prep-ha-lab/sysfs
mkdir -p "$real"
mount --rbind /sys "$real"
mount -t tmpfs -o mode=0755 prep-ha-lab-sys /sys
for d in "$real"/*; do
  mkdir "/sys/${d##*/}"
  mount --rbind "$d" "/sys/${d##*/}"
done
mkdir -p /sys/hypervisor
cp /usr/local/lib/prep-ha-lab/sys/hypervisor/uuid /sys/hypervisor/uuid
exec "$@"
"""
# systemd ignores fstab's block devices inside a container, and without udev there is no
# /dev/disk/by-uuid: the lab plays udev for the data volume and mounts what fstab lists,
# before local-fs.target as systemd would on EC2.
LAB_FSTAB = """#!/bin/sh
# prep-ha lab only: what udev and systemd's fstab generator do for the data volume on EC2.
mkdir -p /dev/disk/by-uuid
for dev in /dev/nvme*n1; do
  uuid=$(blkid -s UUID -o value "$dev") && ln -sf "../../${dev#/dev/}" "/dev/disk/by-uuid/$uuid"
done
mount -a
"""
LAB_FSTAB_UNIT = """[Unit]
Description=prep-ha lab only: mount fstab's block devices (no udev in a container)
DefaultDependencies=no
After=local-fs-pre.target
Before=local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/lib/prep-ha-lab/fstab

[Install]
WantedBy=local-fs.target
"""
CLOUD_INIT_DROPIN = """# prep-ha lab only: see /usr/local/lib/prep-ha-lab/ec2-identity
[Service]
ExecStart=
ExecStart=/usr/local/lib/prep-ha-lab/ec2-identity /usr/bin/cloud-init --all-stages
"""


@dataclass(frozen=True)
class Nic:
    name: str  # ens5, ens6, ...
    mac: str
    bridge: str  # svc, hb, mgmt (node 2's zone, multi-AZ: svc2, hb2, mgmt2)
    outer: str  # the switch-side end: pulling this cable cuts the link


@dataclass(frozen=True)
class NodeSpec:
    name: str  # the cluster node name (the instance's prep-ha:node tag)
    index: int
    instance_id: str
    ns: str
    state: str  # the node's directory: root volume, data volume, console log
    nics: tuple[Nic, ...]
    volume_id: str | None  # the data volume (the arbiter has none)

    @property
    def root(self) -> Path:
        return Path(self.state, "root")

    @property
    def init_pidfile(self) -> Path:
        return Path(self.state, "init.pid")

    def nic(self, role: str) -> Nic:
        """The NIC on the node's subnet of `role` (svc, hb, mgmt), in whichever zone."""
        return next(n for n in self.nics if bridge_role(n.bridge) == role)

    def ports(self) -> list[Port]:
        return [Port(self.ns, n.name, n.outer, n.bridge, mac=n.mac) for n in self.nics]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> NodeSpec:
        return cls(**{**data, "nics": tuple(Nic(**n) for n in data["nics"])})


def save_specs(path: Path, specs: list[NodeSpec]) -> None:
    path.write_text(json.dumps([s.to_json() for s in specs], indent=1))


def load_specs(path: Path) -> list[NodeSpec]:
    return [NodeSpec.from_json(d) for d in json.loads(path.read_text())]


def nic_name(device_index: int) -> str:
    return f"ens{NIC_NAME_BASE + device_index}"


# ---- the node's disks

def _ebs_serial(volume_id: str) -> str:
    # udev names an EBS NVMe device by model and serial; the serial is the id without '-'.
    return volume_id.replace("-", "")


def create_disks(spec: NodeSpec, image_rootfs: Path, ca_pem: Path) -> None:
    """The root volume (overlay on the image) and the data volume, as a new instance has them."""
    state = Path(spec.state)
    (state / "by-id").mkdir(parents=True, exist_ok=True)
    _new_root(spec, image_rootfs, ca_pem)
    if spec.volume_id is None:
        return
    data = state / "data.img"
    with data.open("wb") as f:
        f.truncate(DATA_IMAGE_BYTES)
    loop = run(["losetup", "--find", "--show", str(data)]).strip()
    (state / "loop").write_text(loop)
    link = state / "by-id" / f"nvme-Amazon_Elastic_Block_Store_{_ebs_serial(spec.volume_id)}"
    link.symlink_to(f"../../{DATA_DEVICE}")


def _new_root(spec: NodeSpec, image_rootfs: Path, ca_pem: Path) -> None:
    state = Path(spec.state)
    for sub in ("upper", "work", "root"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    run(["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={image_rootfs},upperdir={state / 'upper'},workdir={state / 'work'}",
         str(spec.root)])
    _bake_lab_files(spec, spec.root, ca_pem)


def renew_root(spec: NodeSpec, ca_pem: Path) -> None:
    """The root volume of a new instance (`spec`, powered off) of the same node: a fresh
    overlay on the same image; the data volume stays as it is, attached again."""
    mount = next(line.split() for line in Path("/proc/mounts").read_text().splitlines()
                 if line.split()[1] == str(spec.root))
    image_rootfs = Path(re.search(r"lowerdir=([^,]+)", mount[3]).group(1))
    run(["umount", str(spec.root)])
    for sub in ("upper", "work"):
        shutil.rmtree(Path(spec.state, sub))
    _new_root(spec, image_rootfs, ca_pem)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _bake_lab_files(spec: NodeSpec, root: Path, ca_pem: Path) -> None:
    """What the lab adds to each node's root volume (listed in the README as substitutions)."""
    # The lab's CA, so the node's boto3, aws CLI and curl trust the lab's AWS endpoints.
    ca_dir = root / "usr/local/share/ca-certificates"
    ca_dir.mkdir(parents=True, exist_ok=True)
    (ca_dir / LAB_CA_NAME).write_text(ca_pem.read_text())
    run(["chroot", str(root), "update-ca-certificates", "--fresh"], timeout=120)
    lib = root / "usr/local/lib/prep-ha-lab"
    # The binary behind the boot-time generator and `netplan generate` alike.
    generate = "/usr/libexec/netplan/generate"
    run(["chroot", str(root), "dpkg-divert", "--local", "--rename", "--divert",
         f"{generate}.real", "--add", generate])
    _write(root / generate.lstrip("/"), NETPLAN_GENERATE, 0o755)
    # A Xen-era EC2 uuid ("ec2" + hex), unique per instance like the real one.
    digest = hashlib.sha256(spec.instance_id.encode()).hexdigest()
    _write(lib / "sys/hypervisor/uuid", f"ec2{digest[3:8]}-{digest[8:12]}-{digest[12:16]}-"
           f"{digest[16:20]}-{digest[20:32]}\n")
    _write(lib / "ec2-identity", EC2_IDENTITY, 0o755)
    _write(lib / "fstab", LAB_FSTAB, 0o755)
    # The admin's systemd user manager lingers: in this container systemd 257 cannot stop it
    # (its processes survive the final SIGKILL), so every SSH login after a logout would wait
    # out the 2-minute stop timeout (README: what the lab substitutes).
    _write(root / "var/lib/systemd/linger/admin", "")
    _write(root / "etc/systemd/system/prep-ha-lab-fstab.service", LAB_FSTAB_UNIT)
    wants = root / "etc/systemd/system/local-fs.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "prep-ha-lab-fstab.service").symlink_to("../prep-ha-lab-fstab.service")
    _write(root / "etc/systemd/system/cloud-init-main.service.d/prep-ha-lab.conf",
           CLOUD_INIT_DROPIN)


def destroy_disks(spec: NodeSpec) -> None:
    state = Path(spec.state)
    if spec.root.is_mount():
        run(["umount", "--lazy", str(spec.root)], check=False)
    loop = state / "loop"
    if loop.exists():
        run(["losetup", "-d", loop.read_text().strip()], check=False)
        loop.unlink()


# ---- power

def init_pid(spec: NodeSpec) -> int | None:
    """PID (host view) of the container's systemd, if the node is running."""
    try:
        pid = int(spec.init_pidfile.read_text())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if cmdline.startswith(b"/usr/lib/systemd/systemd") else None


def is_on(spec: NodeSpec) -> bool:
    return init_pid(spec) is not None


def power_on(spec: NodeSpec, timeout: float = 30) -> None:
    """Boot the node: systemd as PID 1 of a container in the node's network namespace."""
    if is_on(spec):
        return
    state = Path(spec.state)
    loop = state / "loop"
    volume = [f"--bind={loop.read_text().strip()}:/dev/{DATA_DEVICE}"] if loop.exists() else []
    argv = ns_argv(spec.ns, "systemd-nspawn", "--directory", str(spec.root), "--boot",
                   # This machine's PID 1 is not systemd: no machined, no scope to register.
                   "--register=no", "--keep-unit",
                   f"--machine={spec.instance_id}",
                   # The node's own network namespace, private to it: nspawn then leaves
                   # /proc/sys/net writable as on EC2 (dhcpcd, cloud-init 25.1's DHCP
                   # client, sets promote_secondaries there).
                   f"--network-namespace-path=/run/netns/{spec.ns}", "--private-network",
                   # The network namespace is the node's own; resolv.conf and the clock zone
                   # are the image's, as on EC2.
                   "--resolv-conf=off", "--timezone=off", "--link-journal=no",
                   f"--capability={CAPABILITIES}",
                   *volume,
                   f"--bind-ro={state / 'by-id'}:/dev/disk/by-id",
                   # PID 1 blocks on a console nobody reads; read-only forwards it to the log.
                   "--console=read-only")
    spec.init_pidfile.unlink(missing_ok=True)
    with open(state / "console.log", "ab") as log:
        nspawn = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, **CGROUP_V2})
    pid = wait_for(lambda: _container_init(nspawn.pid), timeout, f"{spec.name} to start", 0.1)
    spec.init_pidfile.write_text(str(pid))


def _container_init(nspawn_pid: int) -> int | None:
    # nsenter execs nspawn, whose (transient) children end in the container's systemd.
    try:
        children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text().split()
    except OSError:
        return None
    for child in children:
        try:
            if Path(f"/proc/{child}/cmdline").read_bytes().startswith(b"/usr/lib/systemd/systemd"):
                return int(child)
        except OSError:
            continue
    return None


def power_off(spec: NodeSpec) -> None:
    """An EC2 stop: every process of the node dies at once, its NICs go dark."""
    pid = init_pid(spec)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)  # the PID namespace dies with its init
        except ProcessLookupError:
            pass
    kill_ns(spec.ns)
    # A stopped instance keeps nothing of its network state: the next boot starts from NICs
    # with no address, route or rule, as on EC2. (The switch-side cables stay as they are.)
    for nic in spec.nics:
        in_ns(spec.ns, "ip", "addr", "flush", "dev", nic.name, check=False)
        in_ns(spec.ns, "ip", "route", "flush", "dev", nic.name, "table", "all", check=False)
        in_ns(spec.ns, "ip", "link", "set", nic.name, "down", check=False)
    # The kernel's own rules, as `proto kernel`: systemd-networkd deletes rules of any other
    # protocol as foreign when it configures a link, which cut off a replacement's first boot.
    in_ns(spec.ns, "ip", "rule", "flush", check=False)
    for table, pref in (("main", "32766"), ("default", "32767")):
        in_ns(spec.ns, "ip", "rule", "add", "from", "all", "lookup", table, "pref", pref,
              "protocol", "kernel")
    spec.init_pidfile.unlink(missing_ok=True)


def wait_booted(spec: NodeSpec, timeout: float) -> str:
    """systemd's verdict once boot is over: running or degraded."""
    def state() -> str | None:
        if not is_on(spec):
            raise LabError(f"{spec.name} powered off while booting")
        out = exec_proc(spec, "systemctl", "is-system-running", timeout=30).stdout.strip()
        return out if out in ("running", "degraded") else None
    return wait_for(state, timeout, f"{spec.name} to finish booting", 1)


# ---- looking inside

def node_argv(spec: NodeSpec, *argv: str, env: dict[str, str] | None = None) -> list[str]:
    """argv run inside the node (all its namespaces), with a clean root environment."""
    pid = init_pid(spec)
    if pid is None:
        raise LabError(f"node {spec.name} is powered off")
    full = {"PATH": SYSTEM_PATH, "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}
    return ["nsenter", "--target", str(pid), "--mount", "--uts", "--ipc", "--net", "--pid",
            "--", "env", "-i", *(f"{k}={v}" for k, v in full.items()), *argv]


def exec_in(spec: NodeSpec, *argv: str, check: bool = True, timeout: float = 120,
            input: str | None = None, env: dict[str, str] | None = None) -> str:
    return run(node_argv(spec, *argv, env=env), check=check, timeout=timeout, input=input)


def exec_proc(spec: NodeSpec, *argv: str, timeout: float = 120, input: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_proc(node_argv(spec, *argv, env=env), timeout=timeout, input=input)


def cluster_start(spec: NodeSpec, *args: str) -> None:
    """`pcs cluster start ARGS` on the node, right after a `pcs cluster stop`: 10 s later,
    and up to three times. In the lab, systemd inside nspawn sometimes fails to start a unit
    right after its stop (status 219/CGROUP, or "Failed to spawn executor")."""
    for _ in range(3):
        time.sleep(10)
        proc = exec_proc(spec, "pcs", "cluster", "start", *args, timeout=360)
        if proc.returncode == 0:
            return
    raise LabError(f"pcs cluster start {' '.join(args)} on {spec.name} failed 3 times:\n"
                   f"{proc.stdout}{proc.stderr}")


def netns_pids(ns: str) -> list[int]:
    """Every process whose network namespace is `ns`: the whole 'machine'."""
    try:
        target = os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == target:
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def kill_ns(ns: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (pids := netns_pids(ns)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    if netns_pids(ns):
        raise LabError(f"processes of {ns} survive SIGKILL: {netns_pids(ns)}")


def processes(spec: NodeSpec) -> list[tuple[int, list[str]]]:
    """(pid, argv) of every process running on the node."""
    out = []
    for pid in netns_pids(spec.ns):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        out.append((pid, [a.decode(errors="replace") for a in argv if a]))
    return out


def freeze(spec: NodeSpec) -> list[int]:
    """The node hangs: every process stops where it is (a kernel or hypervisor hang).
    Returns the stopped pids, for thaw()."""
    pids = netns_pids(spec.ns)
    _signal(pids, signal.SIGSTOP)
    return pids


def thaw(pids: list[int]) -> None:
    """The hang ends: the processes freeze() stopped run on."""
    _signal(pids, signal.SIGCONT)


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def is_stopped(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "tT"
    except (OSError, IndexError):
        return True


def kill_matching(spec: NodeSpec, pred) -> list[int]:  # noqa: ANN001
    """SIGKILL the node's processes whose argv satisfies `pred`; returns their pids."""
    pids = [pid for pid, argv in processes(spec) if argv and pred(argv)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids
