"""The node's own cluster agents (cloud-init/files/), run with the nodes' Debian 13 in a
throwaway root (prep_ha/nodetools.py) against a loopback EC2 and instance metadata service
(tests/fixtures/fake_aws.py) inside the root's own network namespace:

- fence_aws_skip_os_shutdown sends SkipOsShutdown=true with the stop, which the packaged
  fence_aws (4.16) does not, and otherwise fences as the packaged agent does;
- ocf:prep-ha:awsvip reads its monitor from the instance metadata, so an EC2 API outage does
  not make a held VIP look lost (the packaged awsvip's monitor reads it as not running).

The aws CLI is a stub that turns the agent's call into the same EC2 request (the node image's
tools carry no CLI); everything else is the packaged Pacemaker, resource and fence agents."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = ROOT / "cloud-init" / "files"
FAKE = Path(__file__).resolve().parent / "fixtures" / "fake_aws.py"
VIP = "10.0.0.50"

# Runs inside the node root: lo up, the fake AWS on it, then each step; prints the results.
DRIVER = textwrap.dedent("""
    import json, os, subprocess, sys, time
    from pathlib import Path
    work, fake, steps = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    results = []
    for step in steps:
        log, port_file = work / "api.log", work / "port"
        log.write_text("")
        port_file.unlink(missing_ok=True)
        env = {**os.environ, "FAKE_AWS_LOG": str(log), **step.get("fake_env", {})}
        server = subprocess.Popen(["python3", fake, str(port_file)], env=env)
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text()}"
        env = {**os.environ, "AWS_ENDPOINT_URL_EC2": url, "http_proxy": url,
               "HTTP_PROXY": url, "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1",
               "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_DEFAULT_REGION": "eu-central-1", "OCF_ROOT": "/usr/lib/ocf",
               **step.get("env", {})}
        proc = subprocess.run(step["argv"], env=env, capture_output=True, text=True,
                              timeout=120)
        server.kill()
        results.append({"rc": proc.returncode, "out": proc.stdout + proc.stderr,
                        "api": [json.loads(ln) for ln in log.read_text().splitlines()]})
    print(json.dumps(results))
""")

# The aws CLI's `ec2 ACTION --network-interface-id ENI --private-ip-addresses IP
# [--allow-reassignment]` and `describe-instances ... --output text`, as EC2 query requests.
AWS_STUB = textwrap.dedent("""\
    #!/bin/sh
    while [ "${1#--}" != "$1" ]; do
      case $1 in --cli-*|--region|--profile|--query|--output) shift 2 ;; *) shift ;; esac
    done
    [ "$1" = ec2 ] || exit 2
    action=$2; shift 2
    eni= ip= extra=
    while [ $# -gt 0 ]; do
      case $1 in
        --network-interface-id) eni=$2; shift 2 ;;
        --private-ip-addresses) ip=$2; shift 2 ;;
        --allow-reassignment) extra="&AllowReassignment=true"; shift ;;
        *) shift ;;
      esac
    done
    case $action in
      assign-private-ip-addresses) a=AssignPrivateIpAddresses ;;
      unassign-private-ip-addresses) a=UnassignPrivateIpAddresses ;;
      describe-instances) a=DescribeInstances ;;
      *) exit 2 ;;
    esac
    form="Action=$a&NetworkInterfaceId=$eni&PrivateIpAddress.1=$ip$extra"
    out=$(curl -sf --noproxy '*' -d "$form" "$AWS_ENDPOINT_URL_EC2") ||
      { echo "An error occurred (Unavailable)" >&2; exit 254; }
    # describe-instances --query ...PrivateIpAddress[] --output text: the addresses held.
    mac=0a:00:00:00:00:01
    [ "$a" = DescribeInstances ] && curl -sf --noproxy '*' -x "$AWS_ENDPOINT_URL_EC2" \\
      "http://169.254.169.254/latest/meta-data/network/interfaces/macs/$mac/local-ipv4s" |
      tr '\\n' '\\t'
    exit 0
