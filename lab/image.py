"""The lab node's image: a cached Debian rootfs of the nodes' release (prep_ha/release.py)
shaped like the official EC2 AMI, the partial Debian mirror (lab/mirror.py) its user-data
installs packages from, and the nodes' tools (prep_ha/nodetools.py).

The rootfs is debootstrap minbase plus the package classes of Debian's EC2 image of that
release, installed without Recommends, as debian-cloud-images builds it. Nodes mount it
read-only as the lower layer of an overlayfs, so it is only ever written while it is being
built. The tools are the user-data packages installed into an overlay of the rootfs from the
mirror, as a node's first boot installs them: the offline tests run the nodes' pcs,
Pacemaker and cloud-init from there.

Cache (PREP_HA_LAB_CACHE or /var/cache/prep-ha-lab), under image/:
  rootfs-<key>-<stamp>/{rootfs/,manifest.json}   key: ROOTFS_VERSION + packages + files
  mirror-<key>-<stamp>/{mirror/,manifest.json}   key: MIRROR_VERSION + rootfs build + user-data
                                                  packages + lab .debs (content, not mtimes)
  tools-<key>-<stamp>/{tools/,manifest.json}     key: the mirror build; tools/ is an overlay
                                                  upper layer on the rootfs
and node-tools.json beside image/, naming the current tools' layers.
A build is made in image/.tmp-* and renamed into place only when complete, under image/.lock.
A rootfs is reused for ROOTFS_MAX_AGE; a mirror (and its tools) until lab.mirror.mirror_expiry.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab.standins.packages import build_debs
from prep_ha.nodetools import POINTER, cache_dir, os_release
from prep_ha.payload import Payload
from prep_ha.release import DEBIAN_CODENAME
from prep_ha.userdata import ArbiterSettings, NodeSettings, arbiter_payload, node_payload

Echo = Callable[[str], object]

MIRROR_HOST = "deb.debian.org"
ARCHIVE = f"http://{MIRROR_HOST}"
SUITE = DEBIAN_CODENAME
ARCH = "amd64"
# (archive, suite) of each line of the image's sources.list.
SUITES: tuple[tuple[str, str], ...] = (
    ("debian", SUITE),
    ("debian", f"{SUITE}-updates"),
    ("debian-security", f"{SUITE}-security"),
)
LAB_REPO = "prep-ha-lab"

# Bump when the recipe changes in a way the cache key cannot see (code, not data).
ROOTFS_VERSION = 2
ROOTFS_MAX_AGE = dt.timedelta(days=30)
TOOLS_VERSION = 1

# The package classes of Debian's trixie EC2 image (debian-cloud-images config_space/13,
# vendor ec2: SYSTEM_BOOT, TIME_SYSTEMD, CLOUD, EC2, EXTRAS). Left out: the kernel, grub,
# dosfstools, cloud-initramfs-growroot and apparmor (a container boots none of them; apparmor
# would load profiles into the host's kernel), and the man pages / editors / bash-completion
# of EXTRAS. The DHCP client (dhcpcd-base) comes as cloud-init's dependency, as on the AMI.
IMAGE_PACKAGES: dict[str, tuple[str, ...]] = {
    "SYSTEM_BOOT": ("sudo", "e2fsprogs", "libpam-systemd", "systemd-resolved", "libnss-resolve",
                    "libnss-myhostname", "netplan.io", "polkitd", "unattended-upgrades", "zstd",
                    "apt-utils", "init", "iptables", "iputils-ping", "linux-sysctl-defaults",
                    "less", "nano", "netbase", "vim-tiny", "whiptail"),
    "TIME_SYSTEMD": ("systemd-timesyncd",),
    "CLOUD": ("openssh-server", "ssh-import-id"),
    "EC2": ("awscli", "cloud-init", "cloud-guest-utils", "amazon-ec2-utils"),
    "EXTRAS": ("apt-listchanges", "bind9-host", "socat", "pciutils", "reportbug", "traceroute",
               "psmisc", "tcpdump", "ca-certificates", "curl", "ethtool", "uuid-runtime",
               "screen", "xz-utils"),
    # On the real image the kernel, initramfs or FAI pull these in, or the lab relies on
    # them; named so that --no-install-recommends cannot drop them.
    "BASE": ("systemd-sysv", "dbus", "udev", "iproute2", "python3-yaml", "procps", "kmod",
             "locales"),
}

APT_SOURCES = "".join(f"deb {ARCHIVE}/{archive} {suite} main\n" for archive, suite in SUITES)

# debian-cloud-images' 01_debian_cloud.cfg for EC2, duplicate keys included, without its
# mirror settings (they feed deb822 mirror+file:// sources; this image has sources.list).
DEBIAN_CLOUD_CFG = """\
system_info:
  default_user:
    name: admin
    sudo: ALL=(ALL) NOPASSWD:ALL
    shell: /bin/bash
    lock_passwd: True
    gecos: Debian
    groups: [adm, audio, cdrom, dialout, dip, floppy, plugdev, sudo, video]
    sudo: ["ALL=(ALL) NOPASSWD:ALL"]
    shell: /bin/bash
