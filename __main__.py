"""icon-prep-ha: a highly available ICON P-Rep node pair on AWS, from one `pulumi up`.

Config is read here and only here, validated into one StackConfig before any resource is
declared (a bad Pulumi.<stack>.yaml fails preview with nothing created), then passed down.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi

from components.cluster import PacemakerCluster, PacemakerClusterArgs
from components.iam import NodeIam, NodeIamArgs
from components.loadbalancer import PeerLoadBalancer, PeerLoadBalancerArgs
from components.network import Network, NetworkArgs
from components.node import SSH_USER, NodePair, NodePairArgs
from components.secrets import AdminSshKey, AdminSshKeyArgs, NodeSecrets, NodeSecretsArgs
from prep_ha.config import KNOWN_KEYS, NAMESPACE, SECRET_KEYS, ConfigError, StackConfig, load_config

# Where the sshCommand output expects the private key; written by KEY_FILE_COMMAND.
KEY_FILE = "prep-ha-admin.key"
KEY_FILE_COMMAND = (f"pulumi stack output --show-secrets sshPrivateKey > {KEY_FILE} && "
                    f"chmod 600 {KEY_FILE}")
SECRET_FIX = {
    "keystore": "pulumi config set --secret keystore < keystore.json",
    "keystorePassword": "pulumi config set --secret keystorePassword",
}


def _namespace_keys() -> set[str]:
    """Every key set under icon-prep-ha, so that load_config can name a misspelt one."""
    # The SDK has no public listing; the language host hands the whole map to set_all_config.
    from pulumi.runtime import config as runtime_config

    names = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    prefix = NAMESPACE + ":"
    return {k[len(prefix):] for k in names if k.startswith(prefix)}


def read_config() -> StackConfig:
    config = pulumi.Config(NAMESPACE)
    raw: dict[str, Any] = {}
    for key in KNOWN_KEYS:
        if key in SECRET_KEYS:
            continue
        value = config.get_object(key) if key == "adminCidrs" else config.get(key)
        if value is not None:
            raw[key] = value
    for key in _namespace_keys() - set(KNOWN_KEYS):
        raw[key] = config.get(key)
    return load_config(raw, stack=pulumi.get_stack(), region=pulumi.Config("aws").get("region"))


def read_secret(key: str) -> pulumi.Output[str]:
    """A secret config value; refuses one that sits in plain text in the stack file."""
    full_key = f"{NAMESPACE}:{key}"
    plain = pulumi.Config(NAMESPACE).get(key)
    if plain in (None, ""):
        raise ConfigError(key, "is not set", f"run `{SECRET_FIX[key]}`")
    if not pulumi.runtime.is_config_secret(full_key):
        raise ConfigError(key, "is stored in plain text in the stack config",
                          f"remove it and run `{SECRET_FIX[key]}`")
    if key == "keystore":
        _check_keystore(plain)
    return pulumi.Config(NAMESPACE).require_secret(key)


def _check_keystore(text: str) -> None:
    # Caught here rather than when the peer first starts on a node, hours later.
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if not (isinstance(doc, dict) and str(doc.get("address", "")).startswith("hx")
            and isinstance(doc.get("crypto"), dict)):
        raise ConfigError("keystore", "is not an ICON keystore (JSON with an hx address "
                          "and a crypto section)", f"run `{SECRET_FIX['keystore']}` with the "
                          "P-Rep's keystore file")


def main() -> None:
    cfg = read_config()
    keystore = read_secret("keystore")
    keystore_password = read_secret("keystorePassword")

    network = Network("network", NetworkArgs(config=cfg))
    secrets = NodeSecrets("secrets", NodeSecretsArgs(
        config=cfg, keystore=keystore, keystore_password=keystore_password))
    ssh_key = AdminSshKey("admin-ssh", AdminSshKeyArgs(cluster_name=cfg.cluster_name))
    iam = NodeIam("node-iam", NodeIamArgs(
        cluster_name=cfg.cluster_name, region=cfg.region, secret_arns=secrets.secret_arns))
    nlb = PeerLoadBalancer("peer-lb", PeerLoadBalancerArgs(
        config=cfg, vpc_id=network.vpc_id, public_subnet_id=network.public_subnet_id,
        internet_ready=network.internet_ready))
    nodes = NodePair("nodes", NodePairArgs(
        config=cfg,
        service_subnet_id=network.service_subnet_id,
        heartbeat_subnet_id=network.heartbeat_subnet_id,
        management_subnet_id=network.management_subnet_id,
        service_security_group_id=network.service_security_group_id,
        heartbeat_security_group_id=network.heartbeat_security_group_id,
        management_security_group_id=network.management_security_group_id,
        instance_profile_name=iam.instance_profile_name,
        key_name=ssh_key.key_name,
        p2p_public_ip=nlb.public_ip,
        keystore_secret_arn=secrets.keystore_secret_arn,
        keystore_password_secret_arn=secrets.keystore_password_secret_arn,
        hacluster_password_secret_arn=secrets.hacluster_password_secret_arn,
        boot_after=[network, iam, secrets],
        internet_ready=network.internet_ready,
    ))
    PacemakerCluster("pacemaker", PacemakerClusterArgs(
        config=cfg, instance_ids=nodes.instance_ids, ssh_hosts=nodes.ssh_hosts,
        ssh_user=SSH_USER, ssh_private_key=ssh_key.private_key_openssh, ready=nodes.ready))

    def ssh(host: pulumi.Input[str], command: str = "") -> pulumi.Output[str]:
        return pulumi.Output.concat(f"ssh -i {KEY_FILE} {SSH_USER}@", host, command)

    pulumi.export("peerVip", cfg.peer_vip)
    pulumi.export("citizenVip", cfg.citizen_vip)
    pulumi.export("nlbDnsName", nlb.dns_name)
    pulumi.export("nlbPublicIp", nlb.public_ip)
    pulumi.export("instanceIds", dict(zip(cfg.node_names, nodes.instance_ids, strict=True)))
    pulumi.export("managementIps", dict(zip(cfg.node_names, nodes.ssh_hosts, strict=True)))
    pulumi.export("sshKeyCommand", KEY_FILE_COMMAND)
    pulumi.export("sshCommand", {n: ssh(h) for n, h in zip(cfg.node_names, nodes.ssh_hosts,
                                                            strict=True)})
    pulumi.export("pcsStatusCommand", ssh(nodes.ssh_hosts[0], " sudo pcs status --full"))
    pulumi.export("haclusterSecretName", secrets.hacluster_password_secret_name)
    pulumi.export("sshPrivateKey", pulumi.Output.secret(ssh_key.private_key_openssh))


main()
