"""icon-prep-ha: a highly available ICON P-Rep node pair on AWS, from one `pulumi up`.

Config is read here and only here, validated into one StackConfig before any resource is
declared (a bad Pulumi.<stack>.yaml fails preview with nothing created), then passed down.
"""

from __future__ import annotations

from typing import Any

import pulumi

from components.alerts import ClusterAlerts, ClusterAlertsArgs
from components.arbiter import QuorumArbiter, QuorumArbiterArgs
from components.cluster import PacemakerCluster, PacemakerClusterArgs
from components.iam import NodeIam, NodeIamArgs
from components.loadbalancer import PeerLoadBalancer, PeerLoadBalancerArgs
from components.network import Network, NetworkArgs
from components.node import NodePair, NodePairArgs
from components.overlay import PeerOverlayRoutes, PeerOverlayRoutesArgs
from components.payload import PayloadStore, PayloadStoreArgs
from components.secrets import AdminSshKey, AdminSshKeyArgs, NodeSecrets, NodeSecretsArgs
from prep_ha.config import KNOWN_KEYS, NAMESPACE, SECRET_KEYS, ConfigError, StackConfig, load_config
from prep_ha.ops.shell import SSH_USER, ssh_files


def ssh_files_command(stack: str, cluster_name: str) -> str:
    """Writes both files; umask 077 and a fresh file make the key 0600 from its first byte."""
    key, known = (f.replace("~", "$HOME", 1) for f in ssh_files(cluster_name))
    return (f'(umask 077 && mkdir -p "$HOME/.ssh" && rm -f "{key}" && '
            f'pulumi stack output --stack {stack} --show-secrets sshPrivateKey > "{key}" && '
            f'pulumi stack output --stack {stack} sshKnownHosts > "{known}")')


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
        value = config.get(key)
        # A YAML list (adminCidrs, availabilityZones, multi-AZ subnets) arrives as JSON.
        if value is not None and value.startswith("["):
            value = config.get_object(key)
        if value is not None:
            raw[key] = value
    for key in _namespace_keys() - set(KNOWN_KEYS):
        raw[key] = config.get(key)
    return load_config(raw, stack=pulumi.get_stack(), region=pulumi.Config("aws").get("region"))


def refuse_key_in_config(stack: str) -> None:
    """The validator key lives in Secrets Manager only; stack config would put it (encrypted)
    in the tracked Pulumi.<stack>.yaml and hand it to every program run."""
    for key in SECRET_KEYS:
        if key in _namespace_keys():
            raise ConfigError(key, "is in the stack config, where the validator key must not "
                              "be (Pulumi.<stack>.yaml is tracked, every program run gets it)",
                              f"run `pulumi config rm {key} --stack {stack}`, then store the "
                              f"key with `python -m prep_ha put-keystore --stack {stack} "
                              "--keystore FILE` (README: The validator key)")


