"""One lab node: a network namespace plus a mount and UTS namespace holding its own system state.

A long-lived holder process owns the mount/UTS namespaces (private /etc/corosync,
/var/lib/pacemaker, /var/lib/corosync, /var/log, /run, /dev/shm, /etc/hosts and the OCF agent
directory) and the node's hostname; corosync and pacemakerd join it with nsenter. Powering a
node off kills every process in its network namespace, as an EC2 stop does to an instance.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lab.netns import LabError, in_ns, run, run_proc, wait_for

OCF_ROOT = "/usr/lib/ocf/resource.d"
LAB_PROVIDER = "prep-ha-lab"
AGENT_SRC = Path(__file__).with_name("ocf")
# Private per node: (state subdirectory, mount point, owner, mode)
PERSISTENT = (
    ("etc-corosync", "/etc/corosync", "root:root", "755"),
    ("var-lib-pacemaker", "/var/lib/pacemaker", "hacluster:haclient", "750"),
    ("var-lib-corosync", "/var/lib/corosync", "root:root", "755"),
    ("var-log", "/var/log", "root:root", "755"),
)
PACEMAKER_DIRS = ("cib", "pengine", "blackbox", "cores")
# The agents must find the Debian tools, not a developer's pyenv shims.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    index: int
    ns: str
    state: str  # per-node state directory
    service_ip: str
    heartbeat_ip: str
    prefix_len: int
    # Where the node reaches the cloud host's metadata and EC2 endpoints
    cloud_ip: str
    env: tuple[tuple[str, str], ...]  # daemons' (and so the agents') environment

    @property
    def holder_pidfile(self) -> Path:
        return Path(self.state, "holder.pid")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> NodeSpec:
        return cls(**{**data, "env": tuple(tuple(p) for p in data["env"])})


def save_specs(path: Path, specs: list[NodeSpec]) -> None:
    path.write_text(json.dumps([s.to_json() for s in specs], indent=1))


def load_specs(path: Path) -> list[NodeSpec]:
    return [NodeSpec.from_json(d) for d in json.loads(path.read_text())]


def prepare_state(spec: NodeSpec, corosync_conf: str, authkey: bytes, hosts: str) -> None:
    """The node's 'disk': persistent directories, cluster configuration, /etc/hosts, agents."""
    state = Path(spec.state)
    for sub, _, owner, mode in PERSISTENT:
        (state / sub).mkdir(parents=True, exist_ok=True)
        run(["chown", owner, str(state / sub)])
        run(["chmod", mode, str(state / sub)])
    for sub in PACEMAKER_DIRS:
        d = state / "var-lib-pacemaker" / sub
        d.mkdir(exist_ok=True)
        run(["chown", "hacluster:haclient", str(d)])
        run(["chmod", "750", str(d)])
    logs = state / "var-log"
    for sub, owner, mode in (("pacemaker", "hacluster:haclient", "770"),
                             ("corosync", "root:root", "755")):
        (logs / sub).mkdir(exist_ok=True)
        run(["chown", owner, str(logs / sub)])
        run(["chmod", mode, str(logs / sub)])
    etc = state / "etc-corosync"
    (etc / "corosync.conf").write_text(corosync_conf)
    key = etc / "authkey"
    key.write_bytes(authkey)
    key.chmod(0o400)
    (state / "hosts").write_text(hosts)
    # The OCF tree seen by the node: the host's providers plus the lab's service agent.
    ocf = state / "ocf"
    for provider in os.listdir(OCF_ROOT):
        (ocf / provider).mkdir(parents=True, exist_ok=True)
    (ocf / LAB_PROVIDER).mkdir(parents=True, exist_ok=True)


def _holder_script(spec: NodeSpec) -> str:
    s = shlex.quote
    state = Path(spec.state)
    lines = ["set -e", f"hostname {s(spec.name)}"]
    for sub, target, _, _ in PERSISTENT:
        lines.append(f"mount --bind {s(str(state / sub))} {target}")
    lines += [
        # A boot starts with an empty /run and /dev/shm (libqb's IPC ring buffers live there).
        "mount -t tmpfs -o mode=755 tmpfs /run",
        "mount -t tmpfs -o mode=1777 tmpfs /dev/shm",
        "mkdir -p /run/crm /run/resource-agents /run/prep-ha-lab",
        "chown hacluster:haclient /run/crm",
        f"mount --bind {s(str(state / 'hosts'))} /etc/hosts",
    ]
    for provider in os.listdir(OCF_ROOT):
        lines.append(f"mount --bind {OCF_ROOT}/{provider} {s(str(state / 'ocf' / provider))}")
    lines += [
        f"mount --bind {s(str(AGENT_SRC))} {s(str(state / 'ocf' / LAB_PROVIDER))}",
        f"mount --rbind {s(str(state / 'ocf'))} {OCF_ROOT}",
        f"echo $$ > {s(str(spec.holder_pidfile))}",
        "exec sleep infinity",
    ]
    return "\n".join(lines)


