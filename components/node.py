"""The two cluster nodes: instances, their three ENIs, data volumes and management addresses.

Node n lives in its zone (cfg.nodes[n].zone): single-AZ both in the one zone, multi-AZ each
in its own (components/network.py).

The release is prep_ha/release.py's (Debian 13): the offline tests (pcs -f, crm_verify,
crm_simulate, cloud-init schema) and the lab run that release's own packages
(prep_ha/nodetools.py), so what the tests prove is what production runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.network import node_zone_index
from components.payload import PayloadStore
from components.tags import NODE_TAG, ROLE_TAG, cluster_tags
from prep_ha.config import StackConfig
from prep_ha.payload import TAG as PAYLOAD_TAG
from prep_ha.release import ami_name_pattern
from prep_ha.userdata import NodeSettings, encode_user_data, node_payload, render_user_data

# Debian's official AWS account (https://wiki.debian.org/Cloud/AmazonEC2Image).
DEBIAN_AMI_OWNER = "136693071363"
# Attached as /dev/sdf; Nitro renames it to an nvme device, which the node finds by
# volume id (cloud-init/files/prep-ha-data-volume).
DATA_DEVICE = "/dev/sdf"
HEARTBEAT_DEVICE_INDEX = 1
MANAGEMENT_DEVICE_INDEX = 2


def ami_architecture(instance_type: str) -> str:
    """arm64 for Graviton types (a `g` in the family attributes: m7g, c6gn, t4g), else x86_64."""
    m = re.fullmatch(r"[a-z]+\d+([a-z-]*)\..+", instance_type)
    return "arm64" if m and "g" in m.group(1) else "x86_64"


# IMDSv2 only; hop limit 1 keeps the role's credentials out of containers (the ICON
# containers use bridge networking and need no IMDS). Tags readable there: the first boot
# reads which payload to install from the instance's prep-ha:payload tag. Every instance.
IMDSV2_HOP_LIMIT_1 = {"http_endpoint": "enabled", "http_tokens": "required",
                      "http_put_response_hop_limit": 1, "instance_metadata_tags": "enabled"}


def user_data_for(hostname: str, region: str, bucket: pulumi.Input[str], *,
                  ssh_host_key: bool) -> pulumi.Output[str]:
    """userDataBase64 of an instance: fetch the payload its tag names from the bucket."""
    return pulumi.Output.from_input(bucket).apply(lambda b: encode_user_data(
        render_user_data(hostname, region, b, ssh_host_key=ssh_host_key)))


def encrypted_root(size_gib: int, tags: dict[str, str]) -> dict[str, object]:
    """The root volume of every instance of the stack: gp3, encrypted, gone with it."""
    return {"volume_type": "gp3", "volume_size": size_gib, "encrypted": True,
            "delete_on_termination": True, "tags": tags}


def debian_ami(pinned: str | None, instance_type: str,
               parent: pulumi.Resource) -> pulumi.Input[str]:
    """The pinned AMI, else the latest official Debian image of the nodes' release for the
    type's architecture."""
    if pinned:
        return pinned
    arch = ami_architecture(instance_type)
    return aws.ec2.get_ami_output(
        most_recent=True, owners=[DEBIAN_AMI_OWNER],
        filters=[
            {"name": "name", "values": [ami_name_pattern(arch)]},
            {"name": "architecture", "values": [arch]},
            {"name": "virtualization-type", "values": ["hvm"]},
        ],
        opts=pulumi.InvokeOutputOptions(parent=parent)).id


@dataclass(frozen=True)
class NodePairArgs:
    config: StackConfig
    # Per node zone, in cfg.zones order (components/network.py Network.*_subnet_ids).
    service_subnet_ids: Sequence[pulumi.Input[str]]
    heartbeat_subnet_ids: Sequence[pulumi.Input[str]]
    management_subnet_ids: Sequence[pulumi.Input[str]]
    service_security_group_id: pulumi.Input[str]
    heartbeat_security_group_id: pulumi.Input[str]
    management_security_group_id: pulumi.Input[str]
    instance_profile_name: pulumi.Input[str]
    key_name: pulumi.Input[str]
    # What the peer advertises, host:port (components/loadbalancer.py p2p_endpoint).
    p2p_endpoint: pulumi.Input[str]
    keystore_secret_arn: pulumi.Input[str]
    keystore_password_secret_arn: pulumi.Input[str]
    hacluster_password_secret_arn: pulumi.Input[str]
    # The stack's SNS topic, for the nodes' Pacemaker alert agent (components/alerts.py).
    alert_topic_arn: pulumi.Input[str]
    # First boot installs packages and reads secrets once: the NAT route, the role's
    # policies and the secret versions must exist before the instances start.
    boot_after: Sequence[pulumi.Resource]
    # Management Elastic IPs need the internet gateway.
    internet_ready: Sequence[pulumi.Resource]
    # Where each node's payload goes (its tag names the digest).
    payload_store: PayloadStore