def main() -> None:
    cfg = read_config()
    refuse_key_in_config(cfg.stack)

    network = Network("network", NetworkArgs(config=cfg))
    nlb = PeerLoadBalancer("peer-lb", PeerLoadBalancerArgs(
        config=cfg, vpc_id=network.vpc_id, public_subnet_ids=network.public_subnet_ids,
        internet_ready=network.internet_ready))
    # Before the role: the nodes may publish to this topic (and its key) only.
    alerts = ClusterAlerts("alerts", ClusterAlertsArgs(
        config=cfg, load_balancer_arn_suffix=nlb.arn_suffix,
        peer_target_group_arn_suffix=nlb.peer_target_group_arn_suffix))
    payloads = PayloadStore("payload", PayloadStoreArgs(config=cfg, vpc_id=network.vpc_id))
    iam = NodeIam("node-iam", NodeIamArgs(
        cluster_name=cfg.cluster_name, region=cfg.region, multi_az=cfg.multi_az,
        alert_topic_arn=alerts.topic_arn,
        alert_key_arn=alerts.key_arn, payload_bucket_arn=payloads.bucket_arn))
    secrets = NodeSecrets("secrets", NodeSecretsArgs(
        config=cfg, reader_role_arn=iam.role_arn, reader_role_name=iam.role_name,
        vpc_id=network.vpc_id, endpoint_id=network.secrets_endpoint_id))
    ssh_key = AdminSshKey("admin-ssh", AdminSshKeyArgs(cluster_name=cfg.cluster_name))
    nodes = NodePair("nodes", NodePairArgs(
        config=cfg,
        service_subnet_ids=network.service_subnet_ids,
        heartbeat_subnet_ids=network.heartbeat_subnet_ids,
        management_subnet_ids=network.management_subnet_ids,
        service_security_group_id=network.service_security_group_id,
        heartbeat_security_group_id=network.heartbeat_security_group_id,
        management_security_group_id=network.management_security_group_id,
        instance_profile_name=iam.instance_profile_name,
        key_name=ssh_key.key_name,
        p2p_endpoint=nlb.p2p_endpoint,
        keystore_secret_arn=secrets.keystore_secret_arn,
        keystore_password_secret_arn=secrets.keystore_password_secret_arn,
        hacluster_password_secret_arn=secrets.hacluster_password_secret_arn,
        alert_topic_arn=alerts.topic_arn,
        boot_after=[network, iam, secrets],
        internet_ready=network.internet_ready,
        payload_store=payloads,
    ))
    arbiter = QuorumArbiter("arbiter", QuorumArbiterArgs(
        config=cfg, vpc_id=network.vpc_id, nat_gateway_id=network.nat_gateway_ids[0],
        s3_endpoint_id=network.s3_endpoint.id, payload_store=payloads,
        hacluster_password_secret_arn=secrets.hacluster_password_secret_arn,
        boot_after=[network, secrets])) if cfg.quorum_arbiter else None
    payloads.admit([iam.role_arn, *([arbiter.role_arn] if arbiter else [])],
                   network.s3_endpoint)
    # Multi-AZ: the peer's overlay routes, to node 1 first; aws-vpc-move-ip's start only
    # replaces them, so they exist before the cluster starts the peer.
    overlay = PeerOverlayRoutes("peer-overlay", PeerOverlayRoutesArgs(
        config=cfg, route_table_ids=network.overlay_route_table_ids,
        network_interface_id=nodes.service_eni_ids[0])) if cfg.multi_az else None
    cluster = PacemakerCluster("pacemaker", PacemakerClusterArgs(
        config=cfg, instance_ids=nodes.instance_ids, ssh_hosts=nodes.ssh_hosts,
        ssh_user=SSH_USER, ssh_private_key=ssh_key.private_key_openssh,
        ssh_host_keys=secrets.ssh_host_public_keys,
        ready=[*nodes.ready, *([arbiter] if arbiter else []), *([overlay] if overlay else [])],
        payload_digests=nodes.payload_digests,
        route_table_ids=overlay.route_table_ids if overlay else ()))

    key_file, known_hosts = ssh_files(cfg.cluster_name)

    def ssh(host: pulumi.Input[str], command: str = "") -> pulumi.Output[str]:
        return pulumi.Output.concat(
            f"ssh -i {key_file} -o UserKnownHostsFile={known_hosts} "
            f"-o StrictHostKeyChecking=yes {SSH_USER}@", host, command)

    pulumi.export("peerVip", cfg.peer_vip)
    pulumi.export("citizenVip", cfg.citizen_vip)
    pulumi.export("nlbDnsName", nlb.dns_name)
    if cfg.multi_az:
        pulumi.export("nlbPublicIps", nlb.public_ips)
    else:
        pulumi.export("nlbPublicIp", nlb.public_ips[0])
    # Register this as the P-Rep's p2pEndpoint (multi-AZ: the NLB's name, see
    # components/loadbalancer.py).
    pulumi.export("p2pEndpoint", nlb.p2p_endpoint)
    pulumi.export("alertTopicArn", alerts.topic_arn)
    pulumi.export("instanceIds", dict(zip(cfg.node_names, nodes.instance_ids, strict=True)))
    pulumi.export("managementIps", dict(zip(cfg.node_names, nodes.ssh_hosts, strict=True)))
    pulumi.export("sshKeyCommand", ssh_files_command(cfg.stack, cfg.cluster_name))
    # The host keys the nodes install at first boot (prep-ha-ssh-host-key), known_hosts lines.
    pulumi.export("sshKnownHosts", cluster.ssh_known_hosts)
    pulumi.export("sshCommand", {n: ssh(h) for n, h in zip(cfg.node_names, nodes.ssh_hosts,
                                                            strict=True)})
    pulumi.export("pcsStatusCommand", ssh(nodes.ssh_hosts[0], " sudo pcs status --full"))
    pulumi.export("haclusterSecretName", secrets.hacluster_password_secret_name)
    pulumi.export("keystoreSecretNames", [cfg.keystore_secret_name,
                                          cfg.keystore_password_secret_name])
    pulumi.export("putKeystoreCommand",
                  f"python -m prep_ha put-keystore --stack {cfg.stack} --keystore KEYSTORE.json")
    pulumi.export("sshPrivateKey", pulumi.Output.secret(ssh_key.private_key_openssh))


main()
