"""How a node fills its chain data and which wallet the citizen runs with: the node's scripts
(prep-ha-chain-sync, prep-ha-citizen-key, from the rendered user-data) with the lab's stand-ins
for the image and docker, on the temporary node root of tests/standin_node.py.

The image's snapshot restore deletes the chain before it downloads (icon2-docker
ctx/manager/restore_v3.py run_prejob), so FASTEST_START must be true only on a volume that
never held a chain of its own.
"""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
import yaml

from tests.standin_node import (
    FIXTURES,
    Node,
    files_holding,
    needs_netns,
    needs_node_python,
    standin_node,
)

pytestmark = needs_node_python

PENDING = "/app/icon/restore-pending"  # prep-ha-data-volume, on a volume it formatted
RESTORED = "/app/icon/data/restore/RESTORED"  # the image's own marker of a finished restore
CHAIN_MARK = "/app/icon/data/0x1/db/mark"  # chain data the node had before a start


@pytest.fixture
def node(tmp_path):
    with standin_node(tmp_path) as n:
        yield n


def sync(node: Node, role: str) -> str:
    """prep-ha-chain-sync as the unit's first ExecStartPre: FASTEST_START for this start."""
    node.sbin("prep-ha-chain-sync", "/app/icon", f"/run/prep-ha/{role}-chain-sync.env")
    return node.path(f"/run/prep-ha/{role}-chain-sync.env").read_text()


def restoring(node: Node) -> bool:
    """What the operations ask before they move the peer (prep_ha/ops/pair.py RESTORING)."""
    return subprocess.run([node.path("/usr/local/sbin/prep-ha-chain-sync"), "--restoring",
                           node.path("/app/icon")], capture_output=True).returncode == 0


def run_role(node: Node, role: str) -> str:
    """Start the role, wait until it serves, stop it as systemd does; its container output."""
    up = node.start_up(role)
    assert node.http_get(up)["role"] == role
    up.send_signal(signal.SIGTERM)
    assert up.wait(timeout=15) == 0
    return node.output(up)[0]


def test_fastest_start_only_until_a_fresh_volumes_snapshot_is_restored(node):
    # The Node fixture ran the script on a volume without the mark (formatted earlier, or
    # for a genesis sync): the chain there is kept.
    assert sync(node, "peer") == "FASTEST_START=false\n" and not restoring(node)
    node.path(PENDING).write_text("2026-11-26T10:00:00Z\n")
    # Until the image writes RESTORED, every start restores (one cut short by a fence too).
    for role in ("ctz", "ctz", "peer"):
        assert sync(node, role) == "FASTEST_START=true\n"
        assert node.path(PENDING).exists() and restoring(node)
    node.path(RESTORED).parent.mkdir(parents=True)
    node.path(RESTORED).write_text("2026-11-26 12:00:00")
    assert not restoring(node)
    assert sync(node, "peer") == "FASTEST_START=false\n"
    assert not node.path(PENDING).exists()
    # Once the mark is gone nothing brings the restore back, not even a deleted RESTORED.
    node.path(RESTORED).unlink()
    assert sync(node, "ctz") == "FASTEST_START=false\n"


@needs_netns
def test_a_fresh_volume_restores_once_and_later_starts_keep_the_chain(node):
    node.path(PENDING).write_text("2026-11-26T10:00:00Z\n")
    sync(node, "ctz")
    first = run_role(node, "ctz")
    assert "[RESTORE] DOWNLOAD from ICON2 DB" in first
    assert node.path(RESTORED).exists()
    node.path(CHAIN_MARK).write_text("synced after the restore")
    # Failover: the peer starts on the same volume, then the citizen again.
    for role in ("peer", "ctz"):
        assert sync(node, role) == "FASTEST_START=false\n"
        assert "[PASS] Ignore DB download" in run_role(node, role)
    assert node.path(CHAIN_MARK).read_text() == "synced after the restore"
    assert not node.path(PENDING).exists()


@needs_netns
def test_without_the_decision_a_restart_would_delete_the_chain(node):
    """The control: FASTEST_START=true on a volume that holds a chain but no RESTORED (synced
    from genesis, or by an earlier release) makes the image delete it and download again."""
    node.path(CHAIN_MARK).parent.mkdir(parents=True)
    node.path(CHAIN_MARK).write_text("a synced chain")
    assert sync(node, "peer") == "FASTEST_START=false\n"
    assert "[PASS] Ignore DB download" in run_role(node, "peer")
    assert node.path(CHAIN_MARK).exists()
    node.path("/run/prep-ha/peer-chain-sync.env").write_text("FASTEST_START=true\n")
    assert "[RESTORE] Delete file is /goloop/data/0x1/db" in run_role(node, "peer")
    assert not node.path(CHAIN_MARK).exists()


def test_the_citizen_wallet_is_made_once_by_the_images_goloop(node):
    key = node.path("/app/icon/ctz/key")
    keystore = json.loads((key / "keystore.json").read_text())
    validator = json.loads((FIXTURES / "fake_keystore.json").read_text())["address"]
    assert keystore["address"].startswith("hx") and keystore["address"] != validator
    assert keystore["coinType"] == "icx" and keystore["crypto"]["kdf"] == "scrypt"
    assert {p.name: p.stat().st_mode & 0o777 for p in key.iterdir()} == {
        "keystore.json": 0o600, "keysecret": 0o600}
    assert key.stat().st_mode & 0o777 == 0o700
    before = {p.name: p.read_bytes() for p in key.iterdir()}
    # Every later start of the citizen runs the script again: nothing changes.
    assert node.sbin("prep-ha-citizen-key", "/app/icon/ctz/key").stdout == ""
    assert {p.name: p.read_bytes() for p in key.iterdir()} == before
    # A start cut short between the password and the keystore: the same password is used.
    (key / "keystore.json").unlink()
    made = node.sbin("prep-ha-citizen-key", "/app/icon/ctz/key").stdout
    assert made.startswith("citizen wallet hx") and (key / "keysecret").read_bytes() == \
        before["keysecret"]


@needs_netns
def test_the_citizen_runs_with_its_own_wallet_and_its_password_stays_in_the_file(node):
    address = json.loads(node.path("/app/icon/ctz/key/keystore.json").read_text())["address"]
    password = node.path("/app/icon/ctz/key/keysecret").read_text()
    attached = run_role(node, "ctz")
    assert f"[goloop] wallet {address} from /goloop/key/keystore.json" in attached
    assert password not in attached
    assert files_holding(node.root, password) == ["app/icon/ctz/key/keysecret"]
    [record] = node.records()
    config = json.loads(record.read_text())
    assert config["MountPoints"]["/goloop/key"]["RW"] is False
    assert "/goloop/secret" not in config["MountPoints"]  # the P-Rep's key never


@needs_netns
@pytest.mark.parametrize("role, secret", [("ctz", "/goloop/key/keysecret"),
                                          ("peer", "/goloop/secret/keysecret")])
def test_the_images_key_generation_would_stop_a_role(node, role, secret):
    """Why both compose files pin IS_AUTOGEN_CERT=false: on, the image makes a wallet in
    /goloop/config and writes KEY_PASSWORD to the read-only key secret."""
    path = node.yml(role)
    doc = yaml.safe_load(open(path).read())
    doc["services"]["icon2-node"]["environment"]["IS_AUTOGEN_CERT"] = "true"
    open(path, "w").write(yaml.safe_dump(doc))
    up = node.start_up(role)
    assert up.wait(timeout=15) == 1
    assert f"{secret}: read-only file system" in node.output(up)[0]