"""

# The only lab substitutions in the image (listed in the README).
LAB_CLOUD_CFG_PATH = "etc/cloud/cloud.cfg.d/05_prep_ha_lab.cfg"
LAB_CLOUD_CFG = """\
# prep-ha lab substitution: on EC2, ds-identify and the Ec2 datasource recognise the platform
# from DMI (/sys/class/dmi/id: "Amazon EC2"). Inside a container both ignore DMI, so the lab
# names the datasource and lets it run without that platform check; the metadata service it
# then reads at 169.254.169.254 is the lab's.
datasource_list: [ Ec2, None ]
datasource:
  Ec2:
    strict_id: false
"""
LAB_APT_LIST_PATH = "etc/apt/sources.list.d/prep-ha-lab.list"
LAB_APT_LIST = f"""\
# prep-ha lab substitution: the docker.io and docker-compose stand-ins (lab/standins) come
# from this repository; their versions carry an epoch so apt prefers them to Debian's.
deb [trusted=yes] {ARCHIVE}/{LAB_REPO} ./
"""

ETC_HOSTS = """\
127.0.0.1\tlocalhost
::1\t\tlocalhost ip6-localhost ip6-loopback
ff02::1\t\tip6-allnodes
ff02::2\t\tip6-allrouters
"""

CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
# Package scripts must not start daemons in a chroot.
POLICY_RC_D = "#!/bin/sh\n# prep-ha lab image build: start no daemons in the chroot\nexit 101\n"


class ImageError(RuntimeError):
    """The image or mirror could not be built or verified."""


@dataclass(frozen=True)
class Image:
    """A usable (complete, unexpired) rootfs and the mirror built for it."""

    rootfs: Path  # the root directory: use as an overlayfs lowerdir, never write to it
    mirror: Path  # serve with lab.mirror.serve_mirror()
    tools: Path  # the user-data packages installed: an overlay upper layer on rootfs
    rootfs_manifest: Path
    mirror_manifest: Path
    packages: tuple[str, ...]  # the user-data packages the mirror serves
    apt_conf: tuple[tuple[str, str], ...]  # the user-data's apt.conf.d files, name and text
    expires: dt.datetime  # rebuild the mirror after this (UTC)

    def manifest(self) -> dict:
        return {"rootfs": json.loads(self.rootfs_manifest.read_text()),
                "mirror": json.loads(self.mirror_manifest.read_text())}


def _sample_payloads() -> tuple[Payload, Payload]:
    """A node's and the arbiter's payload: their packages and apt settings are the same for
    every instance."""
    node = NodeSettings(
        node_name="lab-1", region="eu-central-1", icon_network="LisbonNet", icon_image="icon",
        data_volume_id="vol-1", heartbeat_ip="10.0.2.1", heartbeat_cidr="10.0.2.0/24",
        management_ip="10.0.3.1", management_cidr="10.0.3.0/24", peer_vip="10.0.1.2",
        citizen_vip="10.0.1.1", p2p_advertise="10.0.1.1:7100", keystore_secret_id="k",
        keystore_password_secret_id="p", hacluster_secret_id="h")
    arbiter = ArbiterSettings(arbiter_name="lab-arbiter", region="eu-central-1",
                              hacluster_secret_id="h")
    return node_payload(node), arbiter_payload(arbiter)


def user_data_packages() -> list[str]:
    """The packages the instances' payloads install (nodes and arbiter)."""
    return sorted({p for payload in _sample_payloads() for p in payload.packages})


