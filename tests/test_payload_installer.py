"""The node's payload installer (cloud-init/files/prep-ha-payload), run as root in a throwaway
root of the nodes' Debian 13 (prep_ha/nodetools.py): what it writes, what it refuses while a
service runs, what it remembers of an interrupted install, and that a payload is installed by
the installer it carries. Only systemctl is a stub (no systemd runs there): it records its
calls and answers `is-active` from $ACTIVE. The rolls around it run in the lab (drill case
payload-roll)."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest

from prep_ha.nodetools import SYSTEM_PATH
from prep_ha.payload import Payload, PayloadFile
from prep_ha.userdata import FILES, node_payload
from tests.test_userdata import sample

INSTALLER = "/usr/local/sbin/prep-ha-payload"
ALERT = "/usr/local/sbin/prep-ha-alert"
PEER_FILE = "/etc/prep-ha/peer.yml"
CTZ_FILE = "/etc/prep-ha/ctz.yml"
EXPORTER = "/etc/systemd/system/ha_cluster_exporter.service.d/prep-ha.conf"
OLD_UNIT = "/etc/systemd/system/prep-ha-old.service"
SUDOERS = "/etc/sudoers.d/prep-ha-alert"

SYSTEMCTL = """#!/bin/sh
echo "$*" >> /tmp/systemctl.log
case "$1" in
  is-active) for unit in $ACTIVE; do [ "$unit" = "$3" ] && exit 0; done; exit 3 ;;
  cat) for d in /etc/systemd/system /usr/lib/systemd/system; do
         [ -e "$d/$2" ] || [ -e "$d/$2.d" ] && exit 0
       done; exit 1 ;;
esac
"""

# Runs inside the node root: the steps in order, each with the root's state after it.
DRIVER = textwrap.dedent("""
    import json, os, shutil, subprocess, sys, tarfile
    from pathlib import Path
    src = Path(sys.argv[1])
    state = Path("/var/lib/prep-ha/payload")
    state.mkdir(parents=True)
    for archive in src.glob("*.tar.gz"):  # as fetched: the installer checks them again
        shutil.copy(archive, state)
    Path("/etc/prep-ha").mkdir(exist_ok=True)
    Path("/etc/prep-ha/payload.json").write_text('{"bucket": "b", "region": "r"}')
    seen = []
    for step in json.loads((src / "steps.json").read_text()):
        installer = step.get("installer", "/usr/local/sbin/prep-ha-payload")
        if installer == "first-boot":  # as prep-ha-boot does: the archive's own
            with tarfile.open(state / f"{step['argv'][1]}.tar.gz") as tar:
                Path("/tmp/install").write_bytes(
                    tar.extractfile("files/usr/local/sbin/prep-ha-payload").read())
            installer = "/tmp/install"
        proc = subprocess.run(["python3", installer, *step["argv"]], capture_output=True,
                              text=True, env={**os.environ, "ACTIVE": step.get("active", "")})
        log = Path("/tmp/systemctl.log")
        files = {}
        for path in src.joinpath("look").read_text().split():
            p = Path(path)
            files[path] = [p.read_text(), oct(p.stat().st_mode & 0o7777)] if p.exists() else None
        failed = Path("/var/lib/prep-ha/payload.failed")
        seen.append({"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr,
                     "systemctl": log.read_text().splitlines() if log.exists() else [],
                     "files": files, "failed": failed.read_text() if failed.exists() else "",
                     "current": (state / "current").read_text().strip()
                     if (state / "current").exists() else ""})
        log.unlink(missing_ok=True)
    print(json.dumps(seen))
