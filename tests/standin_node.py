"""A temporary node root for the lab's docker / docker-compose stand-ins (lab/standins), shared
by the tests of the stand-ins and of the node scripts that use them.

The scripts run as on a node (/usr/bin/python3 with python3-yaml), with every host path under
a temporary PREP_HA_STANDIN_ROOT. A started node listens on 7100/9000, so each `up` runs in its
own anonymous network namespace (`unshare -n`, root only) and is probed with nsenter.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from prep_ha.userdata import NodeSettings, node_payload
from tests.test_userdata import sample

STANDINS = Path(__file__).resolve().parent.parent / "lab" / "standins"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PYTHON = "/usr/bin/python3"
PASSWORD = "lab-Key_pw.42"  # a fake KEY_PASSWORD
IMAGE = "iconloop/icon2-node:v1.4.6"

needs_node_python = pytest.mark.skipif(
    subprocess.run([PYTHON, "-c", "import yaml"], capture_output=True).returncode != 0,
    reason="the node's interpreter /usr/bin/python3 with python3-yaml is not installed")
needs_netns = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                 reason="starting a node needs root for its own netns")


def node_settings() -> NodeSettings:
    return sample(icon_image=IMAGE)


class Node:
    """A temporary root laid out as a node after its payload and peer.service's ExecStartPre."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {"PREP_HA_STANDIN_ROOT": str(root), "PATH": "/usr/bin:/bin"}
        self.ups: list[subprocess.Popen] = []
        self.scripts = {name: STANDINS / name for name in ("docker", "docker-compose",
                                                           "dockerd.py")}
        for entry in node_payload(node_settings()).files:
            if entry.path.startswith(("/etc/", "/usr/local/sbin/")):
                self.path(entry.path).parent.mkdir(parents=True, exist_ok=True)
                self.path(entry.path).write_text(entry.content)
                self.path(entry.path).chmod(int(entry.mode, 8))
        # The node's scripts find `docker` on PATH: the stand-in.
        self.path("/usr/local/bin").mkdir(parents=True)
        self.path("/usr/local/bin/docker").symlink_to(STANDINS / "docker")
        self.env["PATH"] = f"{self.path('/usr/local/bin')}:{self.env['PATH']}"
        # The units' EnvironmentFile: compose takes the image from it (prep-ha-image).
        image_env = self.path("/etc/prep-ha/icon-image.env").read_text()
        self.env.update(line.split("=", 1) for line in image_env.splitlines() if "=" in line)
        for d in ("/app/icon/data", "/app/icon/peer/config", "/app/icon/peer/logs",
                  "/app/icon/ctz/config", "/app/icon/ctz/logs", "/run/prep-ha/peer",
                  "/usr/lib/prep-ha-lab"):
            self.path(d).mkdir(parents=True)
        shutil.copy(FIXTURES / "fake_keystore.json", self.path("/run/prep-ha/peer/keystore.json"))
        self.path("/run/prep-ha/peer/keysecret").write_text(PASSWORD)  # as prep-ha-secret --to
        self.path("/usr/lib/prep-ha-lab/icon_node.py").symlink_to(STANDINS / "icon_node.py")
        assert self.run("dockerd.py", "start").returncode == 0
        # What the units' other ExecStartPre prepare: FASTEST_START, the citizen's wallet.
        for role in ("peer", "ctz"):
            self.sbin("prep-ha-chain-sync", "/app/icon", f"/run/prep-ha/{role}-chain-sync.env")
        self.sbin("prep-ha-citizen-key", "/app/icon/ctz/key")

    def sbin(self, script: str, *paths: str) -> subprocess.CompletedProcess:
        """A node script from the user-data, its path arguments under the root; must pass."""
        result = subprocess.run([self.path(f"/usr/local/sbin/{script}"),
                                 *(str(self.path(p)) for p in paths)],
                                env=self.env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result

    def path(self, host_path: str) -> Path:
        return Path(str(self.root) + host_path)

    def yml(self, project: str) -> str:
        return str(self.path(f"/etc/prep-ha/{project}.yml"))

    def run(self, script: str, *args: str) -> subprocess.CompletedProcess:
        argv = [PYTHON, str(self.scripts[script])] if script.endswith(".py") else \
            [str(self.scripts[script])]  # the scripts run through their own shebang
        return subprocess.run([*argv, *args], env=self.env, capture_output=True, text=True,
                              timeout=60)

    def compose(self, project: str, *args: str) -> subprocess.CompletedProcess:
        return self.run("docker-compose", "-p", project, "-f", self.yml(project), *args)

    def start_up(self, project: str) -> subprocess.Popen:
        """ExecStart of peer.service / ctz.service, in a fresh network namespace."""
        out = open(self.root / f"{project}-{len(self.ups)}.out", "w+")
        up = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
             str(self.scripts["docker-compose"]), "-p", project, "-f", self.yml(project),
             "up", "--no-color", "--abort-on-container-exit"],
            env=self.env, stdout=out, stderr=subprocess.PIPE, text=True)
        up.out = out  # type: ignore[attr-defined]
        self.ups.append(up)
        return up

    def output(self, up: subprocess.Popen) -> tuple[str, str]:
        """(attached container output, compose's own stderr) once `up` has exited."""
        stderr = up.stderr.read()
        up.out.seek(0)  # type: ignore[attr-defined]
        return up.out.read(), stderr  # type: ignore[attr-defined]

    def role_pid(self) -> int:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pidfiles = list(self.path("/run/prep-ha-lab").glob("*.pid"))
            if pidfiles and pidfiles[0].read_text():
                return int(pidfiles[0].read_text())
            time.sleep(0.05)
        raise AssertionError("no role process recorded")

    def http_get(self, up: subprocess.Popen, port: int = 9000) -> dict:
        """GET / on the node's published port, from inside the node's network namespace."""
        netns, deadline = f"/proc/{up.pid}/ns/net", time.monotonic() + 10
        while os.readlink(netns) == os.readlink("/proc/self/ns/net"):  # unshare not done yet
            assert time.monotonic() < deadline, "up never entered its own network namespace"
            time.sleep(0.01)
        probe = ("import time, urllib.request\n"
                 "for _ in range(200):\n"
                 "    try:\n"
                 f"        print(urllib.request.urlopen('http://127.0.0.1:{port}/').read()"
                 ".decode()); break\n"
                 "    except OSError: time.sleep(0.05)\n")
        result = subprocess.run(["nsenter", f"--net={netns}", PYTHON, "-c", probe],
                                capture_output=True, text=True, timeout=30)
        assert result.stdout, result.stderr
        return json.loads(result.stdout)

    def records(self) -> list[Path]:
        return sorted(self.path("/var/lib/docker/containers").glob("*/config.v2.json"))

    def cleanup(self) -> None:
        for pidfile in self.path("/run/prep-ha-lab").glob("*.pid"):
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except (ValueError, ProcessLookupError):
                pass
        for up in self.ups:
            if up.poll() is None:
                up.kill()
            up.wait()
            up.out.close()  # type: ignore[attr-defined]
            up.stderr.close()


@contextmanager
def standin_node(tmp_path: Path) -> Iterator[Node]:
    """A Node under tmp_path, its processes killed afterwards."""
    n = Node(tmp_path / "root")
    try:
        yield n
    finally:
        n.cleanup()


def files_holding(root: Path, value: str) -> list[str]:
    return sorted(str(f.relative_to(root)) for f in root.rglob("*")
                  if f.is_file() and not f.is_symlink() and value.encode() in f.read_bytes())