def user_data_apt_conf() -> dict[str, str]:
    """apt.conf.d file name -> content, as the payloads put them in place before they install
    their packages (they decide what apt installs)."""
    prefix = "/etc/apt/apt.conf.d/"
    return {f.path[len(prefix):]: f.content for payload in _sample_payloads()
            for f in payload.files if f.path.startswith(prefix)}


# --------------------------------------------------------------------------- chroot


def run(argv: Sequence[str | os.PathLike], *, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[bytes]:
    """argv with its output captured; ImageError with the output's tail if it fails."""
    proc = subprocess.run([str(a) for a in argv], capture_output=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).decode(errors="replace")[-4000:]
        raise ImageError(f"{shlex.join(map(str, argv))[:300]} exited {proc.returncode}:\n{tail}")
    return proc


@contextmanager
def timed(timings: dict, name: str) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    timings[name] = round(time.monotonic() - t0, 1)


@dataclass(frozen=True)
class Overlay:
    """A writable overlay of a read-only tree, for chroot_command."""

    lower: Path
    state: Path  # holds upper/, work/, merged/

    @property
    def upper(self) -> Path:
        return self.state / "upper"


def chroot_command(root: Path | Overlay, argv: Sequence[str], *,
                   binds: Iterable[tuple[Path, str]] = (), hosts: str | None = None) -> list[str]:
    """argv chrooted into root in a private mount namespace with /proc, /sys (ro), /dev, and
    fresh /run and /tmp; mounts made there (an Overlay too) vanish with the command. DNS is
    the host's, copied to where the image's /etc/resolv.conf points; `hosts` replaces
    /etc/hosts."""
    q = shlex.quote
    script = ["set -e"]
    target = root
    if isinstance(root, Overlay):
        for sub in ("upper", "work", "merged"):
            (root.state / sub).mkdir(parents=True, exist_ok=True)
        target = root.state / "merged"
        script.append(f"mount -t overlay overlay -o lowerdir={q(str(root.lower))},"
                      f"upperdir={q(str(root.upper))},workdir={q(str(root.state / 'work'))} "
                      f"{q(str(target))}")
    t = q(str(target))
    script += [
        f"mount -t proc proc {t}/proc",
        f"mount -t sysfs -o ro sysfs {t}/sys",
        f"mount --rbind /dev {t}/dev",
        f"mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs {t}/run",
        f"mkdir -p {t}/run/systemd/resolve {t}/run/lock",
        f"if [ -e /etc/resolv.conf ]; then cp -L /etc/resolv.conf {t}/run/systemd/resolve/"
        f"resolv.conf; cp -L /etc/resolv.conf {t}/run/systemd/resolve/stub-resolv.conf; fi",
        f"mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs {t}/tmp",
    ]
    for src, dst in binds:
        script += [f"mkdir -p {t}{q(dst)}", f"mount --bind {q(str(src))} {t}{q(dst)}"]
    if hosts is not None:
        script += [f"printf %s {q(hosts)} > {t}/run/prep-ha-lab-hosts",
                   f"mount --bind {t}/run/prep-ha-lab-hosts {t}/etc/hosts"]
    script.append(f'exec chroot {t} "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--fork", "--",
            "/bin/sh", "-c", "\n".join(script), "sh", *argv]


def in_root(root: Path | Overlay, argv: Sequence[str], *,
            binds: Iterable[tuple[Path, str]] = ()) -> subprocess.CompletedProcess[bytes]:
    """run() argv chrooted into root (see chroot_command)."""
    return run(chroot_command(root, argv, binds=binds), env=CHROOT_ENV)


# --------------------------------------------------------------------------- the rootfs


def _image_packages() -> list[str]:
    return sorted({p for group in IMAGE_PACKAGES.values() for p in group})


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _rootfs_key() -> str:
    return _key(ROOTFS_VERSION, SUITE, ARCH, _image_packages(), APT_SOURCES,
                DEBIAN_CLOUD_CFG, LAB_CLOUD_CFG, LAB_APT_LIST, ETC_HOSTS)


def build_rootfs(root: Path, echo: Echo = print) -> dict:
    """debootstrap + the EC2 image's packages and settings into root; returns its manifest."""
    timings: dict[str, float] = {}
    with timed(timings, "debootstrap_s"):
        echo(f"image: debootstrap --variant=minbase {SUITE} (from {ARCHIVE}/debian)")
        run(["debootstrap", "--variant=minbase", f"--arch={ARCH}", "--components=main", SUITE,
             root, f"{ARCHIVE}/debian"])
    with timed(timings, "packages_s"):
        (root / "etc/apt/sources.list").write_text(APT_SOURCES)
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text(POLICY_RC_D)
        policy.chmod(0o755)
        packages = _image_packages()
        echo(f"image: apt-get update, dist-upgrade, install {len(packages)} packages "
             "(no Recommends)")
        in_root(root, ["apt-get", "-q", "update"])
        in_root(root, ["apt-get", "-q", "-y", "dist-upgrade"])
        in_root(root, ["apt-get", "-q", "-y", "--no-install-recommends", "install", *packages])
    with timed(timings, "configure_s"):
        _configure(root)
        query = in_root(root, ["dpkg-query", "-W", "-f", "${Package}=${Version}\n"])
        _clean(root)
    return {"suite": SUITE, "arch": ARCH, "classes": IMAGE_PACKAGES,
            "installed": query.stdout.decode().split(), "timings": timings}


def _configure(root: Path) -> None:
    # As debian-cloud-images' SYSTEM_BOOT scripts: networkd + resolved, resolv.conf from it.
    in_root(root, ["systemctl", "enable", "systemd-networkd.service",
                   "systemd-resolved.service"])
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.symlink_to("/run/systemd/resolve/resolv.conf")
    # debian-cloud-images: 01_debian_cloud.cfg (EC2), /etc/default/locale, 11-misc (sshd).
    (root / "etc/cloud/cloud.cfg.d/01_debian_cloud.cfg").write_text(DEBIAN_CLOUD_CFG)
    (root / "etc/default/locale").write_text("LANG=C.UTF-8\n")
    sshd = root / "etc/ssh/sshd_config"
    text = sshd.read_text().replace("#PasswordAuthentication yes", "PasswordAuthentication no")
    text = re.sub(r"(?m)^PermitRootLogin .*", "PermitRootLogin without-password", text)
    sshd.write_text(text + "ClientAliveInterval 120\n")
    in_root(root, ["shadowconfig", "on"])
    (root / "etc/hosts").write_text(ETC_HOSTS)
    # On EC2 the kernel starts with no hostname and systemd falls back to "localhost" until
    # cloud-init sets one; in a container an empty file would keep the host-side name instead.
    (root / "etc/hostname").write_text("localhost\n")
    for name in ("etc/hostname", "etc/hosts"):  # debootstrap copies the build host's modes
        (root / name).chmod(0o644)
    (root / LAB_CLOUD_CFG_PATH).write_text(LAB_CLOUD_CFG)
    (root / LAB_APT_LIST_PATH).write_text(LAB_APT_LIST)


def _clean(root: Path) -> None:
    """debian-cloud-images' LAST/10-cleanup: a first boot must create the machine id and SSH
    host keys, and run apt-get update before installing anything."""
    (root / "usr/sbin/policy-rc.d").unlink()
    in_root(root, ["apt-get", "clean"])
    for sub in ("dev", "proc", "run", "sys", "tmp", "var/cache/apt", "var/lib/apt/lists",
                "var/tmp", "var/lib/cloud"):
        d = root / sub
        for child in d.iterdir() if d.is_dir() else ():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
    for pattern in ("etc/ssh/ssh_host_*", "var/lib/dbus/machine-id", "var/log/alternatives.log",
                    "var/log/bootstrap.log", "var/log/dpkg.log", "var/log/apt/*",
                    "var/cache/debconf/*-old", "etc/mailname", "root/.bash_history"):
        for path in root.glob(pattern):
            path.unlink()
    for path in ("etc/machine-id", "var/lib/dpkg/available"):
        (root / path).write_text("")


# --------------------------------------------------------------------------- the cache


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:  # closing it releases the lock
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _builds(images: Path, kind: str, key: str = "*") -> list[tuple[Path, dict]]:
    """(directory, manifest) of the complete builds of a kind, newest first."""
    found = []
    for d in images.glob(f"{kind}-{key}-*"):
        try:  # an interrupted prune can leave a build without its manifest
            found.append((d, json.loads((d / "manifest.json").read_text())))
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda x: x[1]["built"], reverse=True)