""")


def _file(path: str, mode: str, content: str, effect: str, *units: str) -> PayloadFile:
    return PayloadFile(path, mode, content, effect, units)


@pytest.fixture(scope="module")
def payloads() -> dict[str, Payload]:
    """First, then a change of the peer's compose file and a script with a unit dropped; the
    same with a new installer; one whose sudoers rule is broken after a changed drop-in, and
    the fix of it."""
    installer = node_payload(sample()).file(INSTALLER)
    assert [f for f in FILES if f[1] == INSTALLER][0][3] == "use"
    first = Payload(files=(
        installer,
        _file(ALERT, "0755", "#!/bin/sh\necho v1\n", "use"),
        _file(EXPORTER, "0644", "[Service]\nEnvironment=V=1\n", "restart",
              "ha_cluster_exporter.service"),
        _file(PEER_FILE, "0644", "services: {peer: v1}\n", "peer"),
        _file(CTZ_FILE, "0644", "services: {ctz: v1}\n", "ctz"),
        _file(OLD_UNIT, "0644", "[Service]\nExecStart=/bin/true\n", "reload"),
        _file(SUDOERS, "0440", "hacluster ALL=(root) NOPASSWD: /usr/bin/true\n", "use"),
    ), packages=("python3",), first_boot=(("touch", "/var/lib/prep-ha/first-boot-ran"),))

    def changed(payload: Payload, drop: str = "", **contents: str) -> Payload:
        by_path = {getattr(_Paths, k): v for k, v in contents.items()}
        return dataclasses.replace(payload, files=tuple(
            dataclasses.replace(f, content=by_path.get(f.path, f.content))
            for f in payload.files if f.path != drop))

    second = changed(first, drop=OLD_UNIT, alert="#!/bin/sh\necho v2\n",
                     peer="services: {peer: v2}\n")
    marker = 'sys.stderr.write("the installer of the new payload\\n")\n'
    new_installer = installer.content.replace('\nif __name__ == "__main__":',
                                              f'\n{marker}\nif __name__ == "__main__":')
    assert new_installer != installer.content
    third = changed(second, installer=new_installer)
    broken = changed(second, exporter="[Service]\nEnvironment=V=2\n",
                     sudoers="hacluster ALL=(root NOPASSWD /usr/bin/true\n")
    fixed = changed(second, exporter="[Service]\nEnvironment=V=2\n")
    return {"first": first, "second": second, "third": third, "broken": broken,
            "fixed": fixed}


class _Paths:
    alert, peer, exporter, sudoers, installer = ALERT, PEER_FILE, EXPORTER, SUDOERS, INSTALLER


def run_steps(node_tools, tmp_path: Path, payloads: dict[str, Payload],
              steps: list[tuple]) -> list[dict]:
    """(argv with payload names for digests, $ACTIVE, installer) per step, in one root."""
    src, bindir = tmp_path / "src", tmp_path / "bin"
    src.mkdir()
    bindir.mkdir()
    for payload in payloads.values():
        (src / f"{payload.digest}.tar.gz").write_bytes(payload.archive())
    (src / "look").write_text(" ".join([ALERT, PEER_FILE, CTZ_FILE, EXPORTER, OLD_UNIT,
                                        SUDOERS, "/var/lib/prep-ha/first-boot-ran"]))
    (src / "steps.json").write_text(json.dumps([
        {"argv": [payloads[w].digest if w in payloads else w for w in argv], "active": active,
         **({"installer": installer} if installer else {})}
        for argv, active, installer in steps]))
    (bindir / "systemctl").write_text(SYSTEMCTL)
    (bindir / "systemctl").chmod(0o755)
    (src / "driver.py").write_text(DRIVER)
    proc = node_tools.run(["python3", str(src / "driver.py"), str(src)],
                          paths=[src, bindir], env={"PATH": f"{bindir}:{SYSTEM_PATH}"},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_first_boot_then_a_role_file_change_refused_while_the_role_runs(node_tools, tmp_path,
                                                                      payloads):
    first_boot, unchanged, plan, refused, wrong_role, installed, again = run_steps(
        node_tools, tmp_path, payloads, [
            (["install-first-boot", "first"], "", "first-boot"),
            (["plan", "first"], "", None),
            (["plan", "second"], "", None),
            (["install", "second"], "peer.service pacemaker.service", None),
            # The citizen running is no reason to hold a change of the peer's files.
            (["install", "second"], "ctz.service pacemaker.service", None),
            (["plan", "second"], "", None),
            (["install", "second"], "", None)])
    assert first_boot["rc"] == 0, first_boot["err"]
    assert first_boot["current"] == payloads["first"].digest
    assert first_boot["files"][ALERT] == ["#!/bin/sh\necho v1\n", "0o755"]
    assert first_boot["files"][SUDOERS][1] == "0o440"
    assert first_boot["files"]["/var/lib/prep-ha/first-boot-ran"] is not None
    assert "daemon-reload" in first_boot["systemctl"]

    assert json.loads(unchanged["out"])["changed"] == []
    facts = json.loads(plan["out"])
    assert facts["changed"] == [PEER_FILE, ALERT]
    assert facts["removed"] == [OLD_UNIT] and facts["packages"] == []
    assert (facts["peer"], facts["ctz"], facts["node"]) == (True, False, False)
    assert facts["current"] == payloads["first"].digest

    # Refused before anything changed, and the reason left where the readiness check reads it.
    assert refused["rc"] == 1 and "peer.service" in refused["err"]
    assert "peer.service" in refused["failed"]
    assert refused["files"][PEER_FILE][0] == "services: {peer: v1}\n"
    assert refused["files"][ALERT][0] == "#!/bin/sh\necho v1\n"
    assert refused["current"] == payloads["first"].digest

    assert wrong_role["rc"] == 0, wrong_role["err"]
    assert wrong_role["files"][PEER_FILE][0] == "services: {peer: v2}\n"
    assert wrong_role["files"][OLD_UNIT] is None
    assert "disable --now prep-ha-old.service" in wrong_role["systemctl"]
    assert "daemon-reload" in wrong_role["systemctl"]
    assert wrong_role["failed"] == "" and wrong_role["current"] == payloads["second"].digest
    assert json.loads(installed["out"])["changed"] == []
    assert again["rc"] == 0 and "0 files changed, 0 removed" in again["out"]


def test_an_interrupted_install_still_restarts_what_it_changed(node_tools, tmp_path, payloads):
    """A broken sudoers rule stops the install after the exporter's drop-in was written (the
    order of the payload): the fixed payload's install restarts the exporter all the same,
    though its file on disk is already the new one."""
    *_, broken, plan, fixed = run_steps(node_tools, tmp_path, payloads, [
        (["install-first-boot", "first"], "", "first-boot"),
        (["install", "second"], "", None),
        (["install", "broken"], "", None),
        (["plan", "fixed"], "", None),
        (["install", "fixed"], "", None)])
    assert broken["rc"] == 1 and "visudo" in broken["failed"]
    assert broken["files"][EXPORTER][0] == "[Service]\nEnvironment=V=2\n"
    assert "try-restart ha_cluster_exporter.service" not in broken["systemctl"]
    assert broken["files"][SUDOERS][0].startswith("hacluster ALL=(root) NOPASSWD")
    assert broken["current"] == payloads["second"].digest
    assert EXPORTER in json.loads(plan["out"])["changed"]
    assert fixed["rc"] == 0, fixed["err"]
    assert "try-restart ha_cluster_exporter.service" in fixed["systemctl"]
    assert fixed["failed"] == "" and fixed["current"] == payloads["fixed"].digest


def test_a_payload_is_installed_by_the_installer_it_carries(node_tools, tmp_path, payloads):
    *_, plan, install = run_steps(node_tools, tmp_path, payloads, [
        (["install-first-boot", "second"], "", "first-boot"),
        (["plan", "third"], "", None),
        (["install", "third"], "", None)])
    assert "the installer of the new payload" in plan["err"]
    assert json.loads(plan["out"])["changed"] == [INSTALLER]
    assert install["rc"] == 0 and "the installer of the new payload" in install["err"]
    assert install["current"] == payloads["third"].digest


def test_a_payload_that_does_not_match_its_digest_installs_nothing(node_tools, tmp_path,
                                                                   payloads):
    """Another payload's bytes stored under the first one's digest (both real archives)."""
    good = payloads["first"]
    swapped = {"first": _Stored(good.digest, payloads["second"].archive())}
    [step] = run_steps(node_tools, tmp_path, swapped,
                       [(["install-first-boot", "first"], "", "first-boot")])
    assert step["rc"] == 1
    assert f"payload digest mismatch: the payload fetched for {good.digest}" in step["failed"]
    assert step["files"][ALERT] is None and step["current"] == ""


@dataclasses.dataclass(frozen=True)
class _Stored:
    """An object in the bucket under a digest that is not its own."""
    digest: str
    data: bytes

    def archive(self) -> bytes:
        return self.data
