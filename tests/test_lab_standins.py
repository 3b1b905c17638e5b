"""The lab's docker / docker-compose stand-ins (lab/standins) run the product's real compose
files as the real tools would, and refuse loudly what they do not implement (on the temporary
node root of tests/standin_node.py).
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from lab.standins.packages import VERSION, build_debs
from tests.standin_node import (
    FIXTURES,
    IMAGE,
    PASSWORD,
    PYTHON,
    STANDINS,
    Node,
    files_holding,
    needs_netns,
    needs_node_python,
    standin_node,
)

pytestmark = needs_node_python


@pytest.fixture
def node(tmp_path):
    with standin_node(tmp_path) as n:
        yield n


def environ_of(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(e.split("=", 1) for e in entries if e)


@needs_netns
def test_up_runs_the_role_in_the_foreground_with_exactly_the_compose_environment(node):
    up = node.start_up("peer")
    assert node.http_get(up) == {"role": "peer", "node": os.uname().nodename,
                                 "image": IMAGE, "service": "LisbonNet"}
    pid = node.role_pid()
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1] == [
        PYTHON.encode(), str(node.path("/usr/lib/prep-ha-lab/icon_node.py")).encode(), b"peer"]
    env = environ_of(pid)
    record = Path(env.pop("PREP_HA_LAB_CONTAINER"))
    assert env == {"SERVICE": "LisbonNet", "ROLE": "3", "FASTEST_START": "false",
                   "IS_AUTOGEN_CERT": "false", "GOLOOP_KEY_STORE": "/goloop/secret/keystore.json",
                   "GOLOOP_KEY_SECRET": "/goloop/secret/keysecret",
                   "GOLOOP_P2P": "203.0.113.9:7100", "GOLOOP_P2P_LISTEN": ":7100",
                   "GOLOOP_RPC_ADDR": ":9000"}
    assert up.poll() is None  # foreground: `up` lives as long as the role process
    config = json.loads((record / "config.v2.json").read_text())
    assert config["Name"] == "/icon2-peer" and config["Config"]["Image"] == IMAGE
    # Docker keeps the full environment in config.v2.json: it holds no secret.
    assert not any(PASSWORD in e or e.startswith("KEY_PASSWORD") for e in config["Config"]["Env"])
    assert config["MountPoints"]["/goloop/secret"]["RW"] is False

    up.send_signal(signal.SIGTERM)  # what systemd does to peer.service's main process
    assert up.wait(timeout=15) == 0
    assert not Path(f"/proc/{pid}").exists()
    attached, own = node.output(up)
    assert "icon2-peer | " in attached and "SIGTERM: shutting down" in attached
    assert "up icon2-peer:" in own and PASSWORD not in own  # compose never logs values


@needs_netns
def test_peer_start_up_leaves_the_key_password_only_in_the_tmpfs_file(node):
    up = node.start_up("peer")
    node.http_get(up)
    up.send_signal(signal.SIGTERM)
    up.wait(timeout=15)
    attached, own = node.output(up)
    assert "[goloop] wallet hx" in attached  # the key was loaded, from the tmpfs
    assert PASSWORD not in attached + own
    assert files_holding(node.root, PASSWORD) == ["run/prep-ha/peer/keysecret"]
    [layer] = node.path("/var/lib/docker/overlay2").glob("*/diff")
    # ctx writes its configuration with KEY_PASSWORD's public default, not the key's.
    assert "KEY_PASSWORD: \"password123!@#\"" in (layer / "goloop/configure.yml").read_text()
    assert not node.path("/app/icon/peer/config/keysecret").exists()


@needs_netns
def test_the_stand_in_still_leaks_what_the_image_leaks_with_key_password_in_the_env(node):
    """The old layout (KEY_PASSWORD from an env_file, keystore in /goloop/config): the stand-in
    must leave the password where the real image does, or the lab's leak scan would prove
    nothing."""
    def old_layout(d: dict, s: dict) -> None:
        s["env_file"] = ["/run/prep-ha/peer/key.env"]
        s["environment"]["KEY_STORE_FILENAME"] = "keystore.json"
        for key in ("GOLOOP_KEY_STORE", "GOLOOP_KEY_SECRET"):
            del s["environment"][key]
        s["volumes"] = [v for v in s["volumes"] if not v.endswith(":/goloop/secret:ro")] + [
            "/run/prep-ha/peer/keystore.json:/goloop/config/keystore.json:ro"]

    _edit(node, old_layout)
    node.path("/run/prep-ha/peer/key.env").write_text(f"KEY_PASSWORD={PASSWORD}\n")
    up = node.start_up("peer")
    node.http_get(up)
    keysecret = node.path("/app/icon/peer/config/keysecret")  # data volume, not tmpfs
    assert keysecret.read_text() == PASSWORD and keysecret.stat().st_mode & 0o777 == 0o664
    [layer] = node.path("/var/lib/docker/overlay2").glob("*/diff")
    assert PASSWORD in (layer / "goloop/configure.yml").read_text()
    assert PASSWORD not in (layer / "goloop/.env").read_text()
    assert PASSWORD in node.path("/app/icon/peer/logs/booting.log").read_text()
    [record] = node.records()
    assert f"KEY_PASSWORD={PASSWORD}" in json.loads(record.read_text())["Config"]["Env"]
    up.send_signal(signal.SIGTERM)
    up.wait(timeout=15)
    attached, _ = node.output(up)
    assert f"KEY_PASSWORD = '{PASSWORD}'" in attached  # the image logs it: journald has it


@needs_netns
def test_a_keystore_in_the_config_dir_stops_the_peer_on_the_read_only_secret(node):
    """Why peer.service removes /app/icon/peer/config/keystore.json before a start: with it,
    ctx writes KEY_PASSWORD's default over GOLOOP_KEY_SECRET, a read-only mount here."""
    shutil.copy(FIXTURES / "fake_keystore.json", node.path("/app/icon/peer/config/keystore.json"))
    up = node.start_up("peer")
    assert up.wait(timeout=15) == 1
    attached, _ = node.output(up)
    assert "/goloop/secret/keysecret: read-only file system" in attached
    assert node.path("/run/prep-ha/peer/keysecret").read_text() == PASSWORD


