"""Day-2 operations: how `pulumi up` carries a new image to the nodes, and the operator side.

What the roll and the switchover do on real nodes is proven by the lab (tests/test_lab.py,
drill cases switchover, upgrade, roll-refused); here: what the program declares for them.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import stat
import subprocess

import pytest

from prep_ha.ops import shell
from prep_ha.ops.shell import OpsError
from prep_ha.payload import TAG as PAYLOAD_TAG
from prep_ha.payload import read_archive
from tests.fixtures.fake_keys import FAKE_SSH_PRIVATE_KEY, PEM_HEADER
from tests.pulumi_mocks import ProgramRun, run_stack
from tests.standin_node import IMAGE, needs_node_python, standin_node
from tests.test_userdata import payloads_of

LOCAL_COMMAND = "command:local:Command"
INSTANCE = "aws:ec2/instance:Instance"
BUCKET_OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"
ROLL = "pacemaker-node-roll"


@pytest.fixture(scope="module")
def runs() -> tuple[ProgramRun, ProgramRun]:
    return run_stack("testnet"), run_stack("testnet", {"icon-prep-ha:iconImageTag": "v9.9.9"})


@pytest.fixture(scope="module")
def changed_script(tmp_path_factory) -> ProgramRun:
    """The program run again with one node script changed (a comment, as a fix would)."""
    import shutil

    import prep_ha.userdata as userdata

    templates = tmp_path_factory.mktemp("templates") / "cloud-init"
    shutil.copytree(userdata.TEMPLATE_DIR, templates)
    script = templates / "files/prep-ha-alert"
    script.write_text(script.read_text() + "# fixed\n")
    original, userdata.TEMPLATE_DIR = userdata.TEMPLATE_DIR, templates
    try:
        return run_stack("testnet")
    finally:
        userdata.TEMPLATE_DIR = original


def roll_of(run: ProgramRun):
    return run.by_name(LOCAL_COMMAND, ROLL)


def test_the_roll_command_names_the_image_and_gets_the_key_on_stdin_only(runs):
    run, _ = runs
    roll = roll_of(run)
    digests = [payloads_of(run)[i].digest for i in (0, 1)]
    command = "python3 -m prep_ha roll --stack testnet --image iconloop/icon2-node:v1.4.6 " \
        f"--payload prep-ha-testnet-1={digests[0]} --payload prep-ha-testnet-2={digests[1]} " \
        "--key-stdin"
    assert roll.inputs["create"] == roll.inputs["update"] == command
    assert roll.is_secret("stdin") and "PRIVATE KEY" in roll.inputs["stdin"]
    env = roll.inputs["environment"]
    hosts = run.outputs["managementIps"]
    assert shell.parse_nodes(env[shell.NODES_ENV]) == hosts
    assert env[shell.KNOWN_HOSTS_ENV] == run.outputs["sshKnownHosts"]
    assert "PRIVATE KEY" not in json.dumps(env) + roll.inputs["create"]
    # After the health check: a roll starts only on a cluster `pulumi up` found healthy.
    assert roll.depends_on == ("command:remote:Command::pacemaker-health",)


def _inputs(run: ProgramRun) -> dict[str, str]:
    """Each resource's inputs minus what Pulumi is told to ignore, with the ids and outputs
    the (fake) cloud invented replaced by their resources' names: comparable between runs."""
    made = [(r.id, r.key) for r in run.resources if r.id] + [
        (v, f"{r.key}.{k}") for r in run.resources for k, v in r.outputs.items()
        if isinstance(v, str) and len(v) >= 8]
    label: dict[str, str] = {}
    for value, name in made:  # one label per value, the same in every run
        label[value] = min(label.get(value, name), name)
    ids = sorted(label.items(), key=lambda p: -len(p[0]))
    out = {}
    for r in run.resources:
        ignored = {p.split(".")[0] for p in r.ignore_changes}
        inputs = {k: v for k, v in r.inputs.items() if k not in ignored}
        if r.type == BUCKET_OBJECT:  # its content, readable; its key is the content's digest
            manifest, contents = read_archive(base64.b64decode(inputs.pop("contentBase64")))
            inputs = {**inputs, "key": "<digest>", "manifest": manifest,
                      "files": {k: v.decode() for k, v in contents.items()}}
        text = re.sub(r"[0-9a-f]{64}", "<digest>", json.dumps(inputs, sort_keys=True))
        for rid, key in ids:
            text = text.replace(rid, f"<{key}>")
        out[r.key] = text
    return out


def _changed(before: ProgramRun, after: ProgramRun) -> set[str]:
    old, new = _inputs(before), _inputs(after)
    return {key for key in new if new[key] != old.get(key)}


def _node_changes(before: ProgramRun, after: ProgramRun) -> set[str]:
    """What `pulumi preview` would show after a change to what the nodes run: exactly the
    nodes' payload objects (new digests: new objects), the two instances' payload tag (an
    in-place tag update: EC2 neither stops nor replaces an instance for it) and the roll."""
    changed = _changed(before, after)
    for instance in ("nodes-1-instance", "nodes-2-instance"):
        old, new = (r.by_name(INSTANCE, instance) for r in (before, after))
        assert _inputs(before)[old.key] == _inputs(after)[new.key]  # but for the digest:
        assert old.inputs["tags"][PAYLOAD_TAG] != new.inputs["tags"][PAYLOAD_TAG]
        changed.add(new.key)
    # The roll's command line names the new digests (`pulumi preview --diff` shows it).
    if roll_of(before).inputs["create"] != roll_of(after).inputs["create"]:
        changed.add(roll_of(after).key)
    return changed


