"""Shared by the lab's deploy and IMDS tests: moto's server in this process, on loopback.

In-process on purpose: lab/imds.py reads moto's backends directly, as the cloud host does.
moto's state is per process, so each deploy starts from a reset.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.deploy import Deployment, deploy
from lab.motocloud import seed_debian_amis
from tests.pulumi_mocks import FAKE_KEYSTORE

REGION = "eu-central-1"
# Distinctive, so a test can search every artefact for it.
LAB_KEYSTORE_PASSWORD = "LAB-keystore-password-Wq81zT"


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's server app (as lab/cloud.py serves it) on a free loopback port; the endpoint."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app),
                         threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


def reset_moto(endpoint: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))


def ssh_keypair(directory: Path) -> tuple[str, str]:
    """A fresh ed25519 key pair made by ssh-keygen: (private OpenSSH text, public line)."""
    path = directory / "admin"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab", "-f", str(path)],
                   check=True)
    return path.read_text(), Path(f"{path}.pub").read_text().strip()


def deploy_testnet(endpoint: str, ssh_key: tuple[str, str]) -> Deployment:
    """A clean moto with the Debian AMIs, and the testnet stack deployed into it."""
    reset_moto(endpoint)
    seed_debian_amis(REGION)
    with tempfile.TemporaryDirectory() as tmp:
        keystore, password = key_files(Path(tmp))
        return deploy("testnet", endpoint=endpoint, ca_bundle=None, region=REGION,
                      ssh_key=ssh_key, keystore_file=keystore, keystore_password_file=password)


def key_files(directory: Path) -> tuple[Path, Path]:
    """The operator's keystore file and 0600 password file, as put-keystore reads them."""
    keystore, password = directory / "keystore.json", directory / "keystore-password"
    keystore.write_text(FAKE_KEYSTORE)
    password.touch(mode=0o600)
    password.write_text(LAB_KEYSTORE_PASSWORD + "\n")
    return keystore, password