@needs_netns
def test_up_exits_with_the_role_status_when_it_dies_and_down_removes_leftovers(node):
    up = node.start_up("ctz")
    assert node.http_get(up)["role"] == "ctz"
    os.kill(node.role_pid(), signal.SIGKILL)
    assert up.wait(timeout=15) == 137  # Docker's 128+9, passed on by --abort-on-container-exit
    ps = node.run("docker", "ps", "-a")
    assert "Exited (137)" in ps.stdout and "icon2-ctz" in ps.stdout
    inspect = json.loads(node.run("docker", "inspect", "icon2-ctz").stdout)
    assert inspect[0]["State"]["Running"] is False and inspect[0]["Name"] == "/icon2-ctz"
    down = node.compose("ctz", "down")
    assert down.returncode == 0, down.stderr
    assert node.records() == [] and list(node.path("/var/lib/docker/overlay2").iterdir()) == []


@needs_netns
def test_down_stops_the_running_role_and_up_then_exits_0(node):
    up = node.start_up("peer")
    node.http_get(up)
    pid = node.role_pid()
    down = node.compose("peer", "down")  # peer.service's ExecStop
    assert down.returncode == 0 and "stopped and removed icon2-peer" in down.stderr
    assert up.wait(timeout=15) == 0 and not Path(f"/proc/{pid}").exists()
    assert node.records() == [] and list(node.path("/run/prep-ha-lab").glob("*.pid")) == []


@needs_netns
def test_up_replaces_the_leftover_of_a_fenced_node(node):
    up = node.start_up("peer")
    node.http_get(up)
    pid = node.role_pid()
    up.kill()  # power off: nothing runs `down`, /run is gone after the reboot
    os.kill(pid, signal.SIGKILL)
    up.wait()
    for pidfile in node.path("/run/prep-ha-lab").glob("*.pid"):
        pidfile.unlink()
    again = node.start_up("peer")
    assert node.http_get(again)["role"] == "peer"
    assert len(node.records()) == 1
    rm = node.run("docker", "rm", "-f", "icon2-peer")
    assert rm.returncode == 0 and again.wait(timeout=15) == 0
    assert "replaced leftover" in node.output(again)[1]


@needs_netns
@pytest.mark.parametrize("break_key, message", [
    (lambda n: n.path("/run/prep-ha/peer/keysecret").write_text(""), "password for"),
    (lambda n: n.path("/run/prep-ha/peer/keystore.json").unlink(), "not found"),
    (lambda n: n.path("/run/prep-ha/peer/keystore.json").write_text('{"address": "0xab"}'),
     "does not start with 'hx'"),
    (lambda n: n.path("/run/prep-ha/peer/keystore.json").write_text("not json"),
     "not a keystore JSON"),
])
def test_a_peer_with_a_bad_key_does_not_start(node, break_key, message):
    break_key(node)
    up = node.start_up("peer")
    assert up.wait(timeout=15) == 1
    attached, own = node.output(up)
    assert message in attached and "the node does not start" in attached
    assert "exited with status 1" in own


def _edit(node: Node, change) -> None:
    doc = yaml.safe_load(Path(node.yml("peer")).read_text())
    change(doc, doc["services"]["icon2-node"])
    Path(node.yml("peer")).write_text(yaml.safe_dump(doc))