NODE_CHANGES = {f"{LOCAL_COMMAND}::{ROLL}", f"{INSTANCE}::nodes-1-instance",
                f"{INSTANCE}::nodes-2-instance", f"{BUCKET_OBJECT}::payload-prep-ha-testnet-1",
                f"{BUCKET_OBJECT}::payload-prep-ha-testnet-2"}


def test_a_new_image_tag_changes_only_the_nodes_payloads_and_the_roll(runs):
    """`pulumi preview` after `config set iconImageTag`: the roll, with the new image on its
    command line, and the nodes' payloads. No instance is replaced or restarted by Pulumi."""
    before, after = runs
    assert _node_changes(before, after) == NODE_CHANGES
    assert "--image iconloop/icon2-node:v9.9.9 " in roll_of(after).inputs["create"]


def test_a_changed_node_script_changes_only_the_nodes_payloads_and_the_roll(runs,
                                                                           changed_script):
    """A fix to one node file: new digests for both nodes (not the arbiter, which does not
    have that file), on the roll's command line for `pulumi preview` to show."""
    before, _ = runs
    assert _node_changes(before, changed_script) == NODE_CHANGES
    new = payloads_of(changed_script)
    assert new[0].file("/usr/local/sbin/prep-ha-alert").content.endswith("# fixed\n")
    for digest in (p.digest for p in new):
        assert f"={digest} " in roll_of(changed_script).inputs["create"]


@pytest.mark.parametrize("text", ["", "node-1=10.0.0.1", "node-1=10.0.0.1 node-2",
                                  "a=1 b=2 c=3", "=10.0.0.1 node-2=10.0.0.2"])
def test_malformed_node_lists_are_refused(text):
    with pytest.raises(OpsError, match=shell.NODES_ENV):
        shell.parse_nodes(text)


def test_the_key_from_stdin_lives_in_a_private_file_only_while_used():
    env = {shell.NODES_ENV: "n1=192.0.2.1 n2=192.0.2.2",
           shell.KNOWN_HOSTS_ENV: "192.0.2.1 ssh-ed25519 AAAA\n"}
    key = FAKE_SSH_PRIVATE_KEY
    with shell.from_environment(env, key) as nodes:
        path = nodes.key_file
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        assert open(path).read() == key + "\n"
        assert nodes.hosts == {"n1": "192.0.2.1", "n2": "192.0.2.2"}
    assert not os.path.exists(path)


@pytest.mark.parametrize("missing", [shell.NODES_ENV, shell.KNOWN_HOSTS_ENV, "key"])
def test_the_roll_command_refuses_a_missing_input(missing):
    env = {shell.NODES_ENV: "n1=192.0.2.1 n2=192.0.2.2",
           shell.KNOWN_HOSTS_ENV: "192.0.2.1 ssh-ed25519 AAAA\n"}
    env.pop(missing, None)
    key = "" if missing == "key" else PEM_HEADER + "\n"
    with pytest.raises(OpsError, match=missing if missing != "key" else "private key"):
        with shell.from_environment(env, key):
            pass


def test_switchover_without_the_ssh_files_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(OpsError, match="sshKeyCommand"):
        shell.from_stack("testnet", "prep-ha-testnet", ["prep-ha-testnet-1", "prep-ha-testnet-2"])


def test_the_policy_pack_refuses_the_key_on_a_plain_stdin(runs):
    """The roll's stdin passes only because it is a Pulumi secret (additional_secret_outputs)."""
    from tests.test_policies import evaluate, policy_resource

    roll = roll_of(runs[0])
    as_declared = evaluate([policy_resource(roll)])
    plain = evaluate([policy_resource(dataclasses.replace(roll, secret_paths=frozenset()))])
    assert not as_declared.get("secrets-plain-inputs")
    assert "a PEM private key" in str(plain["secrets-plain-inputs"])


NOT_PLAIN = ["iconloop/icon2-node:v1; rm -rf /", "other/image:v1", "iconloop/icon2-node:",
             "iconloop/icon2-node:$(id)", "iconloop/icon2-node:v1\nv2", "iconloop/icon2-node:-v1",
             "iconloop/icon2-node:" + "v" * 129]


@pytest.mark.parametrize("image", NOT_PLAIN)
def test_the_roll_refuses_an_image_that_is_not_a_plain_reference(image):
    from prep_ha.ops.roll import roll

    # Refused before the pair is touched: the pair argument is never used.
    with pytest.raises(OpsError, match="not an iconloop/icon2-node:TAG reference"):
        roll(None, image)  # type: ignore[arg-type]


@needs_node_python
def test_the_nodes_prep_ha_image_admits_what_the_roll_admits(tmp_path):
    """The node's own check (rendered from the same pattern) refuses what the roll refuses,
    before it touches anything, and takes the stack's image."""
    with standin_node(tmp_path) as node:
        script = str(node.path("/usr/local/sbin/prep-ha-image"))
        for image in NOT_PLAIN:
            for action in ("pull", "set"):
                result = subprocess.run([script, action, image], env=node.env,
                                        capture_output=True, text=True)
                assert result.returncode == 2, (action, image)
                assert "is not an iconloop/icon2-node:TAG reference" in result.stderr
        for image in (IMAGE, "iconloop/icon2-node:" + "v" * 128):
            result = subprocess.run([script, "pull", image], env=node.env, capture_output=True,
                                    text=True)
            assert result.returncode == 0, result.stderr
