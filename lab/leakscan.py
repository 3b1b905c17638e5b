"""Leak scan of a lab: where do the keystore password and the hacluster password turn up?

    python -m lab leakscan [--output FILE]...  # the running lab (PREP_HA_LAB_DIR); exit 1 on hits

The drill runs it after every case and once more at the end (lab/drill.py).

Searched, on every instance of the stack (the two nodes and the arbiter): every file of the
root volume (the overlay's upper layer: what the instance wrote), of the data volume and of
every tmpfs (/run, /tmp, /dev/shm, ...); every process's argv and environment; the journal
(`journalctl -o export`: every field, _CMDLINE included); the containers' metadata (`docker
inspect`); cloud-init's logs; the node's console. Then the deployment's recorded non-secret
inputs and outputs (deployment.json), every file the lab itself wrote, every process of the
lab's other namespaces (cloud, client), and any captured output of the lab (--output).

Each secret is searched raw, JSON-escaped and base64-encoded (at the three alignments). The
one place a secret may be: /run/prep-ha/peer on the node where peer.service runs (the key, by
design), and the lab's own secret store (keystore-password, secret-values.json). A hit names
the secret and the place, never the value.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

MIN_SECRET_LEN = 8
READ_LIMIT = 64 * 1024 * 1024  # bigger files are read in chunks
# The lab's own secret store: what the operator holds (the keystore password file) and what
# the stack generated (secret-values.json); and its SSH key.
LAB_SECRET_FILES = ("keystore-password", "secret-values.json", "admin.key")
# Where the key lives while the peer runs (peer.service's RuntimeDirectory).
PEER_RUNTIME_DIR = "/run/prep-ha/peer"
PSEUDO_FS = ("proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "debugfs", "tracefs",
             "securityfs", "pstore", "bpf", "configfs", "fusectl", "hugetlbfs", "autofs",
             "binfmt_misc")


def needles(value: str) -> list[bytes]:
    """The forms a value takes in text: raw, JSON-escaped, base64 at each alignment."""
    raw = value.encode()
    forms = {raw, json.dumps(value)[1:-1].encode()}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)
        # Only the characters whose 6 bits all come from the value: the others depend on
        # the bytes around it.
        start, end = -(-8 * shift // 6), 8 * (shift + len(raw)) // 6
        if end - start >= MIN_SECRET_LEN:
            forms.add(encoded[start:end])
    return sorted(forms, key=len)


@dataclass
class Hit:
    secret: str  # its name, never its value
    category: str
    where: str


@dataclass
class Scanner:
    """Searches bytes for the secrets; counts what it looked at, per category."""

    secrets: Mapping[str, str]  # name -> value
    hits: list[Hit] = field(default_factory=list)
    scanned: dict[str, int] = field(default_factory=dict)
    allowed: list[str] = field(default_factory=list)
    # node -> the secrets its /run/prep-ha/peer holds (nodes running the peer only)
    peer_dirs: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        short = [n for n, v in self.secrets.items() if len(v) < MIN_SECRET_LEN]
        if short:
            raise ValueError(f"secrets too short to search reliably: {', '.join(short)}")
        self._needles = {name: needles(v) for name, v in self.secrets.items()}

    def data(self, category: str, where: str, data: bytes) -> None:
        self.scanned[category] = self.scanned.get(category, 0) + 1
        if data[:2] == b"\x1f\x8b":  # rotated logs
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError):
                pass
        for name, forms in self._needles.items():
            if any(form in data for form in forms):
                self.hits.append(Hit(name, category, where))

    def file(self, category: str, path: Path, shown: str) -> None:
        try:
            if path.stat().st_size <= READ_LIMIT:
                self.data(category, shown, path.read_bytes())
                return
            with path.open("rb") as f:  # overlapping chunks: a value across a boundary
                tail = b""
                while chunk := f.read(READ_LIMIT):
                    self.data(category, shown, tail + chunk)
                    tail = chunk[-4096:]
        except OSError:
            pass  # vanished or unreadable (a socket, a file being rotated)

    def tree(self, category: str, root: Path, shown: str,
             skip: Callable[[str], bool] = lambda p: False) -> None:
        """Every regular file under `root`; `shown` replaces `root` in the reported path."""
        for directory, dirs, files in os.walk(root):
            rel_dir = os.path.relpath(directory, root)
            dirs[:] = [d for d in dirs if not skip(os.path.normpath(os.path.join(rel_dir, d)))]
            for name in files:
                rel = os.path.normpath(os.path.join(rel_dir, name))
                path = Path(directory, name)
                if skip(rel) or path.is_symlink() or not path.is_file():
                    continue
                self.file(category, path, f"{shown}/{rel}")

    def processes(self, category: str, pids: Iterable[int], label: str) -> None:
        for pid in pids:
            for part in ("cmdline", "environ"):
                try:
                    data = Path(f"/proc/{pid}/{part}").read_bytes()
                except OSError:
                    continue
                self.data(category, f"{label} pid {pid} {part}", data)

    def report(self, title: str) -> str:
        lines = [title]
        for category, count in self.scanned.items():
            hits = [h for h in self.hits if h.category == category]
            lines.append(f"  {category:<44} {count:>7} scanned  {len(hits)} hits")
        for place in self.allowed:
            lines.append(f"  allowed: {place}")
        for hit in self.hits:
            lines.append(f"  HIT {hit.secret}: {hit.category}: {hit.where}")
        lines.append(f"{len(self.hits)} hits" if self.hits else "zero hits")
        return "\n".join(lines)


# ---- the lab -------------------------------------------------------------------------------

def lab_secrets(lab: object) -> dict[str, str]:
    """The secret values of a lab run: the keystore password the operator typed, the hacluster
    password the stack generated, and the keystore's ciphertext."""
    run_dir = Path(lab.run_dir)  # type: ignore[attr-defined]
    found = {"keystore password": (run_dir / "keystore-password").read_text().strip()}
    stored = lab.secret_values()  # type: ignore[attr-defined]
    for name, value in stored.get("generated_passwords", {}).items():
        if "hacluster" in name:
            found["hacluster password"] = value
    for name, value in stored.get("secret_values", {}).items():
        if name.endswith("/keystore-password"):
            found["keystore password"] = value
    from lab.cluster import KEYSTORE
    found["keystore ciphertext"] = json.loads(KEYSTORE.read_text())["crypto"]["ciphertext"]
    return found