def holder_pid(spec: NodeSpec) -> int | None:
    try:
        pid = int(spec.holder_pidfile.read_text())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def nsenter(spec: NodeSpec, *argv: str) -> list[str]:
    pid = holder_pid(spec)
    if pid is None:
        raise LabError(f"node {spec.name} is powered off")
    return ["nsenter", "--target", str(pid), "--mount", "--uts", "--net", "--", *argv]


def node_env(spec: NodeSpec) -> dict[str, str]:
    return {"PATH": SYSTEM_PATH, "HOME": "/root", "LANG": "C.UTF-8", **dict(spec.env)}


def _in_node(spec: NodeSpec, argv: tuple[str, ...], env: dict[str, str] | None) -> list[str]:
    full = {**node_env(spec), **(env or {})}
    return nsenter(spec, "env", "-i", *(f"{k}={v}" for k, v in full.items()), *argv)


def exec_in(spec: NodeSpec, *argv: str, check: bool = True, timeout: float = 120,
            input: str | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command inside the node, with the node's environment (as an admin's shell would)."""
    return run(_in_node(spec, argv, env), check=check, timeout=timeout, input=input)


def exec_proc(spec: NodeSpec, *argv: str, timeout: float = 120, input: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_proc(_in_node(spec, argv, env), timeout=timeout, input=input)


# Daemons we started; polled so that killed ones (a fenced node) do not linger as zombies.
_children: list[subprocess.Popen] = []


def _spawn(spec: NodeSpec, name: str, *argv: str) -> None:
    _children[:] = [p for p in _children if p.poll() is None]
    log = open(Path(spec.state, f"{name}.out"), "ab")  # noqa: SIM115 - owned by the child
    env = node_env(spec)
    argv_env = [f"{k}={v}" for k, v in env.items()]
    _children.append(subprocess.Popen(
        nsenter(spec, "env", "-i", *argv_env, *argv), stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True))
    log.close()


def power_on(spec: NodeSpec, timeout: float = 30) -> None:
    """Boot: links up, the primary address only, fresh holder, then corosync and pacemaker."""
    if holder_pid(spec) is not None:
        return
    in_ns(spec.ns, "ip", "addr", "flush", "dev", "eth0")
    in_ns(spec.ns, "ip", "addr", "add", f"{spec.service_ip}/{spec.prefix_len}", "dev", "eth0")
    for link in ("eth0", "hb0"):
        in_ns(spec.ns, "ip", "link", "set", link, "up")
    # The metadata service is reached on the service ENI, from the node's own address.
    in_ns(spec.ns, "ip", "route", "replace", "169.254.169.254/32", "dev", "eth0",
          "src", spec.service_ip)
    spec.holder_pidfile.unlink(missing_ok=True)
    holder = ["ip", "netns", "exec", spec.ns, "unshare", "--mount", "--uts",
              "--propagation", "private", "--", "sh", "-c", _holder_script(spec)]
    with open(Path(spec.state, "holder.err"), "ab") as err:
        _children.append(subprocess.Popen(holder, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=err,
                                          start_new_session=True))
    wait_for(lambda: holder_pid(spec) is not None, timeout, f"{spec.name} holder", 0.1)
    _spawn(spec, "corosync", "corosync", "-f")
    wait_for(lambda: exec_in(spec, "corosync-cfgtool", "-s", check=False).strip() != "",
             timeout, f"corosync on {spec.name}", 0.2)
    _spawn(spec, "pacemakerd", "pacemakerd")


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


def power_off(spec: NodeSpec) -> None:
    """An EC2 stop: everything on the node dies at once, its NICs go dark."""
    kill_ns(spec.ns)
    for link in ("eth0", "hb0"):
        in_ns(spec.ns, "ip", "link", "set", link, "down", check=False)
    spec.holder_pidfile.unlink(missing_ok=True)


def is_on(spec: NodeSpec) -> bool:
    return holder_pid(spec) is not None


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


def kill_matching(spec: NodeSpec, pred) -> list[int]:  # noqa: ANN001
    """SIGKILL the node's processes whose argv satisfies `pred`; returns their pids."""
    pids = [pid for pid, argv in processes(spec) if argv and pred(argv)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids
