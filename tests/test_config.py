"""Every validation rule of prep_ha.config: the error names the key and says how to fix it."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from prep_ha.config import (
    NAMESPACE,
    SECRET_KEYS,
    ConfigError,
    StackConfig,
    load_config,
    load_stack_file,
)
from tests.pulumi_mocks import PROJECT_DIR, CapturedResource, run_stack

DROP = object()


def raw_config(stack: str, **changes: Any) -> tuple[dict[str, Any], str | None]:
    doc = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())
    values = doc["config"]
    raw = {k.split(":", 1)[1]: v for k, v in values.items()
           if k.startswith(NAMESPACE + ":") and k.split(":", 1)[1] not in SECRET_KEYS}
    for key, value in changes.items():
        if value is DROP:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw, values.get("aws:region")


def load(stack: str, **changes: Any) -> StackConfig:
    raw, region = raw_config(stack, **changes)
    return load_config(raw, stack=stack, region=region)


def expect_error(stack: str, key: str, fix: str, region: str | None | object = DROP,
                 **changes: Any) -> ConfigError:
    raw, default_region = raw_config(stack, **changes)
    with pytest.raises(ConfigError) as err:
        load_config(raw, stack=stack, region=default_region if region is DROP else region)
    message = str(err.value)
    assert err.value.key == key, message
    assert key in message
    assert fix in err.value.fix and fix in message, message
    return err.value


@pytest.mark.parametrize("stack", ["testnet", "mainnet"])
def test_stack_files_are_valid(stack):
    cfg = load_stack_file(str(PROJECT_DIR / f"Pulumi.{stack}.yaml"), stack=stack)
    assert cfg.is_mainnet is (stack == "mainnet")
    assert cfg.termination_protection is (stack == "mainnet")


# (stack, key that the error must name, fragment of the fix, config changes)
RULES = [
    pytest.param("testnet", "instanceTyp", "known keys", {"instanceTyp": "m6i.xlarge"},
                 id="unknown-key"),
    pytest.param("testnet", "iconNetwork", "LisbonNet", {"iconNetwork": DROP},
                 id="network-missing"),
    pytest.param("testnet", "iconNetwork", "MainNet", {"iconNetwork": "Mainnet"},
                 id="unknown-network"),
    pytest.param("testnet", "availabilityZone", "eu-central-1a", {"availabilityZone": DROP},
                 id="az-missing"),
    pytest.param("testnet", "availabilityZone", "eu-central-1a",
                 {"availabilityZone": "us-east-1a"}, id="az-of-other-region"),
    pytest.param("testnet", "vpcId", "vpc-0abc", {"vpcId": "vpc-xyz"}, id="bad-vpc-id"),
    pytest.param("testnet", "vpcCidr", "10.40.1.0/24", {"vpcCidr": "10.41.0.0/33"},
                 id="bad-cidr"),
    pytest.param("testnet", "vpcCidr", "network address", {"vpcCidr": "10.41.0.1/16"},
                 id="cidr-with-host-bits"),
    pytest.param("testnet", "serviceSubnetCidr", "inside vpcCidr",
                 {"serviceSubnetCidr": "10.99.1.0/24"}, id="subnet-outside-vpc"),
    pytest.param("testnet", "serviceSubnetCidr", "between 16 and 28",
                 {"serviceSubnetCidr": "10.41.1.0/29"}, id="subnet-too-small"),
    pytest.param("testnet", "heartbeatSubnetCidr", "disjoint",
                 {"heartbeatSubnetCidr": "10.41.1.0/25"}, id="overlapping-subnets"),
    pytest.param("testnet", "adminCidrs", "203.0.113.7/32", {"adminCidrs": DROP},
                 id="admin-missing"),
    pytest.param("testnet", "adminCidrs", "203.0.113.7/32", {"adminCidrs": "1.2.3.4/32"},
                 id="admin-not-a-list"),
    pytest.param("testnet", "adminCidrs", "your own egress", {"adminCidrs": ["0.0.0.0/0"]},
                 id="admin-whole-internet"),
    pytest.param("testnet", "adminCidrs", "only the networks", {"adminCidrs": ["8.0.0.0/6"]},
                 id="admin-wider-than-8"),
    pytest.param("testnet", "adminCidrs", "fits in a /24",
                 {"adminCidrs": ["203.0.113.7/32", "198.51.100.0/23"]}, id="admin-wider-than-24"),
    pytest.param("testnet", "adminCidrs", "prefix", {"adminCidrs": ["not-a-cidr"]},
                 id="admin-bad-cidr"),
    pytest.param("testnet", "managementAccess", "private", {"managementAccess": "vpn"},
                 id="bad-management-access"),
    pytest.param("testnet", "managementAccess", "set managementAccess to private",
                 {"vpcId": "vpc-0abc12345def67890"}, id="existing-vpc-with-public-access"),
    pytest.param("testnet", "instanceType", "m6i.2xlarge", {"instanceType": DROP},
                 id="instance-type-missing"),
    pytest.param("testnet", "instanceType", "m6i.2xlarge", {"instanceType": "big-box"},
                 id="not-an-instance-type"),
    pytest.param("testnet", "instanceType", "t3.large", {"instanceType": "t3.nano"},
                 id="burstable-size-unknown"),
    pytest.param("testnet", "instanceType", "m6i.2xlarge", {"instanceType": "p4d.24xlarge"},
                 id="unsupported-family"),
    pytest.param("mainnet", "instanceType", "at least 8 vCPUs", {"instanceType": "m6i.xlarge"},
                 id="too-small-for-mainnet"),
    pytest.param("mainnet", "instanceType", "non-burstable", {"instanceType": "t3.2xlarge"},
                 id="burstable-on-mainnet"),
    pytest.param("testnet", "rootVolumeGiB", "20 GiB", {"rootVolumeGiB": 10},
                 id="root-volume-too-small"),
    pytest.param("testnet", "rootVolumeGiB", "20 GiB", {"rootVolumeGiB": "lots"},
                 id="root-volume-not-a-number"),
    pytest.param("mainnet", "dataVolumeGiB", "500 GiB", {"dataVolumeGiB": 200},
                 id="data-volume-too-small-for-mainnet"),
    pytest.param("testnet", "dataVolumeGiB", "100 GiB", {"dataVolumeGiB": 50},
                 id="data-volume-too-small"),
    pytest.param("testnet", "amiId", "ami-0abc", {"amiId": "debian-12"}, id="bad-ami-id"),
    pytest.param("testnet", "iconImageTag", "v1.4.6", {"iconImageTag": DROP},
                 id="image-tag-missing"),
    pytest.param("testnet", "iconImageTag", "release tag", {"iconImageTag": "v1.4.6 latest"},
                 id="bad-image-tag"),
    pytest.param("mainnet", "iconImageTag", "pin the release", {"iconImageTag": "latest"},
                 id="latest-on-mainnet"),
    pytest.param("testnet", "clusterName", "prep-ha-mainnet", {"clusterName": "Prep_HA"},
                 id="bad-cluster-name"),
    pytest.param("testnet", "peerVip", "free address", {"peerVip": "10.41.1.x"},
                 id="vip-not-an-ip"),
    pytest.param("testnet", "peerVip", "inside 10.41.1.0/24", {"peerVip": "10.41.2.100"},
                 id="vip-outside-service-subnet"),
    pytest.param("testnet", "peerVip", "first four", {"peerVip": "10.41.1.2"},
                 id="vip-aws-reserved"),
    pytest.param("testnet", "citizenVip", "first four", {"citizenVip": "10.41.1.255"},
                 id="vip-broadcast"),
    pytest.param("testnet", "peerVip", "its own free address", {"peerVip": "10.41.1.11"},
                 id="vip-is-a-node-address"),
    pytest.param("testnet", "citizenVip", "its own free address",
                 {"peerVip": "10.41.1.50", "citizenVip": "10.41.1.50"}, id="vips-equal"),
    pytest.param("mainnet", "terminationProtection", "remove the key",
                 {"terminationProtection": False}, id="no-termination-protection-on-mainnet"),
    pytest.param("testnet", "terminationProtection", "true or false",
                 {"terminationProtection": "maybe"}, id="termination-protection-not-bool"),
    pytest.param("testnet", "quorumArbiter", "true or false", {"quorumArbiter": "sometimes"},
                 id="arbiter-not-bool"),
    pytest.param("testnet", "arbiterSubnetCidr", "of its own",
                 {"arbiterSubnetCidr": "10.41.2.0/25"}, id="arbiter-subnet-overlaps"),
    pytest.param("testnet", "arbiterSubnetCidr", "inside vpcCidr",
                 {"arbiterSubnetCidr": "10.99.4.0/24"}, id="arbiter-subnet-outside-vpc"),
    pytest.param("testnet", "arbiterInstanceType", "t4g.micro",
                 {"arbiterInstanceType": "tiny"}, id="arbiter-type-invalid"),
    pytest.param("testnet", "corosyncTokenMs", "at least 3000 ms",
                 {"corosyncTokenMs": 2000}, id="token-too-short"),
    pytest.param("mainnet", "corosyncTokenMs", "at least 12000 ms",
                 {"corosyncTokenMs": 8000}, id="token-below-mainnet-floor"),
    pytest.param("testnet", "corosyncTokenMs", "at most 30000 ms",
                 {"corosyncTokenMs": 60000}, id="token-too-long"),
    pytest.param("testnet", "corosyncTokenMs", "at least 3000 ms",
                 {"corosyncTokenMs": "fast"}, id="token-not-a-number"),
    pytest.param("testnet", "alertEmail", "ops@example.com", {"alertEmail": "ops.example.com"},
                 id="alert-email-without-at"),
    pytest.param("testnet", "alertEmail", "a list address",
                 {"alertEmail": "a@example.com, b@example.com"}, id="alert-email-two-addresses"),
    pytest.param("testnet", "alertEmail", "single address",
                 {"alertEmail": "Ops <ops@example.com>"}, id="alert-email-display-name"),
    pytest.param("testnet", "alertEmail", "remove the key", {"alertEmail": ["ops@example.com"]},
                 id="alert-email-not-a-string"),
    pytest.param("testnet", "chainSync", "snapshot", {"chainSync": "fast"},
                 id="chain-sync-unknown"),
    # Placement: one zone, or node 1's, node 2's and the arbiter's.
    pytest.param("mainnet", "availabilityZones", "keep one",
                 {"availabilityZone": "ap-northeast-2a"}, id="zone-and-zones"),
    pytest.param("mainnet", "availabilityZones", "three zones",
                 {"availabilityZones": ["ap-northeast-2a", "ap-northeast-2c"]},
                 id="two-zones-no-arbiter-zone"),
    pytest.param("mainnet", "availabilityZones", "two zones",
                 {"availabilityZones": ["ap-northeast-2a", "ap-northeast-2a",
                                        "ap-northeast-2b"]}, id="same-zone-twice"),
    pytest.param("mainnet", "availabilityZones", "third zone",
                 {"availabilityZones": ["ap-northeast-2a", "ap-northeast-2c",
                                        "ap-northeast-2c"]}, id="arbiter-in-a-node-zone"),
    pytest.param("mainnet", "availabilityZones", "zone names such as",
                 {"availabilityZones": ["ap-northeast-2a", "eu-central-1b",
                                        "ap-northeast-2b"]}, id="zone-of-other-region"),
    pytest.param("mainnet", "serviceSubnetCidr", "node 2's",
                 {"serviceSubnetCidr": "10.40.1.0/24"}, id="one-block-for-two-zones"),
    pytest.param("mainnet", "heartbeatSubnetCidr", "disjoint",
                 {"heartbeatSubnetCidr": ["10.40.2.0/24", "10.40.11.0/25"]},
                 id="zone-subnets-overlap-across-zones"),
    pytest.param("mainnet", "arbiterSubnetCidr", "of its own",
                 {"arbiterSubnetCidr": "10.40.13.0/24"}, id="arbiter-overlaps-zone-2"),
    pytest.param("testnet", "serviceSubnetCidr", "one block",
                 {"serviceSubnetCidr": ["10.41.1.0/24", "10.41.11.0/24"]},
                 id="two-blocks-for-one-zone"),
    pytest.param("mainnet", "quorumArbiter", "remove the key", {"quorumArbiter": False},
                 id="multi-az-without-arbiter"),
    # The overlay IP: routed, so outside the VPC, in a range the NLB targets.
    pytest.param("mainnet", "peerVip", "outside vpcCidr", {"peerVip": DROP},
                 id="overlay-ip-missing"),
    pytest.param("mainnet", "peerVip", "outside vpcCidr", {"peerVip": "10.40.1.100"},
                 id="overlay-ip-inside-vpc"),
    pytest.param("mainnet", "peerVip", "outside vpcCidr", {"peerVip": "198.51.100.10"},
                 id="overlay-ip-public"),
    pytest.param("mainnet", "citizenVip", "remove the key", {"citizenVip": "10.40.1.101"},
                 id="citizen-vip-in-multi-az"),
]


@pytest.mark.parametrize(("stack", "key", "fix", "changes"), RULES)
def test_rule(stack, key, fix, changes):
    expect_error(stack, key, fix, **changes)


def test_region_missing():
    expect_error("testnet", "aws:region", "pulumi config set aws:region", region=None)


def test_defaults_fill_in():
    cfg = load("testnet", clusterName=DROP, peerVip=DROP, citizenVip=DROP,
               terminationProtection=DROP, managementAccess=DROP)
    assert cfg.cluster_name == "prep-ha-testnet"
    assert (cfg.peer_vip, cfg.citizen_vip) == ("10.41.1.100", "10.41.1.101")
    assert cfg.nodes[0].service_ip == "10.41.1.11" and cfg.nodes[1].heartbeat_ip == "10.41.2.12"
    assert cfg.termination_protection is False
    assert cfg.management_access == "public"
    assert cfg.chain_sync == "snapshot"
    assert load("testnet", chainSync="genesis").chain_sync == "genesis"


def test_mainnet_defaults_are_strict():
    cfg = load("mainnet", terminationProtection=DROP)
    assert cfg.termination_protection is True


def test_config_strings_from_the_cli_are_accepted():
    # The CLI hands every value to the program as a string.
    cfg = load("testnet", rootVolumeGiB="40", terminationProtection="true")
    assert cfg.root_volume_gib == 40 and cfg.termination_protection is True


def test_admin_cidrs_up_to_a_24_are_accepted():
    cfg = load("testnet", adminCidrs=["198.51.100.0/24", "203.0.113.7/32"])
    assert cfg.admin_cidrs == ("198.51.100.0/24", "203.0.113.7/32")


def test_bad_config_fails_before_any_resource_is_declared():
    declared: list[CapturedResource] = []
    with pytest.raises(ConfigError) as err:
        run_stack("mainnet", {"adminCidrs": ["0.0.0.0/0"]}, sink=declared)
    assert err.value.key == "adminCidrs"
    assert declared == []


def test_unknown_key_in_stack_config_reaches_validation():
    with pytest.raises(ConfigError) as err:
        run_stack("testnet", {"adminCidr": ["203.0.113.0/28"]})
    assert err.value.key == "adminCidr"


def test_alert_email_is_optional():
    assert load("testnet", alertEmail=DROP).alert_email is None
    assert load("testnet", alertEmail="").alert_email is None
    assert load("mainnet", alertEmail="p-rep.ops+ha@example.co.uk").alert_email == \
        "p-rep.ops+ha@example.co.uk"


def test_multi_az_places_each_node_in_its_zone():
    cfg = load("mainnet")
    assert cfg.multi_az and [z.name for z in cfg.zones] == ["ap-northeast-2a", "ap-northeast-2c"]
    assert cfg.arbiter_zone == "ap-northeast-2b"
    assert [n.zone for n in cfg.nodes] == list(cfg.zones)
    assert cfg.nodes[0].service_ip == "10.40.1.11" and cfg.nodes[1].service_ip == "10.40.11.12"
    assert (cfg.peer_vip, cfg.citizen_vip) == ("10.255.40.100", None)
    # Defaults: node 2's zone takes the blocks ten /24s above node 1's.
    cfg = load("mainnet", serviceSubnetCidr=DROP, heartbeatSubnetCidr=DROP)
    assert [z.service_cidr for z in cfg.zones] == ["10.40.1.0/24", "10.40.11.0/24"]
    assert [z.heartbeat_cidr for z in cfg.zones] == ["10.40.2.0/24", "10.40.12.0/24"]


def test_one_zone_is_the_single_az_design_either_way():
    one = load("testnet")
    listed = load("testnet", availabilityZone=DROP, availabilityZones=["eu-central-1a"],
                  serviceSubnetCidr=["10.41.1.0/24"])
    assert one == listed and not one.multi_az
    assert one.arbiter_zone == one.availability_zone == "eu-central-1a"