class NodePair(pulumi.ComponentResource):
    instance_ids: list[pulumi.Output[str]]
    ssh_hosts: list[pulumi.Output[str]]
    service_eni_ids: list[pulumi.Output[str]]
    # The digest of each node's payload, node 1 first (the roll installs them).
    payload_digests: list[pulumi.Output[str]]
    # Everything the Pacemaker bootstrap must wait for.
    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: NodePairArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("icon-prep-ha:node:NodePair", name, None, opts)
        cfg = args.config
        self._args = args
        self._name = name

        ami_id = debian_ami(cfg.ami_id, cfg.instance_type, self)

        # Spread: the two nodes never share a rack (power, network), even inside one AZ.
        placement = aws.ec2.PlacementGroup(
            f"{name}-spread", name=f"{cfg.cluster_name}-spread", strategy="spread",
            spread_level="rack",
            tags=cluster_tags(cfg.cluster_name, f"{cfg.cluster_name}-spread"),
            opts=pulumi.ResourceOptions(parent=self))

        self.instance_ids = []
        self.ssh_hosts = []
        self.service_eni_ids = []
        self.payload_digests = []
        self.ready = []
        for index in range(2):
            self._node(index, ami_id, placement)

        self.register_outputs({
            "instanceIds": self.instance_ids,
            "sshHosts": self.ssh_hosts,
            "serviceEniIds": self.service_eni_ids,
            "payloadDigests": self.payload_digests,
        })

    def _node(self, index: int, ami_id: pulumi.Input[str],
              placement: aws.ec2.PlacementGroup) -> None:
        args, cfg = self._args, self._args.config
        node_name = cfg.node_names[index]
        addresses = cfg.nodes[index]
        zone = node_zone_index(cfg, index)
        # Node 1 starts as the active node holding the peer VIP, node 2 as the backup;
        # Pacemaker moves them afterwards.
        role = "active" if index == 0 else "backup"
        prefix = f"{self._name}-{index + 1}"

        def tags(what: str) -> dict[str, str]:
            return cluster_tags(cfg.cluster_name, f"{node_name}-{what}",
                                **{NODE_TAG: node_name})

        def eni(role: str, subnet_id: pulumi.Input[str], ips: list[str],
                security_group_id: pulumi.Input[str], purpose: str,
                ignore_changes: list[str] | None = None,
                source_dest_check: bool | None = None) -> aws.ec2.NetworkInterface:
            return aws.ec2.NetworkInterface(
                f"{prefix}-{role}-eni", subnet_id=subnet_id, private_ip_list_enabled=True,
                private_ip_lists=ips, security_groups=[security_group_id],
                source_dest_check=source_dest_check,
                description=f"{node_name} {role}: {purpose}", tags=tags(role),
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=ignore_changes))

        # Device index 0: the VIP agents act on the ENI of the instance's primary MAC.
        # Single-AZ, Pacemaker (awsvip) moves the VIPs, secondary IPs, between the two service
        # ENIs at failover; Pulumi must not move them back on the next `up`: it only sets the
        # VIP at creation and then ignores the ENI's address list. Multi-AZ, the ENI keeps
        # only the node's own address; the overlay IP reaches it by route
        # (components/overlay.py), which needs the source/destination check off.
        vips = [] if cfg.multi_az else [(cfg.peer_vip, cfg.citizen_vip)[index]]
        service_eni = eni("service", args.service_subnet_ids[zone],
                          [addresses.service_ip, *vips], args.service_security_group_id,
                          "VIPs, ICON, corosync link 1",
                          ignore_changes=["privateIpLists", "privateIps", "privateIpsCount"],
                          source_dest_check=False if cfg.multi_az else None)
        heartbeat_eni = eni("heartbeat", args.heartbeat_subnet_ids[zone],
                            [addresses.heartbeat_ip], args.heartbeat_security_group_id,
                            "corosync link 0")
        management_eni = eni("management", args.management_subnet_ids[zone],
                             [addresses.management_ip], args.management_security_group_id,
                             "SSH, pcsd")

        data_volume = aws.ebs.Volume(
            f"{prefix}-data", availability_zone=addresses.zone.name,
            size=cfg.data_volume_gib, type="gp3", encrypted=True, tags=tags("data"),
            # The chain data outlives instance replacements; on MainNet Pulumi refuses to
            # delete it at all.
            opts=pulumi.ResourceOptions(parent=self, protect=cfg.termination_protection))

        payload = pulumi.Output.all(
            data_volume.id, args.p2p_endpoint, args.keystore_secret_arn,
            args.keystore_password_secret_arn, args.hacluster_password_secret_arn,
            args.alert_topic_arn,
        ).apply(lambda v: node_payload(NodeSettings(
            node_name=node_name, region=cfg.region, icon_network=cfg.icon_network,
            icon_image=cfg.icon_image, data_volume_id=v[0],
            heartbeat_ip=addresses.heartbeat_ip, heartbeat_cidr=addresses.zone.heartbeat_cidr,
            management_ip=addresses.management_ip,
            management_cidr=addresses.zone.management_cidr, peer_vip=cfg.peer_vip,
            citizen_vip=cfg.citizen_vip, p2p_advertise=v[1], service_ip=addresses.service_ip,
            keystore_secret_id=v[2], keystore_password_secret_id=v[3],
            hacluster_secret_id=v[4], chain_sync=cfg.chain_sync, alert_topic_arn=v[5])))
        digest = args.payload_store.publish(node_name, payload)

        instance = aws.ec2.Instance(
            f"{prefix}-instance", ami=ami_id, instance_type=cfg.instance_type,
            placement_group=placement.name, key_name=args.key_name,
            iam_instance_profile=args.instance_profile_name,
            primary_network_interface={"network_interface_id": service_eni.id},
            metadata_options=IMDSV2_HOP_LIMIT_1,
            root_block_device=encrypted_root(cfg.root_volume_gib, tags("root")),
            disable_api_termination=cfg.termination_protection,
            # fence_aws fences by StopInstances: stop protection would disable STONITH.
            disable_api_stop=False,
            user_data_base64=user_data_for(node_name, cfg.region,
                                           args.payload_store.bucket_name, ssh_host_key=True),
            # The payload a new instance installs at first boot; a new digest changes the tag
            # only (in place) and the roll installs it on the running node.
            tags={**tags("instance"), "Name": node_name, ROLE_TAG: role, PAYLOAD_TAG: digest},
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=list(args.boot_after),
                # A newer Debian image must not replace a live validator, and user-data
                # only acts on first boot, so changing it would merely stop/start a node.
                ignore_changes=["ami", "userDataBase64"],
                # A replacement needs the old instance gone first: its primary ENI (the VIPs)
                # attaches to one instance only. Pulumi then deletes the dependents that must
                # go with it first, the node's cluster membership among them, which takes the
                # node out of the cluster before EC2 terminates it (components/cluster.py).
                delete_before_replace=True))

        attachments: list[pulumi.Resource] = [
            aws.ec2.NetworkInterfaceAttachment(
                f"{prefix}-heartbeat-eni", instance_id=instance.id,
                network_interface_id=heartbeat_eni.id, device_index=HEARTBEAT_DEVICE_INDEX,
                opts=pulumi.ResourceOptions(parent=self)),
            aws.ec2.NetworkInterfaceAttachment(
                f"{prefix}-management-eni", instance_id=instance.id,
                network_interface_id=management_eni.id, device_index=MANAGEMENT_DEVICE_INDEX,
                opts=pulumi.ResourceOptions(parent=self)),
            aws.ec2.VolumeAttachment(
                f"{prefix}-data", instance_id=instance.id, volume_id=data_volume.id,
                device_name=DATA_DEVICE, stop_instance_before_detaching=True,
                opts=pulumi.ResourceOptions(parent=self)),
        ]

        if cfg.management_access == "public":
            eip = aws.ec2.Eip(
                f"{prefix}-management-eip", domain="vpc",
                network_interface=management_eni.id,
                associate_with_private_ip=addresses.management_ip, tags=tags("management"),
                opts=pulumi.ResourceOptions(parent=self,
                                            depends_on=list(args.internet_ready)))
            attachments.append(eip)
            ssh_host: pulumi.Output[str] = eip.public_ip
        else:
            ssh_host = pulumi.Output.from_input(addresses.management_ip)

        self.instance_ids.append(instance.id)
        self.ssh_hosts.append(ssh_host)
        self.service_eni_ids.append(service_eni.id)
        self.payload_digests.append(digest)
        self.ready.extend([instance, *attachments])
