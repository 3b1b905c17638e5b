"""What the nodes run with the stack's secrets, run for real with the Secrets Manager (moto),
pcs and chpasswd replaced by recorders: values travel through files in tmpfs and stdin only,
never argv; a failed fetch stops; the firewall keeps IMDS for root in a real netns."""

from __future__ import annotations

import io
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml

from prep_ha.cluster.model import build_model
from prep_ha.cluster.pcs import corosync_conf, render_script
from prep_ha.config import load_stack_file
from prep_ha.userdata import node_payload, render_user_data
from tests.pulumi_mocks import FAKE_KEYSTORE, PROJECT_DIR
from tests.test_userdata import files_of, sample

PASSWORD = "FAKE-hacluster-Zq81"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netns, iptables)")


def node_file(path: str) -> str:
    return files_of(node_payload(sample()))[path]["content"]


def stub(bindir: Path, name: str, body: str) -> None:
    bindir.mkdir(exist_ok=True)
    (bindir / name).write_text("#!/bin/bash\n" + body + "\n")
    (bindir / name).chmod(0o755)


# --- prep-ha-secret ------------------------------------------------------------------------

@pytest.fixture
def secret_tool(tmp_path, monkeypatch):
    """Runs prep-ha-secret in-process against moto; returns (run, client)."""
    moto = pytest.importorskip("moto")
    import boto3

    script = tmp_path / "prep-ha-secret"
    script.write_text(node_file("/usr/local/sbin/prep-ha-secret"))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    with moto.mock_aws():
        client = boto3.client("secretsmanager", region_name="eu-central-1")

        def run(*argv: str) -> tuple[int, str, str]:
            monkeypatch.setattr(sys, "argv", ["prep-ha-secret", *argv])
            out, err = io.StringIO(), io.StringIO()
            with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as e:
                runpy.run_path(str(script), run_name="__main__")
            return e.value.code, out.getvalue(), err.getvalue()

        yield run, client


def test_secret_goes_to_a_root_only_tmpfs_file_exactly(secret_tool):
    run, client = secret_tool
    client.create_secret(Name="c/keystore-password", SecretString=PASSWORD)
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        target = Path(shm, "keysecret")
        code, out, err = run("--to", str(target), "c/keystore-password")
        assert (code, out) == (0, "")
        assert target.read_text() == PASSWORD  # no newline: goloop reads the file as is
        assert target.stat().st_mode & 0o777 == 0o400
    assert PASSWORD not in err


def test_secret_is_never_written_to_a_disk(secret_tool, tmp_path):
    run, client = secret_tool
    client.create_secret(Name="c/keystore-password", SecretString=PASSWORD)
    code, _, err = run("--to", str(tmp_path / "keysecret"), "c/keystore-password")
    assert code == 1 and "not on a tmpfs" in err
    assert not list(tmp_path.glob("keysecret*"))


def test_a_secret_without_a_value_names_the_fix(secret_tool):
    run, client = secret_tool
    client.create_secret(Name="c/keystore")  # what `pulumi up` creates: no value
    code, _, err = run("--keystore", "--to", "/dev/shm/never", "c/keystore")
    assert code == 3 and "has no value yet" in err and "put-keystore" in err
    assert not Path("/dev/shm/never").exists()


def test_keystore_check_refuses_what_is_not_a_keystore(secret_tool):
    run, client = secret_tool
    client.create_secret(Name="c/keystore", SecretString='{"address": "0x1"}')
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        code, _, err = run("--keystore", "--to", f"{shm}/keystore.json", "c/keystore")
        assert code == 1 and "does not hold an ICON keystore" in err
        assert os.listdir(shm) == []
    client.put_secret_value(SecretId="c/keystore", SecretString=FAKE_KEYSTORE)
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        assert run("--keystore", "--to", f"{shm}/keystore.json", "c/keystore")[0] == 0
        assert json.loads(Path(shm, "keystore.json").read_text())["address"].startswith("hx")


# --- the hacluster password: stdin only, rotation --------------------------------------------

