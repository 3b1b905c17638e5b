"""The PR preview workflow and the deploy script: no production secret reachable by a pull
request's code, none on a command line or in a tracked file."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github/workflows/policy-preview.yml"


def test_pr_preview_reaches_no_secret_and_writes_nothing():
    text = WORKFLOW.read_text()
    doc = yaml.safe_load(text)
    # Workflows of forks' pull requests never get secrets; `pull_request_target` would run
    # with the base repository's.
    assert list(doc[True]) == ["pull_request"]  # YAML reads the key `on` as True
    assert "secrets." not in text  # no stored credential or passphrase at all
    assert doc["permissions"] == {"contents": "read", "id-token": "write"}
    steps = doc["jobs"]["preview"]["steps"]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["persist-credentials"] is False
    aws = next(s for s in steps if "configure-aws-credentials" in s.get("uses", ""))
    assert aws["with"]["role-to-assume"] == "${{ vars.PREVIEW_ROLE_ARN }}"
    assert not any(k.startswith("aws-access") for k in aws["with"])
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "PULUMI_CONFIG_PASSPHRASE_FILE" in runs and "/dev/urandom" in runs
    assert not re.search(r"PULUMI_CONFIG_PASSPHRASE[^_]", text)
    assert "pulumi config set" not in runs  # no placeholder key: the stacks need none
    assert re.search(r"pulumi preview .*--policy-pack policies", runs.replace("\n", " "))
    assert "pulumi up" not in runs


def test_stack_files_hold_no_secret():
    for stack in ("testnet", "mainnet"):
        config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
        assert not any(isinstance(v, dict) and "secure" in v for v in config.values())
        assert not any(k.endswith((":keystore", ":keystorePassword")) for k in config)


def test_deploy_refuses_a_passphrase_in_the_environment(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pulumi").write_text("#!/bin/sh\necho pulumi-ran \"$@\"\n")
    (fake / "pulumi").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "HOME": str(tmp_path),
           "PULUMI_CONFIG_PASSPHRASE": "hunter2-passphrase"}
    proc = subprocess.run([str(ROOT / "scripts/deploy"), "testnet"], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 2 and "PULUMI_CONFIG_PASSPHRASE_FILE" in proc.stderr
    assert "pulumi-ran" not in proc.stdout and "hunter2" not in proc.stdout + proc.stderr


def test_deploy_makes_a_private_passphrase_file_and_hands_paths_not_values(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    record = tmp_path / "pulumi.log"
    # The fake pulumi records argv and the put-keystore inputs it would hand the program.
    (fake / "pulumi").write_text(
        "#!/bin/sh\n"
        f'echo "$* | ks=$PREP_HA_KEYSTORE pwf=$PREP_HA_KEYSTORE_PASSWORD_FILE '
        f'pp=$PULUMI_CONFIG_PASSPHRASE_FILE" >> {record}\n'
        '[ "$1" = up ] && cat "$PREP_HA_KEYSTORE_PASSWORD_FILE" >> ' f"{record}.pw\n"
        "exit 0\n")
    (fake / "pulumi").chmod(0o755)
    keystore = tmp_path / "keystore.json"
    keystore.write_text("{}")
    env = {"PATH": f"{fake}:/usr/bin:/bin", "HOME": str(tmp_path),
           "XDG_RUNTIME_DIR": str(tmp_path)}
    proc = subprocess.run(["script", "-qec", f"{ROOT / 'scripts/deploy'} testnet --keystore "
                           f"{keystore} --yes", "/dev/null"], input="s3cret-pw\ns3cret-pw\n",
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passphrase = tmp_path / ".config/icon-prep-ha/testnet.passphrase"
    assert passphrase.stat().st_mode & 0o777 == 0o600 and len(passphrase.read_text()) > 40
    lines = record.read_text().splitlines()
    assert lines[0].startswith("stack select --create testnet --secrets-provider passphrase")
    assert lines[1].startswith("up --stack testnet --yes |")
    assert f"ks={keystore}" in lines[1] and f"pp={passphrase}" in lines[1]
    assert "s3cret-pw" not in record.read_text()  # a path, never the value
    assert Path(f"{record}.pw").read_text() == "s3cret-pw"  # what put-keystore would read
    assert not list(tmp_path.glob("prep-ha.*"))  # the tmpfs file is gone afterwards
    assert os.access(ROOT / "scripts/deploy", os.X_OK)