def _build(images: Path, kind: str, key: str, now: dt.datetime, echo: Echo,
           build: Callable[[Path], dict]) -> tuple[Path, dict]:
    """build(tmp) makes tmp/<kind>/ and returns its manifest; tmp gets its final name only
    once complete, so _builds never sees a partial build."""
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{kind}-", dir=images))
    t0 = time.monotonic()
    manifest = build(tmp)
    size = int(run(["du", "-sB1", tmp / kind]).stdout.split()[0])  # hard links counted once
    manifest.update(key=key, built=now.isoformat(), size_bytes=size,
                    build_s=round(time.monotonic() - t0, 1))
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    final = images / f"{kind}-{key}-{now.strftime('%Y%m%dT%H%M%SZ')}"
    tmp.chmod(0o755)
    tmp.rename(final)
    expires = f", expires {manifest['expires']}" if "expires" in manifest else ""
    echo(f"image: {kind} {final.name}: {manifest['size_bytes'] / 1e6:.0f} MB in "
         f"{manifest['build_s']:.0f} s{expires}")
    return final, manifest


def _mounted_paths() -> set[str]:
    """Every overlay lowerdir and mount point in any mount namespace on the host."""
    namespaces, paths = set(), set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if (ns := os.readlink(f"/proc/{pid}/ns/mnt")) in namespaces:
                continue
            namespaces.add(ns)
            text = Path(f"/proc/{pid}/mountinfo").read_text()
        except OSError:  # the process exited
            continue
        for line in text.splitlines():
            # "<id> <parent> <dev> <root> <mount point> ... - <fstype> <source> <options>"
            paths.add(line.split()[4])
            for lower in re.findall(r"lowerdir=([^,\s]+)", line):
                paths.update(lower.split(":"))
    return paths