@pytest.mark.parametrize("change, message", [
    (lambda d, s: s.update(network_mode="host"), "services.icon2-node.network_mode"),
    (lambda d, s: d.update(networks={}), "top-level key 'networks'"),
    (lambda d, s: s.update(restart=False), "restart"),  # an unquoted `no`
    (lambda d, s: s.update(ports=["9000"]), "ports: '9000'"),
    (lambda d, s: s.update(ports=["127.0.0.1:9000:9000"]), "ports: '127.0.0.1:9000:9000'"),
    (lambda d, s: s.update(ports=["9001:9000"]), "ports: '9001:9000'"),
    (lambda d, s: s["environment"].update(DEBUG=True), "environment.DEBUG"),
    (lambda d, s: s.update(environment=["ROLE=3"]), "environment: only the mapping form"),
    (lambda d, s: s["environment"].update(SERVICE="$NET"), "'$' in services.icon2-node"),
    (lambda d, s: s.update(volumes=["data:/goloop/data"]), "volumes: 'data:/goloop/data'"),
    (lambda d, s: s.update(volumes=["/app/icon/data:/goloop/data:z"]), "volumes:"),
    (lambda d, s: s.update(image="iconloop/icon2-node"), "image 'iconloop/icon2-node'"),
    (lambda d, s: s.update(image="nginx:1.25"), "image 'nginx:1.25'"),
    (lambda d, s: d["services"].update(other={"image": IMAGE}), "exactly one service"),
    (lambda d, s: d.update(version="2"), "version"),
])
def test_compose_keys_it_does_not_implement_are_refused_by_name(node, change, message):
    _edit(node, change)
    for command in ("up", "down"):  # compose validates the file for every command
        result = node.compose("peer", command)
        assert result.returncode == 1 and message in result.stderr, result.stderr
    assert node.records() == []


def test_the_image_comes_from_the_units_environment_file(node):
    """Compose interpolates ${ICON_IMAGE:?...}: without the unit's EnvironmentFile it refuses,
    naming the file; with it, the container runs that image (prep-ha-image set)."""
    env = dict(node.env)
    del node.env["ICON_IMAGE"]
    result = node.compose("peer", "up")
    assert result.returncode == 1 and "/etc/prep-ha/icon-image.env" in result.stderr
    assert node.records() == []
    node.env = {**env, "ICON_IMAGE": IMAGE + "-next"}
    up = node.start_up("peer")
    assert node.http_get(up)["image"] == IMAGE + "-next"


@pytest.mark.parametrize("args, message", [
    (["up", "-d"], "'-d'"),
    (["up", "--build"], "'--build'"),
    (["down", "-v"], "'-v'"),
    (["--verbose", "up"], "'--verbose'"),
    (["ps"], "command 'ps'"),
    ([], "no command"),
])
def test_compose_options_it_does_not_implement_are_refused(node, args, message):
    result = node.run("docker-compose", "-p", "peer", "-f", node.yml("peer"), *args)
    assert result.returncode == 1 and message in result.stderr


@pytest.mark.parametrize("args, message", [
    (["run", IMAGE], "exactly one -v"),
    (["run", "--network", "host", IMAGE], "'--network'"),
    (["run", "-v", "/k:/key", IMAGE, "server", "start"], "only `ks gen"),
    (["exec", "icon2-ctz", "goloop"], "command 'exec'"),
    (["pull", "--all-tags", IMAGE], "'--all-tags'"),
    (["pull", "iconloop/icon2-node"], "image"),
    (["pull", "iconloop/icon2-nod:v1.4.6"], "image"),
    (["inspect", "nothing"], "No such object: nothing"),
])
def test_docker_refuses_what_it_does_not_implement(node, args, message):
    result = node.run("docker", *args)
    assert result.returncode == 1 and message in result.stderr


def test_docker_pull_stands_the_image_in(node):
    result = node.run("docker", "pull", IMAGE)  # prep-ha-pull-image.service
    assert result.returncode == 0 and "no registry" in result.stdout


def test_the_stand_ins_need_docker_service(node):
    assert node.run("dockerd.py", "stop").returncode == 0
    for result in (node.run("docker", "pull", IMAGE), node.compose("peer", "up")):
        assert result.returncode == 1 and "Is the docker daemon running?" in result.stderr


def test_a_daemon_json_it_does_not_implement_stops_docker_service(node):
    node.path("/etc/docker/daemon.json").write_text('{"log-driver": "journald"}')
    result = node.run("dockerd.py", "start")
    assert result.returncode == 1 and "'log-driver'" in result.stderr


def _with_env_file(node: Node) -> None:
    _edit(node, lambda d, s: s.update(env_file=["/run/prep-ha/peer/key.env"]))


def test_a_missing_env_file_fails_up_and_down(node):
    _with_env_file(node)
    for command in ("up", "down"):
        result = node.compose("peer", command)
        assert result.returncode == 1
        assert "Couldn't find env file: /run/prep-ha/peer/key.env" in result.stderr