""")


@pytest.fixture
def agents(node_tools, tmp_path):
    """run(steps) -> one {rc, out, api} per step, in the node root."""
    (tmp_path / "aws").write_text(AWS_STUB)
    (tmp_path / "aws").chmod(0o755)
    (tmp_path / "driver.py").write_text(DRIVER)

    def run(steps: list[dict]) -> list[dict]:
        proc = node_tools.run(
            ["python3", str(tmp_path / "driver.py"), str(tmp_path), str(FAKE),
             json.dumps(steps)], paths=[tmp_path, FAKE, FILES], timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.splitlines()[-1])
    return run, tmp_path


def _fence(agent: str) -> dict:
    return {"argv": ["python3", agent, "--action=off", "--plug=i-0target",
                     "--region=eu-central-1", "--power-wait=0"]}


def test_the_fence_agent_skips_the_os_shutdown_the_packaged_one_waits_for(agents):
    run, _ = agents
    ours, packaged = run([_fence(str(FILES / "fence_aws_skip_os_shutdown")),
                          _fence("/usr/sbin/fence_aws")])
    for result in (ours, packaged):
        assert result["rc"] == 0, result["out"]
        assert "Success: Powered OFF" in result["out"]
    [stop] = [f for f in ours["api"] if f["Action"] == "StopInstances"]
    assert stop == {"Action": "StopInstances", "Version": "2016-11-15",
                    "InstanceId.1": "i-0target", "Force": "true", "SkipOsShutdown": "true"}
    # The packaged agent (fence-agents 4.16) stops with Force alone: EC2 would first wait
    # out a hung guest's graceful shutdown.
    [stop] = [f for f in packaged["api"] if f["Action"] == "StopInstances"]
    assert "SkipOsShutdown" not in stop and stop["Force"] == "true"


def test_the_fence_agent_names_itself_and_fails_fast_without_the_api(agents):
    run, _ = agents
    meta, down = run([
        {"argv": ["python3", str(FILES / "fence_aws_skip_os_shutdown"), "--action=metadata"]},
        {**_fence(str(FILES / "fence_aws_skip_os_shutdown")),
         "fake_env": {"FAKE_API_DOWN": "1"}}])
    assert '<resource-agent name="fence_aws_skip_os_shutdown"' in meta["out"]
    assert down["rc"] != 0
    assert not [f for f in down["api"] if f["Action"] == "StopInstances"]


def _awsvip(agent: str, action: str, tmp: Path, held: bool, api_down: bool) -> dict:
    return {"argv": ["/bin/sh", agent, action],
            "env": {"OCF_RESKEY_secondary_private_ip": VIP, "OCF_RESKEY_region": "eu-central-1",
                    "OCF_RESKEY_awscli": str(tmp / "aws"), "OCF_RESOURCE_INSTANCE": "peer-awsvip"},
            "fake_env": {"FAKE_IPS": VIP if held else "", "FAKE_API_DOWN": "1" if api_down
                         else "0"}}


def test_the_vip_monitor_rides_out_an_api_outage_the_packaged_one_does_not(agents):
    run, tmp = agents
    ours = str(FILES / "prep-ha-awsvip")
    packaged = "/usr/lib/ocf/resource.d/heartbeat/awsvip"
    held, not_held, packaged_held = run([
        _awsvip(ours, "monitor", tmp, held=True, api_down=True),
        _awsvip(ours, "monitor", tmp, held=False, api_down=True),
        _awsvip(packaged, "monitor", tmp, held=True, api_down=True)])
    assert held["rc"] == 0 and held["api"] == [], held  # no API call at all
    assert not_held["rc"] == 7
    # The packaged monitor asks the API, and an unanswered call reads as "not running":
    # Pacemaker would restart the peer.
    assert packaged_held["rc"] == 7 and packaged_held["api"]


def test_the_vip_moves_through_the_api_and_a_failed_release_is_no_failed_stop(agents):
    run, tmp = agents
    ours = str(FILES / "prep-ha-awsvip")
    start, start_down, stop, stop_down = run([
        _awsvip(ours, "start", tmp, held=False, api_down=False),
        _awsvip(ours, "start", tmp, held=False, api_down=True),
        _awsvip(ours, "stop", tmp, held=True, api_down=False),
        _awsvip(ours, "stop", tmp, held=True, api_down=True)])
    assert start["rc"] == 0, start["out"]
    assert [(f["Action"], f.get("AllowReassignment")) for f in start["api"]] == [
        ("AssignPrivateIpAddresses", "true")]
    assert start_down["rc"] == 1 and "assigning 10.0.0.50" in start_down["out"]
    assert stop["rc"] == 0 and [f["Action"] for f in stop["api"]] == [
        "UnassignPrivateIpAddresses"]
    # The address goes to the next node with AllowReassignment; fencing this node over the
    # same unreachable API would help nobody.
    assert stop_down["rc"] == 0 and "left to the next assignment" in stop_down["out"]
