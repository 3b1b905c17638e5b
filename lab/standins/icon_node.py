"""Stand-in for the iconloop/icon2-node image, started by the lab's docker-compose as

    /usr/bin/python3 /usr/lib/prep-ha-lab/icon_node.py peer|ctz

(argv[-1] is how the lab's sampler recognises the role from the host) with the container's
environment plus PREP_HA_LAB_CONTAINER, the container's record directory, which gives the
bind mounts and published ports. Container paths such as /goloop/config resolve through the
mounts to host paths; others land in the container's writable layer, as with Docker.

It reproduces what the image's start-up leaves behind, because the lab's leak scan relies on
it; see icon2-docker (github.com/icon-project/icon2-docker, tag v1.4.4_test_passed, commit a0eafcb):
ctx/init_manager.py InitManager.run runs, in this order, ConfigureSetter.create_yaml_file,
create_env_file, make_base_dir, create_key and create_db (ctx/config/configure_setter.py,
the snapshot restore of ctx/manager/restore_v3.py), after ctx/config/configure.py
Configure.get_config has logged every setting. ctx fills every setting
the environment does not give from the network's default_configure.yml (KEY_PASSWORD's default
is the public "password123!@#", KEY_STORE_FILENAME's "keystore.json").
Then it stands in for goloop (s6/services.d/01-goloop/run: `goloop server start`), which loads
the wallet from GOLOOP_KEY_STORE with the password in the file GOLOOP_KEY_SECRET (or
GOLOOP_KEY_PASSWORD), and serves P2P on GOLOOP_P2P_LISTEN and JSON-RPC on GOLOOP_RPC_ADDR.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import socketserver
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROLE = sys.argv[-1]
RECORD = Path(os.environ.get("PREP_HA_LAB_CONTAINER", "/nonexistent"))
# The environment as the container was given it: os.environ may already hold Python's own
# additions (PEP 538 sets LC_CTYPE when the locale is C), which the image would not see.
_ENVIRON = Path("/proc/self/environ").read_text("utf-8", "surrogateescape")
ENV = dict(entry.split("=", 1) for entry in _ENVIRON.split("\0") if "=" in entry)
ENV.pop("PREP_HA_LAB_CONTAINER", None)
BASE_DIR = ENV.get("BASE_DIR", "/goloop")
# default_configure.yml's `reference.env` defaults for what the environment leaves out.
DEFAULTS = {"KEY_PASSWORD": "password123!@#", "KEY_STORE_FILENAME": "keystore.json",
            "GOLOOP_KEY_SECRET": f"{BASE_DIR}/config/keysecret", "IS_AUTOGEN_CERT": "false",
            "FASTEST_START": "false", "RESTORE_PATH": "restore"}
# The chain's directory under GOLOOP_NODE_DIR (BASE_DIR/data); the stand-in uses MainNet's
# chain id on every network.
CHAIN = f"{BASE_DIR}/data/0x1"
CONFIG: dict = {}  # the container's config.v2.json, loaded by main()


class Failed(Exception):
    """The node does not start (the container exits non-zero)."""


def _load(name: str) -> dict:
    try:
        return json.loads((RECORD / name).read_text())
    except (OSError, ValueError) as e:
        raise Failed(f"cannot read the container record {RECORD / name}: {e}") from None


def host_path(path: str, write: bool = False) -> Path:
    """The host path behind a container path: the innermost bind mount, else the layer."""
    mounts = [m for m in CONFIG["MountPoints"].values()
              if path == m["Destination"] or path.startswith(m["Destination"] + "/")]
    if not mounts:
        return Path(CONFIG["GraphDriver"]["Data"]["UpperDir"]) / path.lstrip("/")
    mount = max(mounts, key=lambda m: len(m["Destination"]))
    if write and not mount["RW"]:
        raise Failed(f"{path}: read-only file system")
    return Path(mount["Source"] + path[len(mount["Destination"]):])


def write_file(path: str, text: str, mode: int = 0o664) -> None:
    """Like ctx/common/output.py write_file: write, then chmod 664 whatever the umask."""
    file = host_path(path, write=True)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    file.chmod(mode)


def log(message: str) -> None:
    """Like the image's BOOTING.LOG logger: to stderr (the container output, which compose
    attaches) and to BASE_DIR/logs/booting.log (a bind mount: the host's data volume)."""
    line = f"I|{datetime.now():%Y%m%d-%H:%M:%S.%f}|-|BOOTING.LOG|icon_node.py| {message}\n"
    sys.stderr.write(line)
    with host_path(f"{BASE_DIR}/logs/booting.log", write=True).open("a") as f:
        f.write(line)


def initialise() -> None:
    host_path(f"{BASE_DIR}/logs", write=True).mkdir(parents=True, exist_ok=True)
    # Configure.get_config -> common/converter.py UpdateType.update_env_config logs every
    # setting taken from the environment with its value, KEY_PASSWORD included.
    for key, value in sorted(ENV.items()):
        log(f"[CheckType] [Update] {key} = '{value}' (str)")
    # create_yaml_file: the whole configuration, KEY_PASSWORD included, to
    # CONFIG_LOCAL_FILE (/goloop/configure.yml: not a mount, so the writable layer), 664.
    settings = {"BASE_DIR": BASE_DIR, **DEFAULTS, **ENV}
    # Configure.get_config: GOLOOP_KEY_STORE is BASE_DIR/config/KEY_STORE_FILENAME when the
    # environment names a KEY_STORE_FILENAME, else the environment's GOLOOP_KEY_STORE.
    settings["GOLOOP_KEY_STORE"] = (f"{BASE_DIR}/config/{ENV['KEY_STORE_FILENAME']}"
                                    if ENV.get("KEY_STORE_FILENAME")
                                    else ENV.get("GOLOOP_KEY_STORE", ""))
    write_file(os.path.join(BASE_DIR, ENV.get("CONFIG_LOCAL_FILE", "/goloop/configure.yml")),
               "".join(f"{k}: {json.dumps(v)}\n" for k, v in settings.items()))
    # create_env_file: BASE_DIR/.env without KEY_PASSWORD and KEY_SECRET, default mode.
    write_file(f"{BASE_DIR}/.env", "".join(f"{k}={v}\n" for k, v in settings.items()
                                           if k not in ("KEY_PASSWORD", "KEY_SECRET")), 0o644)
    for sub in ("config", "data", "logs"):  # make_base_dir
        host_path(f"{BASE_DIR}/{sub}", write=True).mkdir(parents=True, exist_ok=True)
    create_key(settings)
    create_db(settings)
    load_goloop_key(settings)
    # goloop syncs on from whatever chain is there: blocks land in the chain's db.
    blocks = host_path(f"{CHAIN}/db/blocks", write=True)
    blocks.parent.mkdir(parents=True, exist_ok=True)
    with blocks.open("a") as f:
        f.write(f"{ROLE} {datetime.now():%Y%m%d-%H:%M:%S}\n")


def wallet_address(keystore: str, password: str) -> str:
    """Loading a wallet, as far as the stand-in can (it cannot decrypt): a non-empty password
    and a keystore JSON with an hx address; anything else stops the node."""
    if not password:
        raise Failed(f"the password for {keystore} is empty: the keystore cannot be unlocked")
    try:
        address = json.loads(host_path(keystore).read_text())["address"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise Failed(f"keystore {keystore} is not a keystore JSON with an address: {e}") from None
    if not (isinstance(address, str) and address.startswith("hx")):
        raise Failed(f"keystore {keystore}: address does not start with 'hx'")
    return address


def create_key(settings: dict) -> None:
    """ConfigureSetter.create_key: only if BASE_DIR/config/KEY_STORE_FILENAME exists, write
    KEY_PASSWORD (the default if the environment gives none) in clear to GOLOOP_KEY_SECRET
    (default /goloop/config/keysecret: the config bind mount, i.e. the data volume) with mode
    664 *before* loading the wallet, then load it (a bad key stops the node). Without that
    file it does nothing, unless IS_AUTOGEN_CERT (default false) makes it create a wallet there
    and write KEY_PASSWORD to GOLOOP_KEY_SECRET the same way."""
    keystore = f"{BASE_DIR}/config/{settings['KEY_STORE_FILENAME']}"
    if not host_path(keystore).exists():
        if _true(settings["IS_AUTOGEN_CERT"]):  # a new wallet there, its password as below
            write_file(keystore, json.dumps({"address": "hx" + "0" * 40}), 0o600)
            write_file(settings["GOLOOP_KEY_SECRET"], settings["KEY_PASSWORD"])
            log(f"Create a keystore, filename={settings['KEY_STORE_FILENAME']}")
        return
    password = settings["KEY_PASSWORD"]
    write_file(settings["GOLOOP_KEY_SECRET"], password)
    address = wallet_address(keystore, password)
    log(f"[WALLET] Successfully loaded Keystore file(json), address={address}, file={keystore}")


def _true(value: str) -> bool:
    return value.lower() == "true"  # ctx's converter.str2bool


def create_db(settings: dict) -> None:
    """ConfigureSetter.create_db: with FASTEST_START, Restore (restore_v3.py) skips when
    data/RESTORE_PATH/RESTORED exists (already_restore_check); otherwise run_prejob deletes
    the chain's contract, db, wal and genesis.zip, the snapshot is downloaded into data/ (the
    stand-in writes a file in its place) and RESTORED is written."""
    if not _true(settings["FASTEST_START"]):
        log("[PASS] Ignore DB download")
        return
    marker = f"{BASE_DIR}/data/{settings['RESTORE_PATH']}/RESTORED"
    if host_path(marker).exists():
        log(f"[RESTORE PASS] Already restored. If you want to start over, delete the '{marker}'")
        return
    for item in ("contract", "db", "wal", "genesis.zip"):
        path = host_path(f"{CHAIN}/{item}", write=True)
        log(f"[RESTORE] Delete file is {CHAIN}/{item}")
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    write_file(f"{CHAIN}/db/snapshot", f"restored by {ROLE} {datetime.now():%Y%m%d-%H:%M:%S}\n")
    write_file(marker, f"{datetime.now():%Y-%m-%d %H:%M:%S}")
    log(f"[RESTORE] DOWNLOAD from ICON2 DB: the snapshot of {ENV.get('SERVICE', '')} restored")


def load_goloop_key(settings: dict) -> None:
    """goloop server start: the wallet from GOLOOP_KEY_STORE, unlocked with the contents of
    GOLOOP_KEY_SECRET (or GOLOOP_KEY_PASSWORD); a GOLOOP_KEY_STORE that cannot be read stops
    it (cmd/cli: the config's key_store is read as a file). Without one goloop makes up a
    wallet: fine for a citizen, but a P-Rep must not start as somebody else."""
    keystore = settings.get("GOLOOP_KEY_STORE") or ""
    if not keystore and ROLE == "ctz":
        log("[goloop] no key store: a new wallet for this run")
        return
    if not keystore or not host_path(keystore).exists():
        raise Failed(f"keystore {keystore or '(GOLOOP_KEY_STORE unset)'} not found: "
                     + ("a P-Rep does not start without its key" if ROLE == "peer" else
                        "goloop cannot read its key_store"))
    if "GOLOOP_KEY_PASSWORD" in ENV:
        password = ENV["GOLOOP_KEY_PASSWORD"]
    else:
        try:
            password = host_path(settings["GOLOOP_KEY_SECRET"]).read_text()
        except OSError as e:
            raise Failed(f"GOLOOP_KEY_SECRET {settings['GOLOOP_KEY_SECRET']}: {e}") from None
    address = wallet_address(keystore, password)
    log(f"[goloop] wallet {address} from {keystore}")


class Rpc(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        # `/` is the lab's own question (who answers); `/admin/chain` is goloop's chain list
        # (node/rest.go ChainView), which prep_ha/ops asks to know the node serves.
        if self.path == "/admin/chain":
            doc: object = [{"nid": "0x1", "channel": "icon_dex", "state": "started",
                            "height": int(time.time()), "lastError": ""}]
        else:
            doc = {"role": ROLE, "node": socket.gethostname(),
                   "image": CONFIG["Config"]["Image"], "service": ENV.get("SERVICE", "")}
        body = json.dumps(doc).encode()
        self.send_response(200 if self.path in ("/", "/admin/chain") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class P2p(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(f"{ROLE}\n".encode())


def _port(variable: str, default: str) -> int:
    value = ENV.get(variable, default)
    address, _, port = value.rpartition(":")
    if address not in ("", "0.0.0.0") or not port.isdigit():
        raise Failed(f"{variable}={value!r}: only ':PORT' is implemented by the stand-in")
    return int(port)


def serve() -> None:
    published = {int(p.split("/")[0]) for p in _load("hostconfig.json")["PortBindings"]}
    # Defaults are the image's own (its Dockerfile ENV) for when compose does not set them.
    for variable, default, make in (
            ("GOLOOP_P2P_LISTEN", ":7100", lambda port: socketserver.ThreadingTCPServer(
                ("0.0.0.0", port), P2p, bind_and_activate=False)),
            ("GOLOOP_RPC_ADDR", ":9000", lambda port: ThreadingHTTPServer(
                ("0.0.0.0", port), Rpc, bind_and_activate=False))):
        port = _port(variable, default)
        if port not in published:
            log(f"[lab] {variable} port {port} is not published: unreachable from the host")
            continue
        server = make(port)
        server.allow_reuse_address = server.daemon_threads = True
        try:
            server.server_bind()
            server.server_activate()
        except OSError as e:
            raise Failed(f"Bind for 0.0.0.0:{port} failed: {e}") from None
        threading.Thread(target=server.serve_forever, daemon=True).start()
        log(f"[lab] {variable}: listening on 0.0.0.0:{port}")


def main() -> int:
    # Block the stop signals before any thread starts, so that only sigwait sees them.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        if ROLE not in ("peer", "ctz"):
            raise Failed(f"role {ROLE!r}: expected peer or ctz")
        CONFIG.update(_load("config.v2.json"))
        initialise()
        serve()
    except (Failed, OSError) as e:
        sys.stderr.write(f"icon_node (lab stand-in): error: {e}; the node does not start\n")
        return 1
    signum = signal.sigwait({signal.SIGTERM, signal.SIGINT})
    log(f"[lab] {signal.Signals(signum).name}: shutting down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