@pytest.fixture
def pcs_recorder(tmp_path, node_tools):
    """A bin dir with prep-ha-secret (prints PASSWORD), chpasswd and pcs recording argv+stdin."""
    bindir, log, conf = tmp_path / "bin", tmp_path / "log", tmp_path / "cluster.conf"
    cfg = load_stack_file(str(PROJECT_DIR / "Pulumi.testnet.yaml"), stack="testnet")
    conf.write_text(corosync_conf(build_model(cfg)))  # what `pcs cluster setup` writes
    # The nodes' pcs reads the node list (the one call the script makes of it, answered
    # here ahead); the recorder stands in for everything else.
    show = ["pcs", f"--corosync_conf={conf}", "cluster", "config", "show",
            "--output-format", "json"]
    config = node_tools.run(show, paths=[conf])
    assert config.returncode == 0, config.stderr
    (tmp_path / "config.json").write_text(config.stdout)
    stub(bindir, "fetch", f"echo {PASSWORD}")
    stub(bindir, "chpasswd", f'echo "chpasswd $* <<$(cat)" >> {log}')
    stub(bindir, "pcs", f'''if [ "$*" = "{' '.join(show[2:])}" ]; then
  exec cat {tmp_path / "config.json"}; fi
[ "$1" = status ] && exit 1
[ "$1 $2" = "cluster setup" ] && cp {conf} "$COROSYNC_CONF"
if [ "$1 $2" = "host auth" ]; then echo "pcs $* <<$(cat)" >> {log}
else echo "pcs $*" >> {log}; fi''')
    return bindir, log


def _script(tmp_path: Path, bindir: Path, text: str) -> Path:
    script = tmp_path / "script"
    script.write_text(text.replace("/usr/local/sbin/prep-ha-secret", str(bindir / "fetch")))
    return script


def _run(bindir: Path, script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                          env={"PATH": f"{bindir}:/usr/bin:/bin",
                               "COROSYNC_CONF": str(script.parent / "corosync.conf")})


def test_rotation_revokes_tokens_then_auth_sends_the_password_on_stdin(tmp_path, pcs_recorder):
    bindir, log = pcs_recorder
    script = _script(tmp_path, bindir, node_file("/usr/local/sbin/prep-ha-hacluster"))
    assert _run(bindir, script, "revoke").returncode == 0
    proc = _run(bindir, script, "auth")
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().splitlines() == [
        f"chpasswd  <<hacluster:{PASSWORD}",
        "pcs pcsd deauth",
        # Hosts and link-0 addresses from the local corosync.conf, the password on stdin.
        f"pcs host auth prep-ha-testnet-1 addr=10.41.2.11 prep-ha-testnet-2 addr=10.41.2.12 "
        f"-u hacluster <<{PASSWORD}",
    ]


def test_bootstrap_setup_sends_the_password_on_stdin_and_stops_when_it_cannot(tmp_path,
                                                                              pcs_recorder):
    bindir, log = pcs_recorder
    cfg = load_stack_file(str(PROJECT_DIR / "Pulumi.testnet.yaml"), stack="testnet")
    text = render_script(build_model(cfg), hacluster_secret_id=cfg.hacluster_secret_name)
    script = _script(tmp_path, bindir, text)
    proc = _run(bindir, script, "setup")
    assert proc.returncode == 0, proc.stderr
    auths = [ln for ln in log.read_text().splitlines() if ln.startswith("pcs host auth")]
    assert auths and all(ln.endswith(f"-u hacluster <<{PASSWORD}") for ln in auths)
    assert not any(PASSWORD in ln.split("<<")[0] for ln in auths)  # never an argument

    log.unlink()
    (tmp_path / "corosync.conf").unlink()  # fresh nodes again
    stub(bindir, "fetch", "exit 1")  # Secrets Manager unreachable
    proc = _run(bindir, script, "setup")
    assert proc.returncode == 1
    assert "cannot read the hacluster password (prep-ha-testnet/hacluster-password)" in \
        proc.stderr
    assert "host auth" not in (log.read_text() if log.exists() else "")
    assert "cluster setup" not in (log.read_text() if log.exists() else "")


# --- the firewall ----------------------------------------------------------------------------

@needs_root
@pytest.mark.skipif(shutil.which("iptables") is None or shutil.which("setpriv") is None,
                    reason="needs iptables and setpriv")
