"""The lab's stand-in for the Docker daemon's state: a "container" is a host process.

Installed as /usr/lib/prep-ha-lab/dockerd.py; imported by /usr/bin/docker and
/usr/bin/docker-compose, and run by docker.service as `dockerd.py start|stop`.

It keeps what real Docker keeps on disk, where Docker keeps it, so that a leak scan of a lab
node finds what it would find on a real one: /var/lib/docker/containers/<id>/config.v2.json
(Config.Env holds the full environment, secrets included), hostconfig.json, the container's
log under local-logs/, and its writable layer /var/lib/docker/overlay2/<id>/diff.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

# Tests only: prefixes every host path the stand-ins touch (state, /run, compose file paths).
ROOT = os.environ.get("PREP_HA_STANDIN_ROOT", "")


def host(path: str) -> Path:
    """A host path as seen by the stand-ins (prefixed by ROOT in tests)."""
    return Path(ROOT + path)


CONTAINERS = host("/var/lib/docker/containers")
LAYERS = host("/var/lib/docker/overlay2")
RUN_DIR = host("/run/prep-ha-lab")
READY = RUN_DIR / "dockerd.ready"
ICON_NODE = host("/usr/lib/prep-ha-lab/icon_node.py")
PYTHON = "/usr/bin/python3"
DAEMON_JSON = host("/etc/docker/daemon.json")
STOP_TIMEOUT = 10  # seconds, `docker stop`'s and compose's default before SIGKILL
# The one image the stand-in stands in for; any other reference would not be this process.
IMAGE = re.compile(r"(docker\.io/)?iconloop/icon2-node:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# daemon.json keys the stand-in implements (cloud-init/files/docker-daemon.json).
LOG_OPTS = {"max-size", "max-file"}


class Refused(Exception):
    """Input the stand-in does not understand; the message names the key or option."""


def check_image(ref: str) -> None:
    if not IMAGE.fullmatch(ref):
        raise Refused(f"image {ref!r}: the lab stands in only for iconloop/icon2-node:<tag>")


def check_daemon_json() -> None:
    """dockerd refuses to start on a daemon.json it does not understand; so does the stand-in."""
    if not DAEMON_JSON.exists():
        return
    try:
        config = json.loads(DAEMON_JSON.read_text())
    except ValueError as e:
        raise Refused(f"{DAEMON_JSON}: not JSON: {e}") from None
    for key, value in config.items():
        if key == "log-driver" and value == "local":
            continue
        if key == "log-opts" and isinstance(value, dict) and set(value) <= LOG_OPTS:
            continue
        raise Refused(f"{DAEMON_JSON}: {key!r} is not implemented by the lab's docker stand-in")


def require_daemon() -> None:
    if not READY.exists():
        raise Refused("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                      "Is the docker daemon running? (lab: docker.service is not active)")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@contextmanager
def _state_lock() -> Iterator[None]:
    """Serialises `up` recording an exit with `down` deleting the record, so that neither
    resurrects nor half-deletes a container directory."""
    CONTAINERS.mkdir(parents=True, exist_ok=True)
    fd = os.open(CONTAINERS, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.chmod(0o600)
    tmp.replace(path)


@dataclass(frozen=True)
class Container:
    dir: Path

    @property
    def id(self) -> str:
        return self.dir.name

    @property
    def config(self) -> dict:
        return json.loads((self.dir / "config.v2.json").read_text())

    @property
    def name(self) -> str:
        return self.config["Name"].lstrip("/")

    @property
    def pidfile(self) -> Path:
        return RUN_DIR / f"{self.id}.pid"

    @property
    def upper_dir(self) -> Path:
        return LAYERS / self.id / "diff"

    def running_pid(self) -> int | None:
        """The container's process if it is alive (not a zombie, not a recycled pid)."""
        try:
            pid = int(self.pidfile.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if str(ICON_NODE).encode() in cmdline else None

    def set_state(self, **state: object) -> None:
        """Update State in config.v2.json; a no-op once the container was removed."""
        with _state_lock():
            if not self.dir.exists():
                return
            config = self.config
            config["State"].update(state)
            _write_json(self.dir / "config.v2.json", config)


def containers() -> list[Container]:
    if not CONTAINERS.is_dir():
        return []
    return [Container(d) for d in sorted(CONTAINERS.iterdir())
            if (d / "config.v2.json").is_file()]


def find(name: str) -> Container | None:
    """By name or id prefix, like the docker CLI."""
    for c in containers():
        if name in (c.name, c.id) or (len(name) >= 4 and c.id.startswith(name)):
            return c
    return None


def create(name: str, image: str, env: dict[str, str], mounts: list[tuple[str, str, bool]],
           ports: list[int], labels: dict[str, str], args: list[str]) -> Container:
    """Record a container as Docker does on `create`; mounts are (host, container, read-only)."""
    cid = secrets.token_hex(32)
    cdir = CONTAINERS / cid
    cdir.mkdir(parents=True, mode=0o710)
    upper = LAYERS / cid / "diff"
    upper.mkdir(parents=True)
    config = {
        "ID": cid, "Created": now(), "Path": PYTHON, "Args": args, "Name": f"/{name}",
        "Driver": "overlay2",
        "Config": {"Hostname": cid[:12], "Env": [f"{k}={v}" for k, v in env.items()],
                   "Image": image, "Labels": labels,
                   "ExposedPorts": {f"{p}/tcp": {} for p in ports}},
        "State": {"Running": False, "Pid": 0, "ExitCode": 0, "StartedAt": "",
                  "FinishedAt": ""},
        "MountPoints": {dst: {"Source": src, "Destination": dst, "RW": not ro, "Type": "bind"}
                        for src, dst, ro in mounts},
        # Not in Docker's config.v2.json (the layer store knows it); `docker inspect` shows it.
        "GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": str(upper)}},
    }
    hostconfig = {
        "Binds": [f"{src}:{dst}" + (":ro" if ro else "") for src, dst, ro in mounts],
        "PortBindings": {f"{p}/tcp": [{"HostIp": "", "HostPort": str(p)}] for p in ports},
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "LogConfig": {"Type": "local", "Config": {}},
    }
    _write_json(cdir / "config.v2.json", config)
    _write_json(cdir / "hostconfig.json", hostconfig)
    (cdir / "local-logs").mkdir()
    return Container(cdir)


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie waits for `up` to reap it


def stop(container: Container, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM, then SIGKILL after timeout, as `docker stop`; False if it was not running."""
    pid = container.running_pid()
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.05)
    return True


def remove(container: Container) -> None:
    """`docker rm -f`: stop, then delete the record and the writable layer."""
    stop(container)
    with _state_lock():
        container.pidfile.unlink(missing_ok=True)
        shutil.rmtree(container.dir, ignore_errors=True)
        shutil.rmtree(LAYERS / container.id, ignore_errors=True)


def main(argv: list[str]) -> int:
    """docker.service: `start` checks daemon.json and marks the daemon ready; `stop` unmarks."""
    try:
        if argv == ["start"]:
            check_daemon_json()
            CONTAINERS.mkdir(parents=True, exist_ok=True)
            RUN_DIR.mkdir(parents=True, exist_ok=True)
            READY.touch()
        elif argv == ["stop"]:
            READY.unlink(missing_ok=True)
        else:
            raise Refused(f"usage: dockerd.py start|stop, not {' '.join(argv)!r}")
    except Refused as e:
        print(f"dockerd (lab stand-in): error: {e}", file=sys.stderr)
        return 1
    print(f"dockerd (lab stand-in): {argv[0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
