"""`python -m prep_ha put-keystore`: the validator key from the operator's files (or terminal) to
the stack's empty Secrets Manager secrets, with boto3 against moto; never printed, never on
argv, and `--if-unset` (what `pulumi up` runs) leaves a stored key alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prep_ha import keystore
from prep_ha.__main__ import main
from tests.pulumi_mocks import FAKE_KEYSTORE, PROJECT_DIR

moto = pytest.importorskip("moto")
import boto3  # noqa: E402

PASSWORD = "FAKE-put-keystore-pw-Lk27"
NAMES = ("prep-ha-testnet/keystore", "prep-ha-testnet/keystore-password")


@pytest.fixture
def cloud(monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    for var in (keystore.KEYSTORE_ENV, keystore.PASSWORD_FILE_ENV):
        monkeypatch.delenv(var, raising=False)
    with moto.mock_aws():
        client = boto3.client("secretsmanager", region_name="eu-central-1")
        for name in NAMES:  # what `pulumi up` creates: secrets without a value
            client.create_secret(Name=name)
        yield client


@pytest.fixture
def files(tmp_path):
    ks, pw = tmp_path / "keystore.json", tmp_path / "password"
    ks.write_text(FAKE_KEYSTORE)
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    return ks, pw


def values(client) -> list[str]:
    return [client.get_secret_value(SecretId=n)["SecretString"] for n in NAMES]


def test_stores_both_values_and_prints_none(cloud, files, capsys):
    ks, pw = files
    assert main(["put-keystore", "--stack", "testnet", "--keystore", str(ks),
                 "--password-file", str(pw)]) == 0
    assert values(cloud) == [FAKE_KEYSTORE, PASSWORD]  # the file's newline is not the password
    out = capsys.readouterr()
    address = json.loads(FAKE_KEYSTORE)["address"]
    assert f"stored the keystore of {address}" in out.out
    assert PASSWORD not in out.out + out.err and "crypto" not in out.out + out.err


def test_if_unset_is_what_pulumi_up_runs_and_keeps_a_stored_key(cloud, files, capsys,
                                                                 monkeypatch):
    ks, pw = files
    # A fresh stack: the paths come from scripts/deploy's environment (paths, not values).
    monkeypatch.setenv(keystore.KEYSTORE_ENV, str(ks))
    monkeypatch.setenv(keystore.PASSWORD_FILE_ENV, str(pw))
    assert main(["put-keystore", "--stack", "testnet", "--if-unset"]) == 0
    assert values(cloud) == [FAKE_KEYSTORE, PASSWORD]
    versions = [len(cloud.list_secret_version_ids(SecretId=n)["Versions"]) for n in NAMES]
    # A later `pulumi up` (the Command replaced, say) changes nothing.
    assert main(["put-keystore", "--stack", "testnet", "--if-unset"]) == 0
    assert "already hold the key; left as they are" in capsys.readouterr().out
    assert [len(cloud.list_secret_version_ids(SecretId=n)["Versions"]) for n in NAMES] == \
        versions


def test_rotation_stores_new_versions(cloud, files, tmp_path):
    ks, pw = files
    assert main(["put-keystore", "--stack", "testnet", "--keystore", str(ks),
                 "--password-file", str(pw)]) == 0
    new_ks, new_pw = tmp_path / "new.json", tmp_path / "new-pw"
    new_ks.write_text(json.dumps({**json.loads(FAKE_KEYSTORE), "id": "rotated"}))
    new_pw.write_text("rotated-password")
    new_pw.chmod(0o400)
    assert main(["put-keystore", "--stack", "testnet", "--keystore", str(new_ks),
                 "--password-file", str(new_pw)]) == 0
    assert json.loads(values(cloud)[0])["id"] == "rotated" and values(cloud)[1] == \
        "rotated-password"


@pytest.mark.parametrize(("change", "message"), [
    (lambda ks, pw: ks.write_text('{"address": "0x12"}'), "not an ICON keystore"),
    (lambda ks, pw: pw.chmod(0o644), "readable by other users"),
    (lambda ks, pw: pw.write_text(""), "is empty"),
])
def test_bad_input_stores_nothing_and_names_the_fix(cloud, files, capsys, change, message):
    ks, pw = files
    change(ks, pw)
    assert main(["put-keystore", "--stack", "testnet", "--keystore", str(ks),
                 "--password-file", str(pw)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Fix:" in err
    assert all(cloud.list_secret_version_ids(SecretId=n)["Versions"] == [] for n in NAMES)


def test_a_keystore_put_failing_after_the_password_says_so(cloud, files, capsys):
    # Secrets Manager refuses the second write (the keystore secret is gone): the operator
    # must hear that the password already changed.
    cloud.delete_secret(SecretId=NAMES[0], ForceDeleteWithoutRecovery=True)
    ks, pw = files
    assert main(["put-keystore", "--stack", "testnet", "--keystore", str(ks),
                 "--password-file", str(pw)]) == 2
    err = capsys.readouterr().err
    assert f"{NAMES[1]} holds the new password but storing {NAMES[0]} failed" in err
    assert "run the same put-keystore again" in err and PASSWORD not in err


def test_a_fresh_stack_without_the_files_fails_with_the_fix(cloud, capsys):
    assert main(["put-keystore", "--stack", "testnet", "--if-unset"]) == 2
    err = capsys.readouterr().err
    assert "hold no key yet" in err and "scripts/deploy STACK --keystore FILE" in err


def test_without_a_terminal_or_password_file_nothing_is_stored(cloud, files, capsys):
    ks, _ = files
    assert main(["put-keystore", "--stack", "testnet", "--keystore", str(ks)]) == 2
    assert "no terminal" in capsys.readouterr().err


def test_the_password_is_asked_twice_on_a_terminal(cloud, files):
    ks, _ = files
    names = keystore.KeySecrets(*NAMES, "eu-central-1")
    answers = iter([PASSWORD, PASSWORD])
    keystore.run(cloud, names, keystore_file=ks, password_file=None, if_unset=False,
                 interactive=True, prompt=lambda _: next(answers))
    assert values(cloud)[1] == PASSWORD
    typo = iter([PASSWORD, "other"])
    with pytest.raises(keystore.KeystoreError, match="differ"):
        keystore.run(cloud, names, keystore_file=ks, password_file=None, if_unset=False,
                     interactive=True, prompt=lambda _: next(typo))


def test_secrets_not_created_yet_means_run_pulumi_up_first(files, capsys, monkeypatch):
    ks, pw = files
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    with moto.mock_aws():  # an account where `pulumi up` has not run
        assert main(["put-keystore", "--stack", "testnet", "--if-unset", "--keystore", str(ks),
                     "--password-file", str(pw)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_no_option_takes_a_secret_value_on_the_command_line():
    help_text = subprocess.run([sys.executable, "-m", "prep_ha", "put-keystore", "--help"],
                               capture_output=True, text=True, cwd=PROJECT_DIR,
                               env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)}).stdout
    options = {w.split("=")[0] for w in help_text.split() if w.startswith("--")}
    assert options == {"--help", "--stack", "--keystore", "--password-file", "--if-unset"}
    assert Path(PROJECT_DIR / "prep_ha/keystore.py").read_text().count("getpass") >= 1