def test_imds_answers_root_only_and_containers_never_reach_cluster_ports(tmp_path):
    """In a netns of its own: IMDS's address on lo with a listener; the node's firewall."""
    ns = f"p9-fw-{os.getpid()}"
    script = tmp_path / "prep-ha-firewall"
    script.write_text(node_file("/usr/local/sbin/prep-ha-firewall"))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        def inns(*argv: str, user: bool = False) -> subprocess.CompletedProcess:
            drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if user else []
            return subprocess.run(["ip", "netns", "exec", ns, *drop, *argv],
                                  capture_output=True, text=True, timeout=30)

        inns("ip", "link", "set", "lo", "up")
        inns("ip", "addr", "add", "169.254.169.254/32", "dev", "lo")
        listener = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m",
                                     "http.server", "--bind", "169.254.169.254", "80"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            probe = (f"{sys.executable}", "-c", "import urllib.request,sys\n"
                     "try: urllib.request.urlopen('http://169.254.169.254/', timeout=3)\n"
                     "except OSError as e: sys.exit(f'refused: {e}')")
            for _ in range(50):
                if inns(*probe).returncode == 0:
                    break
            assert inns(*probe, user=True).returncode == 0  # before: anyone
            first = inns("bash", str(script))
            assert first.returncode == 0, first.stderr
            assert inns("bash", str(script)).returncode == 0  # idempotent
            assert inns(*probe).returncode == 0  # root still
            refused = inns(*probe, user=True)
            assert refused.returncode != 0 and "refused" in refused.stderr
            rules = inns("iptables", "-S").stdout
            assert rules.count("-A OUTPUT -j PREP-HA-IMDS") == 1
            for hook in ("INPUT", "DOCKER-USER"):
                for bridge in ("docker0", "br-+"):
                    assert rules.count(f"-A {hook} -i {bridge} -j PREP-HA-CONTAINERS") == 1
            assert "--dports 2224,3121,5403:5406,9664 -j DROP" in rules
            assert "-d 169.254.169.254/32 -j DROP" in rules
            assert "fd00:ec2::254/128" in inns("ip6tables", "-S").stdout
        finally:
            listener.kill()
            listener.wait()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


# --- pcsd and sshd ---------------------------------------------------------------------------

def test_pcsd_listens_on_the_heartbeat_address_only():
    conf = node_file("/etc/systemd/system/pcsd.service.d/prep-ha-bind.conf")
    assert "Environment=PCSD_BIND_ADDR=10.41.2.11" in conf.splitlines()
    # The packaged default leaves it unset, so the drop-in is what pcsd sees.
    default = Path("/etc/default/pcsd")
    if default.exists():
        assert not any(ln.startswith("PCSD_BIND_ADDR") for ln in default.read_text().splitlines())


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
def test_host_key_is_installed_once_from_the_secret(tmp_path):
    etc, bindir, log = tmp_path / "etc/ssh", tmp_path / "bin", tmp_path / "log"
    etc.mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)
    # The AMI's aws CLI (it runs before the payload), answering for this node's secret only.
    stub(bindir, "aws", f'[ "$*" = "secretsmanager get-secret-value --region eu-central-1 '
                        f'--output text --secret-id prep-ha-testnet-1/ssh-host-key --query '
                        f'SecretString" ] && cat {tmp_path / "k"}')
    stub(bindir, "systemctl", f'echo "systemctl $*" >> {log}')
    doc = yaml.safe_load(render_user_data("prep-ha-testnet-1", "eu-central-1", "b",
                                          ssh_host_key=True))
    assert doc["runcmd"][0] == ["/usr/local/sbin/prep-ha-ssh-host-key"]  # before the payload
    [text] = [f["content"] for f in doc["write_files"]
              if f["path"] == "/usr/local/sbin/prep-ha-ssh-host-key"]
    script = _script(tmp_path, bindir, text.replace("/etc/ssh", str(etc)))
    for expected in ("ssh host key installed", "already installed"):
        proc = _run(bindir, script)
        assert proc.returncode == 0 and expected in proc.stdout, proc.stderr
    assert (etc / "ssh_host_ed25519_key").read_text() == (tmp_path / "k").read_text()
    assert (etc / "ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600
    assert (etc / "ssh_host_ed25519_key.pub").read_text().split()[:2] == \
        (tmp_path / "k.pub").read_text().split()[:2]
    assert log.read_text() == "systemctl reload-or-restart ssh.service\n"  # once
    # sshd offers that key only: no other key type for a client to prefer.
    assert (etc / "sshd_config.d/50-prep-ha-host-key.conf").read_text() == \
        f"HostKey {etc}/ssh_host_ed25519_key\n"
    assert [p.name for p in etc.iterdir() if p.name.startswith(".")] == []