def _prune(images: Path, keep: set[Path], echo: Echo) -> None:
    """Remove superseded builds, except the newest superseded mirror (a running lab may still
    serve it) and any rootfs or tools a node or a tool run still mounts."""
    for tmp in images.glob(".tmp-*"):  # under the lock, any leftover is from a dead build
        shutil.rmtree(tmp, ignore_errors=True)
    superseded = [d for d, _ in _builds(images, "mirror") if d not in keep][1:]
    superseded += [d for kind in ("rootfs", "tools") for d, _ in _builds(images, kind)
                   if d not in keep]
    mounted = _mounted_paths()
    for d in superseded:
        if any(p.startswith(str(d)) for p in mounted):
            echo(f"image: keeping superseded {d.name}: still mounted")
        else:
            echo(f"image: removing superseded {d.name}")
            shutil.rmtree(d)


def ensure_image(cache: Path | None = None, *, lab_debs: Sequence[Path] | None = None,
                 packages: Sequence[str] | None = None, echo: Echo = print) -> Image:
    """The cached rootfs, mirror and tools, (re)built first if missing, outdated or expired;
    node-tools.json then names these tools.

    lab_debs: the stand-in .debs for the prep-ha-lab repo (default: lab.standins builds them).
    packages: what the mirror must serve (default: the product user-data's `packages:`).
    """
    from lab import mirror  # not at the top: lab.mirror imports this module

    top = cache or cache_dir()
    images = top / "image"
    images.mkdir(parents=True, exist_ok=True)
    packages = list(packages) if packages is not None else user_data_packages()
    apt_conf = user_data_apt_conf()
    with _locked(images / ".lock"):
        if lab_debs is None:
            shutil.rmtree(images / "standins", ignore_errors=True)
            echo("image: building the docker stand-in .debs")
            lab_debs = build_debs(images / "standins")
        debs = [Path(p) for p in lab_debs]
        now = dt.datetime.now(dt.UTC)
        built = False

        rkey = _rootfs_key()
        rootfs_dir = next((d for d, m in _builds(images, "rootfs", rkey)
                           if now - dt.datetime.fromisoformat(m["built"]) < ROOTFS_MAX_AGE),
                          None)
        if rootfs_dir is None:
            rootfs_dir, _ = _build(images, "rootfs", rkey, now, echo, lambda tmp: {
                **build_rootfs(tmp / "rootfs", echo), "version": ROOTFS_VERSION})
            built = True

        lab = sorted((mirror.deb_digest(p), p.name) for p in debs)
        mkey = _key(mirror.MIRROR_VERSION, rootfs_dir.name, packages, [d for d, _ in lab],
                    mirror.INDEX_FILES, SUITES, apt_conf)
        found = next(((d, m) for d, m in _builds(images, "mirror", mkey)
                      if now < dt.datetime.fromisoformat(m["expires"])), None)
        if found is None:
            old_mirrors = [d / "mirror" for d, _ in _builds(images, "mirror")]

            def make_mirror(tmp: Path) -> dict:
                manifest = mirror.build_mirror(tmp / "mirror", rootfs_dir / "rootfs",
                                               tmp / "work", packages, apt_conf, debs,
                                               old_mirrors, echo)
                shutil.rmtree(tmp / "work")
                expires = mirror.mirror_expiry(now, manifest["indexes"])
                return {**manifest, "version": mirror.MIRROR_VERSION, "rootfs": rootfs_dir.name,
                        "lab_debs_digest": lab, "expires": expires.isoformat()}

            found = _build(images, "mirror", mkey, now, echo, make_mirror)
            built = True
        mirror_dir, manifest = found

        tkey = _key(TOOLS_VERSION, mirror_dir.name)
        tools_dir = next((d for d, _ in _builds(images, "tools", tkey)), None)
        if tools_dir is None:
            def make_tools(tmp: Path) -> dict:
                result = mirror.install_offline(rootfs_dir / "rootfs", mirror_dir / "mirror",
                                                packages, apt_conf, tmp / "work", echo)
                (tmp / "work/node/upper/usr/sbin/policy-rc.d").unlink()
                (tmp / "work/node/upper").rename(tmp / "tools")
                shutil.rmtree(tmp / "work")
                return {"version": TOOLS_VERSION, "mirror": mirror_dir.name,
                        "installed": result["status"]}

            tools_dir, _ = _build(images, "tools", tkey, now, echo, make_tools)
            built = True
        _write_pointer(top, tools_dir / "tools", rootfs_dir / "rootfs")
        if built:
            _prune(images, {rootfs_dir, mirror_dir, tools_dir}, echo)
        return Image(rootfs=rootfs_dir / "rootfs", mirror=mirror_dir / "mirror",
                     tools=tools_dir / "tools",
                     rootfs_manifest=rootfs_dir / "manifest.json",
                     mirror_manifest=mirror_dir / "manifest.json", packages=tuple(packages),
                     apt_conf=tuple(sorted(apt_conf.items())),
                     expires=dt.datetime.fromisoformat(manifest["expires"]))


def _write_pointer(top: Path, tools: Path, rootfs: Path) -> None:
    """node-tools.json: where prep_ha.nodetools finds the nodes' tools (written atomically)."""
    doc = {"release": os_release(rootfs)["VERSION_ID"], "layers": [str(tools), str(rootfs)]}
    tmp = top / f".{POINTER}.tmp"
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.rename(top / POINTER)
