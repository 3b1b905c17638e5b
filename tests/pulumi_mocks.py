"""Run the real `__main__.py` of a stack under `pulumi.runtime.set_mocks`; capture its resources.

    from tests.pulumi_mocks import run_program
    resources = run_program("mainnet")                       # Pulumi.mainnet.yaml
    resources = run_program("testnet", {"managementAccess": "private"})

No Pulumi CLI and no cloud: the machinery lives in lab/program.py; this module gives it a
FakeCloud (invented ids, ARNs and addresses) answering with the fake SSH key, hacluster
password and Debian AMI below, all distinctive so a test can grep any rendered text for a leak.
The validator key is no stack config (put-keystore stores it); FAKE_SECRETS exists for the
tests that show such config is refused. Secret inputs stay visible:
`CapturedResource.secret_paths` lists every input path whose value was a secret Output, and
`is_secret(path)` checks one.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from lab import program
from lab.program import (  # noqa: F401 - re-exported for the tests
    ACCOUNT,
    NAMESPACE,
    PROGRAM,
    PROJECT,
    PROJECT_DIR,
    CapturedResource,
    FakeCloud,
    ProgramRun,
)
from tests.fixtures.fake_keys import FAKE_SSH_PRIVATE_KEY

FAKE_KEYSTORE_PASSWORD = "FAKE-keystore-password-q7Zr93"
FAKE_KEYSTORE = json.dumps(json.loads(
    (Path(__file__).parent / "fixtures" / "fake_keystore.json").read_text()))
FAKE_HACLUSTER_PASSWORD = "FAKEhaclusterPassword5vQ2"
FAKE_SECRET_VALUES = (FAKE_KEYSTORE_PASSWORD, "FAKE-keystore-ciphertext-x81Lm",
                      FAKE_HACLUSTER_PASSWORD, "FAKE-ssh-key-m4Kd")
FAKE_SECRETS = {"keystore": FAKE_KEYSTORE, "keystorePassword": FAKE_KEYSTORE_PASSWORD}
DEBIAN_AMI = "ami-0d3b5f0e6a1c2b3d4"


def fake_cloud(region: str) -> FakeCloud:
    """The tests' cloud: invented outputs, with the fake key, password and AMI above."""
    return FakeCloud(region, ssh_private_key=FAKE_SSH_PRIVATE_KEY,
                     ssh_public_key="ssh-ed25519 AAAAFAKE", password=FAKE_HACLUSTER_PASSWORD,
                     ami_id=DEBIAN_AMI)


def stack_config(stack: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Pulumi.<stack>.yaml's `config:` with overrides applied.

    Override keys without a namespace belong to icon-prep-ha; None removes a key.
    """
    return program.stack_config(stack, overrides)


def run_program(stack: str, overrides: Mapping[str, Any] | None = None, *,
                plaintext_keys: Collection[str] = ()) -> list[CapturedResource]:
    """The resources `pulumi up` would declare for `stack` (see run_stack)."""
    return run_stack(stack, overrides, plaintext_keys=plaintext_keys).resources


def run_stack(stack: str, overrides: Mapping[str, Any] | None = None, *,
              secrets: Mapping[str, str] | None = None, plaintext_keys: Collection[str] = (),
              sink: list[CapturedResource] | None = None) -> ProgramRun:
    """Run __main__.py for `stack` under mocks; exceptions (e.g. ConfigError) propagate.

    `secrets` sets `keystore`/`keystorePassword` as secret config (the program refuses
    them; listed in `plaintext_keys`, in plain text). `sink`, if given, receives every
    registered resource as it happens, so a test can see what was declared before an
    exception.
    """
    region = str(stack_config(stack, overrides).get("aws:region", "us-east-1"))
    return program.run_stack(stack, overrides, cloud=fake_cloud(region), secrets=secrets,
                             plaintext_keys=plaintext_keys, sink=sink)
