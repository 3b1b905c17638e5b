"""The node's software as one versioned payload: every file an instance runs besides Debian,
the packages it needs and the steps of its first boot, in one archive named by its digest.

The program renders one payload per instance (prep_ha/userdata.py) and stores it in the
stack's S3 bucket (components/payload.py); the instance's tag names the digest it should run,
its user-data only fetches and checks it (cloud-init/files/prep-ha-boot) before the payload's
installer (cloud-init/files/prep-ha-payload) takes over, and `pulumi up` rolls a new digest
through the pair (prep_ha/ops/roll.py). Plain data, no Pulumi types:
the same files always give the same bytes, so the same digest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field

# The instance tag naming the payload an instance runs (read through the instance metadata).
TAG = "prep-ha:payload"
KEY_PREFIX = "payload/"
# How the node's installer calls apt (as cloud-init did: keep the image's config files, no
# fsync per package; and wait for apt-daily or unattended-upgrades rather than fail on their
# lock); what it installs is decided by the payload's apt.conf.d files too.
APT_GET = ("apt-get", "--option=Dpkg::Options::=--force-confold",
           "--option=Dpkg::options::=--force-unsafe-io", "--option=DPkg::Lock::Timeout=600",
           "--assume-yes", "--quiet")

# What installing a changed file takes (the node's prep-ha-payload acts on it, the roll plans
# around it):
#   use         read at each use: written, nothing else
#   reload      a systemd unit or drop-in read when its unit next starts: daemon-reload
#   restart     the `units` restart (none of them is the peer's, the citizen's or the cluster's)
#   peer, ctz   that role's container or unit reads it when it starts and stops: written only
#               while the role is stopped on that node
#   node        the node's network or container runtime: the node leaves the cluster while
#               it changes, and the `units` restart
#   first-boot  written at first boot only; afterwards it belongs to the roll (the image)
EFFECTS = ("use", "reload", "restart", "peer", "ctz", "node", "first-boot")


@dataclass(frozen=True)
class PayloadFile:
    path: str
    mode: str  # octal, e.g. "0755"
    content: str
    effect: str
    units: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.effect not in EFFECTS:
            raise ValueError(f"{self.path}: effect {self.effect!r} is not one of {EFFECTS}")
        if self.units and self.effect not in ("restart", "node"):
            raise ValueError(f"{self.path}: only restart and node effects name units")
        if self.effect == "restart" and not self.units:
            raise ValueError(f"{self.path}: a restart effect names the units to restart")


@dataclass(frozen=True)
class Payload:
    files: tuple[PayloadFile, ...]
    packages: tuple[str, ...]
    # argv lists the first boot runs after the files and packages are in place.
    first_boot: tuple[tuple[str, ...], ...] = field(default=())

    def manifest(self) -> dict:
        return {"format": 1,
                "files": [{"path": f.path, "mode": f.mode, "effect": f.effect,
                           "units": list(f.units)} for f in self.files],
                "packages": list(self.packages),
                "first_boot": [list(argv) for argv in self.first_boot]}

    def archive(self) -> bytes:
        """A tar.gz whose bytes depend on the payload only: sorted members, no times, owners
        or modes (the manifest carries the modes the installer sets)."""
        members = [("manifest.json", json.dumps(self.manifest(), indent=1).encode() + b"\n")]
        members += sorted(("files" + f.path, f.content.encode()) for f in self.files)
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
        return gzip.compress(raw.getvalue(), mtime=0)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.archive()).hexdigest()

    def file(self, path: str) -> PayloadFile:
        return next(f for f in self.files if f.path == path)

    @classmethod
    def from_archive(cls, data: bytes) -> Payload:
        """The payload an archive holds (archive() of the result gives the same bytes)."""
        manifest, contents = read_archive(data)
        return cls(
            files=tuple(PayloadFile(f["path"], f["mode"], contents[f["path"]].decode(),
                                    f["effect"], tuple(f["units"]))
                        for f in manifest["files"]),
            packages=tuple(manifest["packages"]),
            first_boot=tuple(tuple(argv) for argv in manifest["first_boot"]))


def object_key(digest: str) -> str:
    return f"{KEY_PREFIX}{digest}.tar.gz"


def read_archive(data: bytes) -> tuple[dict, dict[str, bytes]]:
    """(manifest, path -> content) of an archive, as the node's installer reads it."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        contents = {f["path"]: tar.extractfile("files" + f["path"]).read()
                    for f in manifest["files"]}
    return manifest, contents
