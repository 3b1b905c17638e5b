"""Builds the lab repo's `docker.io` and `docker-compose` packages, which install the stand-ins.

Epoch 99 makes apt prefer them to Debian 13's docker.io (26.1.5) and docker-compose
(2.26.1) when the node's cloud-init installs the product's `packages:`. The output is
byte-for-byte reproducible: fixed modes, mtimes, owner and SOURCE_DATE_EPOCH.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSION = "99:0.lab1"
EPOCH = 1704067200  # 2024-01-01T00:00:00Z, every file's mtime
LIB = "usr/lib/prep-ha-lab"

# deb-systemd-helper/-invoke as debhelper's dh_installsystemd postinst does, including its
# `|| true` on start: like Debian's docker.io, a daemon that fails to start does not fail
# the install (the product's units then fail on Requires=docker.service instead).
POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ] || [ "$1" = abort-upgrade ]; then
    deb-systemd-helper unmask docker.service >/dev/null || true
    if deb-systemd-helper --quiet was-enabled docker.service; then
        deb-systemd-helper enable docker.service >/dev/null || true
    else
        deb-systemd-helper update-state docker.service >/dev/null || true
    fi
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        deb-systemd-invoke start docker.service >/dev/null || true
    fi
fi
"""

# name -> (Depends, description, [(source in lab/standins, path in package, mode)])
PACKAGES: dict[str, tuple[str, str, list[tuple[str, str, int]]]] = {
    "docker.io": ("python3", "Docker engine stand-in (no containers)", [
        ("docker", "usr/bin/docker", 0o755),
        ("dockerd.py", f"{LIB}/dockerd.py", 0o644),
        ("icon_node.py", f"{LIB}/icon_node.py", 0o644),
        ("docker.service", "lib/systemd/system/docker.service", 0o644),
    ]),
    "docker-compose": (f"docker.io (= {VERSION}), python3, python3-yaml",
                       "docker-compose stand-in (runs the product's compose files)", [
        ("docker-compose", "usr/bin/docker-compose", 0o755),
    ]),
}


def _control(name: str, depends: str, description: str) -> str:
    return (f"Package: {name}\nVersion: {VERSION}\nArchitecture: all\n"
            "Maintainer: icon-prep-ha lab <lab@prep-ha.invalid>\n"
            f"Depends: {depends}\nSection: admin\nPriority: optional\n"
            f"Description: prep-ha lab {description}\n"
            " Lab only: stands in for the real package on the lab's nodes, which cannot\n"
            " run containers. See lab/standins in icon-prep-ha.\n")


def _stage(tree: Path, name: str) -> None:
    depends, description, files = PACKAGES[name]
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(_control(name, depends, description))
    if name == "docker.io":
        (tree / "DEBIAN" / "postinst").write_text(POSTINST)
        (tree / "DEBIAN" / "postinst").chmod(0o755)
    for source, dest, mode in files:
        target = tree / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((HERE / source).read_bytes())
        target.chmod(mode)
    for path in [tree, *tree.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
        os.utime(path, (EPOCH, EPOCH))


def build_debs(out_dir: Path) -> list[Path]:
    """Build both packages into out_dir; returns the .deb paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)}
    debs = []
    for name in PACKAGES:
        deb = out_dir / f"{name}_{VERSION.split(':', 1)[1]}_all.deb"
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp) / name
            _stage(tree, name)
            built = subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build",
                                    str(tree), str(deb)], env=env, capture_output=True, text=True)
        if built.returncode != 0:
            raise RuntimeError(f"dpkg-deb --build {name} failed: {built.stderr.strip()}")
        debs.append(deb)
    return debs
