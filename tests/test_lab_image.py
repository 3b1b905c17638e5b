"""The lab's node image and partial Debian mirror (lab/image.py, lab/mirror.py).

The `lab` tests build (or reuse) the cached image: the first run downloads from deb.debian.org
and takes minutes, later ones reuse the cache (PREP_HA_LAB_CACHE or /var/cache/prep-ha-lab).
They prove the mirror works the way a node uses it: apt in an overlay of the rootfs, with
deb.debian.org pointing at the mirror served on 127.0.0.1 and no network but loopback,
verifies Debian's signatures and installs the user-data packages with cloud-init's command.
Timings print with `pytest -s`.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from lab import mirror as lab_mirror
from lab.image import (
    APT_SOURCES,
    LAB_APT_LIST_PATH,
    LAB_CLOUD_CFG_PATH,
    SUITE,
    ensure_image,
    user_data_apt_conf,
    user_data_packages,
)
from lab.mirror import offline_install_check, serve_mirror
from prep_ha.nodetools import node_tools, os_release
from prep_ha.release import DEBIAN_VERSION, ami_name_pattern

SUITE_DIRS = (f"debian/dists/{SUITE}", f"debian/dists/{SUITE}-updates",
              f"debian-security/dists/{SUITE}-security")


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "building the node image needs root (debootstrap, chroot, mount namespaces)"
    for tool in ("debootstrap", "unshare", "chroot", "ip", "gpgv", "dpkg-deb"):
        if shutil.which(tool) is None:
            return f"building the node image needs {tool} on PATH (apt-get install debootstrap)"
    return None


def _dummy_debs(out: Path) -> list[Path]:
    """Minimal docker.io / docker-compose stand-ins, used when lab/standins is absent."""
    debs = []
    for name in ("docker.io", "docker-compose"):
        tree = out / name
        (tree / "DEBIAN").mkdir(parents=True)
        (tree / "DEBIAN/control").write_text(
            f"Package: {name}\nVersion: 99:0.test1\nArchitecture: all\n"
            "Maintainer: lab <lab@prep-ha.invalid>\nDepends: python3\n"
            "Description: test stand-in\n")
        deb = out / f"{name}_0.test1_all.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
                       check=True, capture_output=True)
        debs.append(deb)
    return debs


def _lab_debs(out: Path) -> list[Path] | None:
    try:
        import lab.standins.packages  # noqa: F401
    except ImportError:
        return _dummy_debs(out)
    return None  # ensure_image builds the real stand-ins


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if reason := _skip_reason():
        pytest.skip(reason)
    debs = _lab_debs(tmp_path_factory.mktemp("debs"))
    t0 = time.monotonic()
    img = ensure_image(lab_debs=debs)
    elapsed = time.monotonic() - t0
    manifest = img.manifest()
    print(f"\nensure_image: {elapsed:.1f} s; rootfs {manifest['rootfs']['timings']}, "
          f"{manifest['rootfs']['size_bytes'] / 1e6:.0f} MB; mirror "
          f"{manifest['mirror']['timings']}, {manifest['mirror']['size_bytes'] / 1e6:.0f} MB")
    return img, debs


# ------------------------------------------------------------------ fast, no root needed


def test_user_data_packages_come_from_the_rendered_template():
    packages = user_data_packages()
    templates = [yaml.safe_load((Path(__file__).parent.parent / "cloud-init" / name)
                                .read_text().replace("{{", "").replace("}}", ""))
                 for name in ("node.yaml", "arbiter.yaml")]
    assert packages == sorted({p for t in templates for p in t["packages"]})
    assert {"pacemaker", "docker.io", "docker-compose"} <= set(packages)
    # The nodes install without Recommends, and the mirror is resolved the same way.
    assert 'APT::Install-Recommends "false";' in user_data_apt_conf()["90prep-ha-no-recommends"]


def test_mirror_expiry_is_the_earliest_of_age_and_valid_until():
    from datetime import UTC, datetime, timedelta
    built = datetime(2026, 1, 1, tzinfo=UTC)
    no_limit = {"trixie": {"valid_until": None}}
    assert lab_mirror.mirror_expiry(built, no_limit) == built + timedelta(days=5)
    security = {**no_limit, "trixie-security": {"valid_until": "Sat, 03 Jan 2026 00:00:00 UTC"}}
    assert lab_mirror.mirror_expiry(built, security) == datetime(2026, 1, 2, tzinfo=UTC)


def test_clearsigned_body_undoes_dash_escaping():
    text = ("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Debian\n- -dash\n"
            "-----BEGIN PGP SIGNATURE-----\nxx\n-----END PGP SIGNATURE-----\n")
    assert lab_mirror._clearsigned_body(text) == "Origin: Debian\n-dash"


def test_server_serves_the_mirror_as_deb_debian_org(tmp_path):
    index = tmp_path / "debian/dists/trixie/InRelease"
    index.parent.mkdir(parents=True)
    index.write_bytes(b"signed\n")
    (tmp_path / "secret").write_text("no")
    with serve_mirror(tmp_path, "127.0.0.1", 0) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)

        def get(path: str, host: str = "deb.debian.org", **headers: str) -> tuple[int, bytes]:
            conn.request("GET", path, headers={"Host": host, **headers})
            resp = conn.getresponse()
            return resp.status, resp.read()

        # One keep-alive connection for all of these, 404s included, as apt uses it.
        assert get("/debian/dists/trixie/InRelease") == (200, b"signed\n")
        assert get("/debian/dists/trixie/../trixie/./InRelease")[0] == 200
        assert get("/debian/../secret")[0] == 404
        assert get("/debian/dists/trixie/Release")[0] == 404
        assert get("/debian/dists/trixie/InRelease", host="example.org")[0] == 404
        # apt through Acquire::http::Proxy sends the absolute form.
        assert get("http://deb.debian.org/debian/dists/trixie/InRelease")[0] == 200
        assert get("/debian/dists/trixie/InRelease",
                   **{"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"})[0] == 304
        conn.close()
        assert server.misses == ["/debian/../secret", "/debian/dists/trixie/Release",
                                 "/debian/dists/trixie/InRelease"]


# ------------------------------------------------------------------ the real image


@pytest.mark.lab
def test_cached_rerun_takes_seconds(built):
    img, debs = built
    t0 = time.monotonic()
    again = ensure_image(lab_debs=debs)
    elapsed = time.monotonic() - t0
    print(f"\ncached ensure_image: {elapsed:.2f} s")
    assert (again.rootfs, again.mirror) == (img.rootfs, img.mirror)
    assert elapsed < 30


@pytest.mark.lab
def test_the_image_the_tools_and_the_ami_lookup_are_one_release(built):
    img, _ = built
    release = os_release(img.rootfs)
    assert (release["VERSION_ID"], release["VERSION_CODENAME"]) == (DEBIAN_VERSION, SUITE)
    for arch in ("x86_64", "arm64"):
        assert ami_name_pattern(arch).startswith(f"debian-{release['VERSION_ID']}-")
    tools = node_tools()
    assert tools.release == release["VERSION_ID"]
    seen = tools.run(["sh", "-c", ". /etc/os-release; echo $VERSION_ID"]).stdout.strip()
    assert seen == release["VERSION_ID"]


@pytest.mark.lab
def test_rootfs_is_shaped_like_the_debian_ec2_image(built):
    img, _ = built
    root = img.rootfs
    status = (root / "var/lib/dpkg/status").read_text().split("\n\n")
    installed = {}
    for stanza in status:
        fields = dict(line.split(": ", 1) for line in stanza.splitlines()
                      if ": " in line and not line.startswith(" "))
        if fields.get("Status") == "install ok installed":
            installed[fields["Package"]] = fields["Version"]
    assert installed["cloud-init"].startswith("25.1.")
    for package in ("netplan.io", "systemd-resolved", "libnss-resolve", "openssh-server",
                    "awscli", "sudo", "dhcpcd-base", "amazon-ec2-utils", "cloud-guest-utils",
                    "curl", "udev", "dbus", "iproute2", "python3-yaml", "systemd-sysv",
                    "linux-sysctl-defaults"):
        assert package in installed, package
    assert "ifupdown" not in installed and "isc-dhcp-client" not in installed
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert (wants / "systemd-networkd.service").is_symlink()
    assert (root / "etc/systemd/system/sysinit.target.wants/systemd-resolved.service"
            ).is_symlink() or (wants / "systemd-resolved.service").is_symlink()
    assert os.readlink(root / "etc/resolv.conf") == "/run/systemd/resolve/resolv.conf"
    cfg = yaml.safe_load((root / "etc/cloud/cloud.cfg.d/01_debian_cloud.cfg").read_text())
    assert cfg["system_info"]["default_user"]["name"] == "admin"
    for other in sorted((root / "etc/cloud/cloud.cfg.d").glob("*.cfg")):
        if other.name > "01_debian_cloud.cfg":  # nothing later overrides the user
            assert "default_user" not in (yaml.safe_load(other.read_text()) or {}).get(
                "system_info", {}), other
    lab_cfg = yaml.safe_load((root / LAB_CLOUD_CFG_PATH).read_text())
    assert lab_cfg == {"datasource_list": ["Ec2", "None"],
                       "datasource": {"Ec2": {"strict_id": False}}}
    assert [ln for ln in (root / LAB_APT_LIST_PATH).read_text().splitlines()
            if not ln.startswith("#")] == ["deb [trusted=yes] http://deb.debian.org/prep-ha-lab ./"]
    assert (root / "etc/apt/sources.list").read_text() == APT_SOURCES
    assert sorted(p.name for p in (root / "etc/apt/sources.list.d").iterdir()) == \
        ["prep-ha-lab.list"]
    assert (root / "etc/machine-id").read_text() == ""
    assert not list((root / "etc/ssh").glob("ssh_host_*"))
    assert (root / "etc/hostname").read_text() == "localhost\n"
    assert not (root / "var/lib/cloud").exists() or not any((root / "var/lib/cloud").iterdir())
    assert list((root / "var/lib/apt/lists").iterdir()) == [root / "var/lib/apt/lists/partial"]
    assert not list((root / "var/cache/apt").iterdir())
    # The lab injects its per-run CA at node creation, never into the cached image.
    assert not list((root / "usr/local/share/ca-certificates").iterdir())
    assert not (root / "usr/sbin/policy-rc.d").exists()


@pytest.mark.lab
def test_mirror_holds_debians_signed_indexes_unchanged(built):
    img, _ = built
    keyring = img.rootfs / "usr/share/keyrings/debian-archive-keyring.gpg"
    for suite in SUITE_DIRS:
        dists = img.mirror / suite
        subprocess.run(["gpgv", "--keyring", str(keyring), str(dists / "InRelease")],
                       check=True, capture_output=True)
        release_text = (dists / "Release").read_text()
        assert lab_mirror._clearsigned_body((dists / "InRelease").read_text()).rstrip("\n") \
            == release_text.rstrip("\n")
        # Mirrored only when it verifies (deb.debian.org has served stale ones).
        if (dists / "Release.gpg").exists():
            subprocess.run(["gpgv", "--keyring", str(keyring), str(dists / "Release.gpg"),
                            str(dists / "Release")], check=True, capture_output=True)
        _, sha256 = lab_mirror._parse_release(release_text)
        for index in ("main/binary-amd64/Packages.xz", "main/i18n/Translation-en.xz"):
            digest, size = sha256[index]
            data = (dists / index).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (size, digest)
            by_hash = dists / Path(index).parent / "by-hash/SHA256" / digest
            assert by_hash.read_bytes() == data


@pytest.mark.lab
def test_mirror_pool_is_what_apt_needs_and_no_debian_docker(built):
    img, _ = built
    manifest = json.loads(img.mirror_manifest.read_text())
    assert manifest["debs"], "the rootfs already had everything?"
    for path in manifest["debs"]:
        assert (img.mirror / path.lstrip("/")).is_file(), path
        name = Path(path).name
        assert not name.startswith(("docker.io_", "docker-compose_")), path
    pool_files = {"/" + str(p.relative_to(img.mirror)) for p in img.mirror.glob("*/pool/**/*.deb")}
    assert pool_files == set(manifest["debs"])
    lab_repo = img.mirror / "prep-ha-lab"
    assert {"Packages", "Packages.gz", "Release"} <= {p.name for p in lab_repo.iterdir()}
    assert {Path(p).name.split("_")[0] for p in manifest["lab_debs"]} == \
        {"docker.io", "docker-compose"}
    assert manifest["packages"] == list(img.packages) == user_data_packages()


@pytest.mark.lab
def test_user_data_installs_offline_from_the_mirror(built, tmp_path):
    img, _ = built
    try:
        result = offline_install_check(img, tmp_path / "check")
    finally:  # the overlay's upper layer holds ~500 MB of installed packages
        shutil.rmtree(tmp_path / "check", ignore_errors=True)
    print(f"\noffline apt-get update {result['update_s']} s, install {result['install_s']} s, "
          f"{result['requests']} requests")
    assert result["update_rc"] == 0 and result["install_rc"] == 0
    # Signatures verified, every index found: apt says nothing but Get/Ign/Hit lines.
    problems = [ln for ln in result["update_log"].splitlines()
                if ln.startswith(("W:", "E:", "Err:"))]
    assert not problems, result["update_log"]
    # apt tries InRelease and Release.gpg of the unsigned flat lab repo, nothing else misses.
    assert result["misses"] == ["/prep-ha-lab/./InRelease", "/prep-ha-lab/./Release.gpg"]
    states = {line.split()[0]: line.split()[1:] for line in result["status"]}
    for package in img.packages:
        assert states[package][-1] == "installed", package
    for standin in ("docker.io", "docker-compose"):
        assert states[standin][0].startswith("99:"), states[standin]
    # fence_aws alone: no Recommends, so not every fence agent and a compiler with it.
    installed = img.tools / "var/lib/dpkg/info"
    assert (installed / "fence-agents-aws.list").exists()
    for heavy in ("fence-agents-all", "fence-agents-azure", "gcc", "python3-googleapi"):
        assert not (installed / f"{heavy}.list").exists(), heavy