def _in_node(spec: object, *argv: str) -> bytes:
    from lab.node import node_argv
    proc = subprocess.run(node_argv(spec, *argv), capture_output=True, timeout=300)
    return proc.stdout


def _mounts(pid: int) -> list[tuple[str, str]]:
    """(mount point, fs type) of a process's mount namespace."""
    out = []
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        point = left.split()[4].replace("\\040", " ")
        out.append((point, right.split()[0]))
    return out


def scan_host(scanner: Scanner, spec: object) -> None:
    """One instance: its volumes, tmpfs, processes, journal, containers, logs and console."""
    from lab.node import init_pid, netns_pids
    name = spec.name  # type: ignore[attr-defined]
    state = Path(spec.state)  # type: ignore[attr-defined]
    scanner.tree("root volume files", state / "upper", f"{name}:")
    scanner.file("node console", state / "console.log", f"{name}: console.log")
    pid = init_pid(spec)  # type: ignore[arg-type]
    if pid is None:
        return  # a stopped instance: the root volume is all there is (its RAM is gone)
    root = Path(f"/proc/{pid}/root")
    peer_runs = _in_node(spec, "systemctl", "is-active", "peer.service").strip() == b"active"
    if peer_runs:
        # The search really sees the live values: the one allowed place must hold them.
        probe = Scanner(scanner.secrets)
        probe.tree("allowed", root / PEER_RUNTIME_DIR.lstrip("/"), "")
        held = sorted({h.secret for h in probe.hits})
        scanner.allowed.append(f"{name}:{PEER_RUNTIME_DIR} (peer.service is active there; "
                               f"holds: {', '.join(held) or 'nothing'})")
        scanner.peer_dirs[name] = held
    for point, fstype in _mounts(pid):
        if fstype in ("tmpfs", "ramfs") or point == "/app/icon":
            category = "data volume files" if point == "/app/icon" else "tmpfs files"
            rel_peer = os.path.relpath(PEER_RUNTIME_DIR, point)
            skip = (lambda p, r=rel_peer: p == r or p.startswith(r + "/")) if peer_runs and \
                not rel_peer.startswith("..") else (lambda p: False)
            scanner.tree(category, root / point.lstrip("/"), f"{name}:{point.rstrip('/')}", skip)
    scanner.processes("process argv and environment", netns_pids(spec.ns), name)
    scanner.data("journal (every field)", f"{name}: journalctl -o export",
                 _in_node(spec, "journalctl", "--no-pager", "-o", "export"))
    names = [line.split()[-1] for line in _in_node(spec, "docker", "ps", "-a").decode(
        errors="replace").splitlines()[1:] if line.split()]
    for container in names:
        scanner.data("container metadata (docker inspect)", f"{name}: {container}",
                     _in_node(spec, "docker", "inspect", container))
    for log in ("/var/log/cloud-init.log", "/var/log/cloud-init-output.log"):
        scanner.file("cloud-init logs", root / log.lstrip("/"), f"{name}:{log}")


def scan_lab(lab: object, outputs: Mapping[str, str] | None = None,
             secrets: Mapping[str, str] | None = None) -> Scanner:
    """The whole lab; `outputs` are captured texts of the lab's own output (name -> text)."""
    from lab import netns
    from lab.node import netns_pids
    scanner = Scanner(dict(secrets) if secrets is not None else lab_secrets(lab))
    hosts = getattr(lab, "hosts", None) or lab.nodes  # type: ignore[attr-defined]
    for spec in hosts:
        scan_host(scanner, spec)
    run_dir = Path(lab.run_dir)  # type: ignore[attr-defined]
    node_dirs = {os.path.relpath(Path(s.state), run_dir) for s in hosts}
    scanner.file("deployment (non-secret inputs, outputs)", run_dir / "deployment.json",
                 "deployment.json")
    scanner.allowed += [f"lab run dir: {f}" for f in LAB_SECRET_FILES]

    def skip(rel: str) -> bool:
        return rel in LAB_SECRET_FILES or rel.startswith("admin.key") or \
            any(rel == d or rel.startswith(d + "/") for d in node_dirs)

    scanner.tree("lab run dir (logs, cloud, deployment)", run_dir, "lab", skip)
    ours = {s.ns for s in hosts}  # type: ignore[attr-defined]
    for ns in netns.namespaces():
        if ns not in ours:
            scanner.processes("lab processes (cloud, client)", netns_pids(ns), ns)
    for label, text in (outputs or {}).items():
        scanner.data("lab output", label, text.encode())
    return scanner


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab leakscan", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", action="append", default=[], type=Path,
                    help="a file holding captured output of the lab (up, drill)")
    args = ap.parse_args(argv)
    from lab.__main__ import _lab
    lab = _lab(None)
    scanner = scan_lab(lab, {str(p): p.read_text(errors="replace") for p in args.output})
    print(scanner.report(f"leak scan of the lab in {lab.run_dir}: "
                         f"{', '.join(scanner.secrets)} (raw, JSON-escaped, base64)"))
    return 1 if scanner.hits else 0


if __name__ == "__main__":
    sys.exit(main())
