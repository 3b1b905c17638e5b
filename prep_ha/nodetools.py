"""The nodes' own tools, wherever this code runs.

The offline checks (`pcs -f`, `crm_verify`, `crm_simulate`, `cloud-init schema`, `netplan
generate`) must give the answer the nodes' release gives, not the one of the machine running
them: Pacemaker's output, pcs's syntax and cloud-init's schema all change between Debian
releases. So every such call goes through `node_tools().run(...)`, which runs it

- on this machine, when it runs the nodes' release (prep_ha/release.py) with the tools
  installed; or
- in the node image's root with the nodes' packages installed: the lab builds it
  (`sudo python3 -m lab image`) from the same Debian indexes the lab's nodes install from, and
  records where it is in `<cache>/node-tools.json`. The call runs there by chroot, in private
  mount, PID and network namespaces: what it writes lands in a tmpfs that goes with it, it
  reaches no network, and of this machine it sees only the paths the caller names (at the
  same place) and /dev (bound whole: the tools need /dev/null and /dev/urandom; that is
  root's /dev, so this isolates mistakes, not a hostile tool).

Anything else is an error that says how to get the tools.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prep_ha.release import DEBIAN_CODENAME, DEBIAN_VERSION

CACHE_ENV = "PREP_HA_LAB_CACHE"
DEFAULT_CACHE = Path("/var/cache/prep-ha-lab")
POINTER = "node-tools.json"
# What a node runs that the offline checks need (all from the nodes' packages).
TOOLS = ("pcs", "cibadmin", "crm_verify", "crm_simulate", "crm_attribute", "crm_mon",
         "cloud-init", "netplan", "python3", "bash")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class NodeToolsMissing(RuntimeError):
    """Neither this machine nor a built node image offers the nodes' tools."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def pointer_path() -> Path:
    return cache_dir() / POINTER


def os_release(root: Path = Path("/")) -> dict[str, str]:
    """/etc/os-release of a root, as key -> value."""
    path = root / "etc/os-release"
    if not path.exists():
        path = root / "usr/lib/os-release"
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value.strip().strip('"')
    return values


@dataclass(frozen=True)
class NodeTools:
    """Runs the nodes' tools. `layers` are the image's read-only root layers, top first;
    empty: this machine is of the nodes' release and runs them itself."""

    release: str
    layers: tuple[Path, ...] = ()

    @property
    def where(self) -> str:
        return (f"the node image ({self.layers[-1].parent.name})" if self.layers
                else "this machine")

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
            paths: Iterable[str | os.PathLike[str]] = (), input: str | None = None,
            timeout: float | None = None, network: bool = False
            ) -> subprocess.CompletedProcess[str]:
        """argv with the nodes' tools; `env` on top of a plain root environment; `paths`
        (files or directories) are the only parts of this machine it sees, at the same place.
        `network`: share this machine's network (loopback servers of a test); else none.
        Never raises for a non-zero exit: check returncode."""
        full_env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": "/root", **(env or {})}
        if not self.layers:
            return subprocess.run(list(argv), env={**os.environ, **full_env}, input=input,
                                  capture_output=True, text=True, timeout=timeout, check=False)
        with tempfile.TemporaryDirectory(prefix="prep-ha-node-tools-") as state:
            command = chroot_command(self.layers, Path(state), argv,
                                     binds=[Path(p).resolve() for p in paths], env=full_env,
                                     network=network)
            return subprocess.run(command, input=input, capture_output=True, text=True,
                                  timeout=timeout, check=False, env={"PATH": SYSTEM_PATH})


def chroot_command(layers: Sequence[Path], state: Path, argv: Sequence[str], *,
                   binds: Iterable[Path] = (), env: Mapping[str, str] | None = None,
                   network: bool = False) -> list[str]:
    """argv chrooted into the union of `layers` (top first, read-only) with a tmpfs on top,
    mounted on `state`, in a private mount namespace (and network namespace unless
    `network`): /proc, /sys read-only, /dev, fresh /run and /tmp; each of `binds` at its own
    path. Everything mounted, and every process it started, vanishes with the command (or
    when a timeout kills `unshare`)."""
    q = shlex.quote
    root = state / "root"
    lower = ":".join(str(p) for p in layers)
    script = [
        "set -e",
        f"mount -t tmpfs -o mode=0755 prep-ha-node-tools {q(str(state))}",
        f"mkdir {q(str(state / 'upper'))} {q(str(state / 'work'))} {q(str(root))}",
        f"mount -t overlay overlay -o lowerdir={q(lower)},upperdir={q(str(state / 'upper'))},"
        f"workdir={q(str(state / 'work'))} {q(str(root))}",
        f"mount -t proc proc {q(str(root / 'proc'))}",
        f"mount -t sysfs -o ro sysfs {q(str(root / 'sys'))}",
        f"mount --rbind /dev {q(str(root / 'dev'))}",
        f"mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs {q(str(root / 'run'))}",
        f"mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs {q(str(root / 'tmp'))}",
    ]
    for path in binds:
        target = q(str(root) + str(path))
        make = "mkdir -p" if path.is_dir() else "mkdir -p \"$(dirname " + target + ")\"; touch"
        script += [f"{make} {target}", f"mount --bind {q(str(path))} {target}"]
    variables = [f"{k}={v}" for k, v in (env or {}).items()]
    script.append(f'exec chroot {q(str(root))} /usr/bin/env -i "$@"')
    flags = ["--mount", "--propagation", "private", "--pid", "--fork", "--kill-child"]
    if not network:
        flags.insert(1, "--net")
    return ["unshare", *flags, "--", "/bin/sh", "-c", "\n".join(script), "sh",
            *variables, *argv]


def _host_tools() -> NodeTools | None:
    try:
        here = os_release().get("VERSION_ID")
    except OSError:
        return None
    if here != DEBIAN_VERSION or any(shutil.which(t, path=SYSTEM_PATH) is None
                                         for t in TOOLS):
        return None
    return NodeTools(DEBIAN_VERSION)


def _image_tools() -> NodeTools | None:
    try:
        doc = json.loads(pointer_path().read_text())
    except (OSError, ValueError):
        return None
    layers = tuple(Path(p) for p in doc.get("layers", ()))
    if doc.get("release") != DEBIAN_VERSION or not layers or not all(p.is_dir() for p in layers):
        return None
    return NodeTools(DEBIAN_VERSION, layers)


def missing_message() -> str:
    return (f"the nodes' tools (Debian {DEBIAN_VERSION} {DEBIAN_CODENAME}: pacemaker, pcs, "
            "cloud-init) are not here: build the node image once with `sudo python3 -m lab "
            f"image` (about 4 minutes; it records them in {pointer_path()}), or run on Debian "
            f"{DEBIAN_VERSION} with `apt-get install pacemaker pacemaker-cli-utils pcs "
            "cloud-init netplan.io`")


def node_tools() -> NodeTools:
    """This machine's tools if it runs the nodes' release, else the node image's; raises
    NodeToolsMissing with the way to get them. The image's need root (chroot, mounts)."""
    tools = _host_tools() or _image_tools()
    if tools is None:
        raise NodeToolsMissing(missing_message())
    if tools.layers and os.geteuid() != 0:
        raise NodeToolsMissing(f"the nodes' tools are in the node image, which only root can "
                               f"enter (chroot): run this with sudo ({pointer_path()})")
    return tools


def available() -> bool:
    try:
        node_tools()
    except NodeToolsMissing:
        return False
    return True
