"""Store the validator key in the stack's Secrets Manager secrets, from the operator's machine.

    python -m prep_ha put-keystore --stack NAME [--keystore FILE] [--password-file FILE]
                                   [--if-unset]

`pulumi up` creates the two secrets empty (components/secrets.py) and runs this with
--if-unset before the nodes boot; operators run it by hand to rotate the key. The values go
from the files (or the terminal) straight to Secrets Manager with boto3: never through Pulumi
config or state, never on a command line or in an environment variable, never printed. The
secrets' resource policy lets only the node role read them back, so this tool cannot either.
"""

from __future__ import annotations

import getpass
import json
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Paths (never values) that scripts/deploy hands to the keystore-put Command of `pulumi up`.
KEYSTORE_ENV = "PREP_HA_KEYSTORE"
PASSWORD_FILE_ENV = "PREP_HA_KEYSTORE_PASSWORD_FILE"
MAX_SECRET_BYTES = 65536  # Secrets Manager's limit for a secret value


class KeystoreError(Exception):
    """What is wrong and how to fix it; never carries a secret value."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}. Fix: {fix}")


@dataclass(frozen=True)
class KeySecrets:
    keystore: str  # secret names
    password: str
    region: str


def keystore_address(text: str) -> str:
    """The keystore's hx address, or KeystoreError if `text` is not an ICON keystore."""
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if not (isinstance(doc, dict) and str(doc.get("address", "")).startswith("hx")
            and isinstance(doc.get("crypto"), dict)):
        raise KeystoreError("the file is not an ICON keystore (JSON with an hx address and a "
                            "crypto section)", "give the P-Rep's keystore file")
    if len(text.encode()) > MAX_SECRET_BYTES:
        raise KeystoreError("the keystore is larger than Secrets Manager's 64 KiB",
                            "give the P-Rep's keystore file")
    return str(doc["address"])


def read_password_file(path: Path) -> str:
    """The password in `path` (one trailing newline dropped); refuses a file others can read."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeystoreError(f"{path} is readable by other users (mode {stat.S_IMODE(mode):o})",
                            f"chmod 600 {path}")
    text = path.read_text()
    password = text[:-1] if text.endswith("\n") else text
    if not password:
        raise KeystoreError(f"{path} is empty", "write the keystore password into it")
    return password


def ask_password(prompt: Callable[[str], str] = getpass.getpass) -> str:
    first = prompt("Keystore password: ")
    if not first:
        raise KeystoreError("the password is empty", "type the keystore's password")
    if prompt("Again: ") != first:
        raise KeystoreError("the two passwords differ", "type the same password twice")
    return first


def has_value(client: Any, secret_name: str) -> bool:
    """Whether the secret has a current version (without reading it: the policy forbids)."""
    try:
        stages = client.describe_secret(SecretId=secret_name).get("VersionIdsToStages", {})
    except client.exceptions.ResourceNotFoundException:
        raise KeystoreError(f"the secret {secret_name} does not exist",
                            "run `pulumi up` (scripts/deploy) first: it creates the "
                            "secrets") from None
    return any("AWSCURRENT" in s for s in stages.values())


def put_keystore(client: Any, names: KeySecrets, keystore: str, password: str) -> list[str]:
    """Store both values; the lines to print (names, versions and the address, no values)."""
    address = keystore_address(keystore)
    # The password first: a peer starting in between reads the old keystore with the new
    # password and fails to start (Pacemaker retries), never the other way round silently.
    done = []
    for name, value in ((names.password, password), (names.keystore, keystore)):
        try:
            version = client.put_secret_value(SecretId=name, SecretString=value)["VersionId"]
        except client.exceptions.ClientError as e:
            if not done:
                raise
            code = e.response.get("Error", {}).get("Code", "error")
            raise KeystoreError(
                f"{names.password} holds the new password but storing {name} failed ({code}): "
                "a peer starting now fails", "run the same put-keystore again at once") from None
        done.append(f"  {name}: version {version}")
    return [f"stored the keystore of {address} and its password:", *done]


def run(client: Any, names: KeySecrets, *, keystore_file: Path | None,
        password_file: Path | None, if_unset: bool, interactive: bool,
        prompt: Callable[[str], str] = getpass.getpass) -> list[str]:
    """The put-keystore command after its arguments are resolved; returns the report."""
    if if_unset:
        present = [has_value(client, n) for n in (names.keystore, names.password)]
        if all(present):
            return [f"{names.keystore} and {names.password} already hold the key; left as "
                    "they are (rotate with put-keystore without --if-unset)"]
    if keystore_file is None:
        raise KeystoreError(
            f"{names.keystore} and {names.password} hold no key yet",
            f"run `scripts/deploy STACK --keystore FILE`, or `python -m prep_ha put-keystore "
            f"--stack STACK --keystore FILE`, or set {KEYSTORE_ENV} (and "
            f"{PASSWORD_FILE_ENV}) to the files' paths before `pulumi up`")
    keystore = keystore_file.read_text()
    keystore_address(keystore)  # before asking for a password
    if password_file is not None:
        password = read_password_file(password_file)
    elif interactive:
        password = ask_password(prompt)
    else:
        raise KeystoreError("no keystore password: no terminal to ask and no password file",
                            f"set {PASSWORD_FILE_ENV} or --password-file to a file only you "
                            "can read")
    return put_keystore(client, names, keystore, password)


def main(names: KeySecrets, keystore: str | None, password_file: str | None,
         if_unset: bool) -> int:
    import boto3

    keystore = keystore or os.environ.get(KEYSTORE_ENV) or None
    password_file = password_file or os.environ.get(PASSWORD_FILE_ENV) or None
    client = boto3.client("secretsmanager", region_name=names.region)
    try:
        lines = run(client, names, keystore_file=Path(keystore) if keystore else None,
                    password_file=Path(password_file) if password_file else None,
                    if_unset=if_unset, interactive=sys.stdin.isatty())
    except (KeystoreError, OSError) as e:
        print(f"put-keystore: {e}", file=sys.stderr)
        return 2
    except client.exceptions.ClientError as e:
        code = e.response.get("Error", {}).get("Code", "error")
        print(f"put-keystore: Secrets Manager refused ({code}). Fix: use credentials of the "
              "stack's account that may call secretsmanager:PutSecretValue, "
              "DescribeSecret and kms:GenerateDataKey on the keystore key",
              file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0