def test_a_missing_bind_source_is_refused_not_created(node):
    secret_dir = node.path("/run/prep-ha/peer")  # peer.service not running: no RuntimeDirectory
    shutil.rmtree(secret_dir)
    result = node.compose("peer", "up")
    assert result.returncode == 1
    assert "bind source" in result.stderr and str(secret_dir) in result.stderr
    assert not secret_dir.exists() and node.records() == []


@pytest.mark.parametrize("line", [
    'KEY_PASSWORD="quoted"', "KEY_PASSWORD='quoted'", "KEY_PASSWORD=pa$word",
    "KEY_PASSWORD=pass #word", "KEY_PASSWORD= padded", "KEY_PASSWORD=tab\tend ",
])
def test_env_file_values_docker_compose_would_alter_are_refused(node, line):
    _with_env_file(node)
    node.path("/run/prep-ha/peer/key.env").write_text(line + "\n")
    result = node.compose("peer", "up")
    assert result.returncode == 1 and "the value of KEY_PASSWORD" in result.stderr
    assert line.split("=", 1)[1].strip() not in result.stderr  # never print a value


def test_env_file_lines_that_are_not_key_value_are_refused(node):
    _with_env_file(node)
    node.path("/run/prep-ha/peer/key.env").write_text("# comment\n\nexport KEY_PASSWORD=x\n")
    result = node.compose("peer", "up")
    assert result.returncode == 1 and "line 3: not a KEY=VALUE line" in result.stderr


def test_debs_are_reproducible_and_install_the_stand_ins(tmp_path):
    first, second = build_debs(tmp_path / "a"), build_debs(tmp_path / "b")
    assert [p.name for p in first] == ["docker.io_0.lab1_all.deb",
                                       "docker-compose_0.lab1_all.deb"]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    docker_io, compose = first

    def field(deb: Path, name: str) -> str:
        return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True,
                              text=True, check=True).stdout.strip()

    def contents(deb: Path) -> dict[str, str]:
        listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True,
                                 text=True, check=True).stdout
        return {line.split()[-1]: line.split()[0] for line in listing.splitlines()}

    assert field(docker_io, "Package") == "docker.io" and field(docker_io, "Version") == VERSION
    assert field(compose, "Depends") == f"docker.io (= {VERSION}), python3, python3-yaml"
    assert {"./usr/bin/docker": "-rwxr-xr-x", "./usr/lib/prep-ha-lab/icon_node.py": "-rw-r--r--",
            "./usr/lib/prep-ha-lab/dockerd.py": "-rw-r--r--",
            "./lib/systemd/system/docker.service": "-rw-r--r--"}.items() \
        <= contents(docker_io).items()
    assert contents(compose)["./usr/bin/docker-compose"] == "-rwxr-xr-x"
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", str(docker_io), str(control)], check=True)
    postinst = (control / "postinst").read_text()
    assert "deb-systemd-helper enable docker.service" in postinst
    assert "deb-systemd-invoke start docker.service" in postinst
    # Debian's version comparison: the epoch beats Debian 12's packages.
    for debian in ("20.10.24+dfsg1-1+deb12u1+b6", "1.29.2-3"):
        assert subprocess.run(["dpkg", "--compare-versions", VERSION, "gt", debian]).returncode == 0


def test_docker_service_is_an_enabled_oneshot_that_stays_active():
    unit = configparser.ConfigParser(interpolation=None)
    unit.read_string((STANDINS / "docker.service").read_text())
    assert unit["Service"]["Type"] == "oneshot" and unit["Service"]["RemainAfterExit"] == "yes"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "/usr/lib/prep-ha-lab/dockerd.py start" in unit["Service"]["ExecStart"]


@needs_netns
def test_the_packaged_files_run_the_citizen(node, tmp_path):
    icon_node = node.path("/usr/lib/prep-ha-lab/icon_node.py")
    icon_node.unlink()
    for deb in build_debs(tmp_path / "debs"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(node.root)], check=True)
    assert not icon_node.is_symlink()
    # On a node the scripts find dockerd.py in /usr/lib/prep-ha-lab; here it is under ROOT.
    node.env["PYTHONPATH"] = str(node.path("/usr/lib/prep-ha-lab"))
    node.scripts = {"docker": node.path("/usr/bin/docker"),
                    "docker-compose": node.path("/usr/bin/docker-compose"),
                    "dockerd.py": node.path("/usr/lib/prep-ha-lab/dockerd.py")}
    assert node.run("dockerd.py", "start").returncode == 0  # docker.service's ExecStart
    assert node.run("docker", "pull", IMAGE).returncode == 0
    up = node.start_up("ctz")
    assert node.http_get(up)["role"] == "ctz"
    assert node.compose("ctz", "down").returncode == 0 and up.wait(timeout=15) == 0
