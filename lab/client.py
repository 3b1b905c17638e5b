"""The lab's client host, on the internet side: the operator and the peer's public view.

It reaches the nodes' management addresses through their Elastic IPs (SSH, as `pulumi up`
and an admin do) and the peer VIP through the VPC router (where the NLB would forward).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from lab.netns import ns_argv, run, run_proc
from lab.topology import CLIENT_NS

# Without a pinned key (the lab's own admin access) no host key is checked.
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10")
UNPINNED = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null")
SSH_UNREACHABLE = 255


def probe(vip: str, timeout: float = 1.0) -> dict | None:
    """GET http://VIP:9000/ from the client: {"role", "node", ...} or None if nothing answers."""
    out = run(ns_argv(CLIENT_NS, "curl", "-s", "-m", str(timeout), f"http://{vip}:9000/"),
              check=False, timeout=timeout + 5)
    try:
        return json.loads(out)
    except ValueError:
        return None


def generate_key(path: Path) -> tuple[str, str]:
    """The stack's admin key pair for the lab (the program's tls.PrivateKey): (private, public)."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "prep-ha-lab", "-f", str(path)])
    return path.read_text(), Path(f"{path}.pub").read_text().strip()


def ssh(key: Path, user: str, host: str, command: str, *, input: str | None = None,
        timeout: float = 600, host_key: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `command` on host as pulumi-command's remote.Command does: one exec, stdin piped.
    With `host_key` (`ssh-ed25519 AAAA...`) only a host presenting that key is accepted; a
    mismatch exits 255 like an unreachable host (pulumi-command: a dial error)."""
    def run_with(options: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        return run_proc(ns_argv(CLIENT_NS, "ssh", "-i", str(key), *SSH_OPTIONS, *options,
                                f"{user}@{host}", command), timeout=timeout, input=input)

    if not host_key:
        return run_with(UNPINNED)
    with tempfile.NamedTemporaryFile("w", prefix="known_hosts.", dir=key.parent) as known:
        known.write(f"{host} {host_key.strip()}\n")
        known.flush()
        return run_with(("-o", "StrictHostKeyChecking=yes",
                         "-o", f"UserKnownHostsFile={known.name}",
                         "-o", f"HostKeyAlgorithms={host_key.split()[0]}"))
