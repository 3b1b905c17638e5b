"""SSH to the two nodes as the operator does: the stack's admin key, the pinned host keys.

The same code serves three callers: an operator at a terminal (`pulumi stack output` and the
files sshKeyCommand wrote), the stack's roll Command during `pulumi up` (addresses and known
hosts in its environment, the key on stdin) and the lab (from its client namespace).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SSH_USER = "admin"
# The roll Command's environment: "node-1=ADDRESS node-2=ADDRESS", and known_hosts lines.
NODES_ENV = "PREP_HA_NODES"
KNOWN_HOSTS_ENV = "PREP_HA_KNOWN_HOSTS"


class OpsError(Exception):
    """An operation refused or failed; the message says where and what to do."""


def ssh_files(cluster_name: str) -> tuple[str, str]:
    """The admin key and the pinned host keys, in the user's SSH directory (not the repo)."""
    return f"~/.ssh/{cluster_name}-admin", f"~/.ssh/{cluster_name}-known_hosts"


def known_hosts_lines(hosts: list[str], host_keys: list[str]) -> str:
    """known_hosts for the nodes: each address with the host key the stack generated for it."""
    return "".join(f"{host} {key.strip()}\n" for host, key in zip(hosts, host_keys, strict=True))


@dataclass(frozen=True)
class NodeShell:
    hosts: Mapping[str, str]  # node name -> management address, node 1 first
    key_file: str
    known_hosts: str
    user: str = SSH_USER
    # Prefix of every ssh argv: the lab runs ssh inside its client's network namespace.
    wrap: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return list(self.hosts)

    def other(self, node: str) -> str:
        return next(n for n in self.hosts if n != node)

    def run(self, node: str, command: str, *, stdin: str | None = None,
            timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [*self.wrap, "ssh", "-i", os.path.expanduser(self.key_file),
                "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
                "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={os.path.expanduser(self.known_hosts)}",
                f"{self.user}@{self.hosts[node]}", command]
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise OpsError(f"{node}: `{command}` exited {proc.returncode}: "
                           f"{(proc.stderr or proc.stdout).strip()}")
        return proc

    def out(self, node: str, command: str, **kwargs: object) -> str:
        return self.run(node, command, **kwargs).stdout.strip()  # type: ignore[arg-type]


def parse_nodes(text: str) -> dict[str, str]:
    """"node-1=ADDRESS node-2=ADDRESS" -> {node: address}, refusing anything else."""
    pairs = [item.partition("=") for item in text.split()]
    if len(pairs) != 2 or any(not name or not sep or not host for name, sep, host in pairs):
        raise OpsError(f"{NODES_ENV} must be 'NODE1=ADDRESS NODE2=ADDRESS', not {text!r}")
    return {name: host for name, _, host in pairs}


@contextmanager
def from_environment(environ: Mapping[str, str], private_key: str) -> Iterator[NodeShell]:
    """The roll Command's view: the key lives in a private temporary directory, only for the
    length of the operation (pulumi-command hands it over on stdin, never on argv)."""
    for name in (NODES_ENV, KNOWN_HOSTS_ENV):
        if not environ.get(name):
            raise OpsError(f"{name} is not set (the stack's roll Command sets it)")
    if "PRIVATE KEY" not in private_key:
        raise OpsError("no SSH private key on stdin (the stack's roll Command passes it)")
    with tempfile.TemporaryDirectory(prefix="prep-ha-ssh.") as tmp:
        key, known = Path(tmp, "key"), Path(tmp, "known_hosts")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(private_key if private_key.endswith("\n") else private_key + "\n")
        known.write_text(environ[KNOWN_HOSTS_ENV])
        yield NodeShell(parse_nodes(environ[NODES_ENV]), str(key), str(known))


def from_stack(stack: str, cluster_name: str, node_names: list[str]) -> NodeShell:
    """An operator's view: `pulumi stack output` and the files sshKeyCommand wrote."""
    key_file, known_hosts = ssh_files(cluster_name)
    for path in (key_file, known_hosts):
        if not Path(os.path.expanduser(path)).exists():
            raise OpsError(f"{path} is missing: run the stack's sshKeyCommand first "
                           f"(`pulumi stack output --stack {stack} sshKeyCommand`)")
    try:
        out = subprocess.run(["pulumi", "stack", "output", "--stack", stack, "--json"],
                             capture_output=True, text=True, check=True, timeout=120).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise OpsError(f"cannot read the outputs of stack {stack}: {e}") from None
    hosts = json.loads(out).get("managementIps") or {}
    if sorted(hosts) != sorted(node_names):
        raise OpsError(f"stack {stack} has no managementIps for {node_names}: is it deployed?")
    return NodeShell({n: hosts[n] for n in node_names}, key_file, known_hosts)
