"""The VPC side of the pair: four subnets in one AZ, their routes, and one security group per role.

All subnets share one AZ because awsvip moves a secondary private IP between the two
service ENIs, and a private IP belongs to one subnet (cross-AZ needs aws-vpc-move-ip).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.tags import cluster_tags
from prep_ha.config import StackConfig

# corosync knet listens on 5405; 5404-5406 covers the classic udpu layout too.
COROSYNC_PORTS = (5404, 5406)
PCSD_PORT = 2224
SSH_PORT = 22
ICON_P2P_PORT = 7100
ICON_RPC_PORT = 9000
HTTPS_PORT = 443
# prometheus-hacluster-exporter (cloud-init/files/ha-cluster-exporter.conf).
HACLUSTER_EXPORTER_PORT = 9664
ANYWHERE = "0.0.0.0/0"


@dataclass(frozen=True)
class NetworkArgs:
    config: StackConfig


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    nat_gateway_id: pulumi.Output[str]
    public_subnet_id: pulumi.Output[str]
    service_subnet_id: pulumi.Output[str]
    heartbeat_subnet_id: pulumi.Output[str]
    management_subnet_id: pulumi.Output[str]
    secrets_endpoint_id: pulumi.Output[str]
    s3_endpoint: aws.ec2.VpcEndpoint
    service_security_group_id: pulumi.Output[str]
    heartbeat_security_group_id: pulumi.Output[str]
    management_security_group_id: pulumi.Output[str]
    # What public addresses (NLB, NAT, Elastic IPs) must wait for.
    internet_ready: list[pulumi.Resource]

    def __init__(self, name: str, args: NetworkArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("icon-prep-ha:network:Network", name, None, opts)
        cfg = args.config
        self._cfg = cfg
        self._name = name
        self._sg_names: dict[aws.ec2.SecurityGroup, str] = {}
        child = pulumi.ResourceOptions(parent=self)

        if cfg.vpc_id is None:
            vpc = aws.ec2.Vpc(
                f"{name}-vpc", cidr_block=cfg.vpc_cidr, enable_dns_support=True,
                enable_dns_hostnames=True, tags=self._tags("vpc"), opts=child)
            vpc_id: pulumi.Output[str] = vpc.id
            igw = aws.ec2.InternetGateway(
                f"{name}-igw", vpc_id=vpc_id, tags=self._tags("igw"), opts=child)
            igw_id: pulumi.Output[str] = igw.id
            self.internet_ready = [igw]
        else:
            # An internet-facing NLB and a NAT gateway need the existing VPC's gateway.
            vpc_id = pulumi.Output.from_input(cfg.vpc_id)
            igw_id = aws.ec2.get_internet_gateway_output(
                filters=[{"name": "attachment.vpc-id", "values": [cfg.vpc_id]}],
                opts=pulumi.InvokeOutputOptions(parent=self)).internet_gateway_id
            self.internet_ready = []

        public = self._subnet("public", vpc_id, cfg.public_subnet_cidr)
        service = self._subnet("service", vpc_id, cfg.service_subnet_cidr)
        heartbeat = self._subnet("heartbeat", vpc_id, cfg.heartbeat_subnet_cidr)
        management = self._subnet("management", vpc_id, cfg.management_subnet_cidr)

        nat_eip = aws.ec2.Eip(
            f"{name}-nat-eip", domain="vpc", tags=self._tags("nat"),
            opts=pulumi.ResourceOptions(parent=self, depends_on=self.internet_ready))
        nat = aws.ec2.NatGateway(
            f"{name}-nat", allocation_id=nat_eip.allocation_id, subnet_id=public.id,
            tags=self._tags("nat"),
            opts=pulumi.ResourceOptions(parent=self, depends_on=self.internet_ready))

        self._route_table("public", vpc_id, public, {"gateway_id": igw_id})
        # Nodes reach ICON peers, Docker Hub and the AWS APIs (fence_aws, awsvip, Secrets
        # Manager) through the NAT gateway; their inbound ICON traffic comes via the NLB.
        service_table = self._route_table("service", vpc_id, service,
                                          {"nat_gateway_id": nat.id})
        # Corosync link 0 is on-link between the two nodes: no route out at all.
        self._route_table("heartbeat", vpc_id, heartbeat, None)
        # "public": admins reach the management Elastic IPs through the IGW. "private":
        # they come in by VPN or peering, which the operator routes.
        self._route_table("management", vpc_id, management,
                          {"gateway_id": igw_id} if cfg.management_access == "public" else None)

        service_sg = self._security_group("service", vpc_id,
                                          "ICON P2P and JSON-RPC via the NLB; corosync link 1")
        heartbeat_sg = self._security_group("heartbeat", vpc_id,
                                            "corosync link 0 between the nodes")
        management_sg = self._security_group("management", vpc_id, "SSH from admins")
        node_ips = [n.service_ip for n in cfg.nodes]
        heartbeat_ips = [n.heartbeat_ip for n in cfg.nodes]

        # The NLB does not preserve client IPs (see components/loadbalancer.py), so these
        # arrive from its private addresses; the ENIs have no public address, so the wide
        # source only admits what the NLB forwards to the ICON ports.
        self._ingress(service_sg, "p2p", "tcp", (ICON_P2P_PORT, ICON_P2P_PORT), [ANYWHERE],
                      "ICON P2P")
        self._ingress(service_sg, "rpc", "tcp", (ICON_RPC_PORT, ICON_RPC_PORT), [ANYWHERE],
                      "ICON JSON-RPC")
        # One group serves both nodes, so it names both /32s; a node's own address adds nothing.
        self._ingress(service_sg, "corosync", "udp", COROSYNC_PORTS, _hosts(node_ips),
                      "corosync knet link 1 from the nodes")
        self._egress(service_sg, ANYWHERE, "ICON peers, registries and AWS APIs via NAT")

        self._ingress(heartbeat_sg, "corosync", "udp", COROSYNC_PORTS, _hosts(heartbeat_ips),
                      "corosync knet link 0 from the nodes")
        # pcsd listens on the heartbeat address only (cloud-init/files/pcsd-bind.conf); the
        # nodes' pcs reach each other there (the guide's pcmk*-hb names).
        self._ingress(heartbeat_sg, "pcsd", "tcp", (PCSD_PORT, PCSD_PORT), _hosts(heartbeat_ips),
                      "pcsd from the nodes")
        self._egress(heartbeat_sg, cfg.heartbeat_subnet_cidr, "corosync link 0 and pcsd")

        self._ingress(management_sg, "ssh", "tcp", (SSH_PORT, SSH_PORT), list(cfg.admin_cidrs),
                      "SSH from admins")
        # No pcsd here: admins run pcs on a node over SSH, so pcsd never faces the internet.
        # Cluster metrics for a Prometheus inside the management subnet; never from the
        # admin networks (the management Elastic IPs face the internet).
        self._ingress(management_sg, "hacluster-exporter", "tcp",
                      (HACLUSTER_EXPORTER_PORT, HACLUSTER_EXPORTER_PORT),
                      [cfg.management_subnet_cidr], "prometheus-hacluster-exporter")
        self._egress(management_sg, ANYWHERE, "replies to admins via the management route")

        self.secrets_endpoint_id = self._secrets_endpoint(vpc_id, service)
        # S3 (the payloads, components/payload.py) inside the VPC too: the nodes' calls leave
        # from their service address, so its route table gets the endpoint's routes (the
        # arbiter adds its own table).
        self.s3_endpoint = aws.ec2.VpcEndpoint(
            f"{name}-s3", vpc_id=vpc_id, vpc_endpoint_type="Gateway",
            service_name=f"com.amazonaws.{cfg.region}.s3", route_table_ids=[service_table.id],
            tags=self._tags("s3"), opts=child)

        self.vpc_id = vpc_id
        self.nat_gateway_id = nat.id
        self.public_subnet_id = public.id
        self.service_subnet_id = service.id
        self.heartbeat_subnet_id = heartbeat.id
        self.management_subnet_id = management.id
        self.service_security_group_id = service_sg.id
        self.heartbeat_security_group_id = heartbeat_sg.id
        self.management_security_group_id = management_sg.id
        self.register_outputs({
            "vpcId": vpc_id,
            "publicSubnetId": public.id,
            "serviceSubnetId": service.id,
            "heartbeatSubnetId": heartbeat.id,
            "managementSubnetId": management.id,
            "natGatewayId": nat.id,
            "secretsEndpointId": self.secrets_endpoint_id,
            "s3EndpointId": self.s3_endpoint.id,
        })

    def _secrets_endpoint(self, vpc_id: pulumi.Input[str],
                          service: aws.ec2.Subnet) -> pulumi.Output[str]:
        """Secrets Manager inside the VPC: with private DNS the nodes' (and the arbiter's) calls
        go through it, so the secrets' resource policies can refuse the node role anywhere
        else (aws:SourceVpc): stolen role credentials cannot read the key from outside."""
        sg = self._security_group("secrets-endpoint", vpc_id,
                                  "HTTPS to the Secrets Manager endpoint from the stack's VPC")
        self._ingress(sg, "https", "tcp", (HTTPS_PORT, HTTPS_PORT), [self._cfg.vpc_cidr],
                      "Secrets Manager API from the stack's instances")
        endpoint = aws.ec2.VpcEndpoint(
            f"{self._name}-secretsmanager", vpc_id=vpc_id, vpc_endpoint_type="Interface",
            service_name=f"com.amazonaws.{self._cfg.region}.secretsmanager",
            subnet_ids=[service.id], security_group_ids=[sg.id], private_dns_enabled=True,
            tags=self._tags("secretsmanager"), opts=pulumi.ResourceOptions(parent=self))
        return endpoint.id

    def _tags(self, role: str) -> dict[str, str]:
        return cluster_tags(self._cfg.cluster_name, f"{self._cfg.cluster_name}-{role}")

    def _subnet(self, role: str, vpc_id: pulumi.Input[str], cidr: str) -> aws.ec2.Subnet:
        return aws.ec2.Subnet(
            f"{self._name}-{role}", vpc_id=vpc_id, cidr_block=cidr,
            availability_zone=self._cfg.availability_zone, map_public_ip_on_launch=False,
            tags=self._tags(role), opts=pulumi.ResourceOptions(parent=self))

    def _route_table(self, role: str, vpc_id: pulumi.Input[str], subnet: aws.ec2.Subnet,
                     default_route: dict[str, pulumi.Input[str]] | None) -> aws.ec2.RouteTable:
        routes = [{"cidr_block": ANYWHERE, **default_route}] if default_route else []
        table = aws.ec2.RouteTable(
            f"{self._name}-{role}-rt", vpc_id=vpc_id, routes=routes, tags=self._tags(role),
            opts=pulumi.ResourceOptions(parent=self))
        aws.ec2.RouteTableAssociation(
            f"{self._name}-{role}-rta", subnet_id=subnet.id, route_table_id=table.id,
            opts=pulumi.ResourceOptions(parent=self))
        return table

    def _security_group(self, role: str, vpc_id: pulumi.Input[str],
                        description: str) -> aws.ec2.SecurityGroup:
        # Rules are separate resources (below) so each one is visible to review and policy.
        sg = aws.ec2.SecurityGroup(
            f"{self._name}-{role}-sg", vpc_id=vpc_id, description=description,
            tags=self._tags(role), opts=pulumi.ResourceOptions(parent=self))
        self._sg_names[sg] = f"{self._name}-{role}"
        return sg

    def _ingress(self, sg: aws.ec2.SecurityGroup, label: str, protocol: str,
                 ports: tuple[int, int], cidrs: list[str], description: str) -> None:
        for i, cidr in enumerate(cidrs):
            aws.vpc.SecurityGroupIngressRule(
                f"{self._sg_names[sg]}-{label}-{i}", security_group_id=sg.id, ip_protocol=protocol,
                from_port=ports[0], to_port=ports[1], cidr_ipv4=cidr, description=description,
                opts=pulumi.ResourceOptions(parent=self))

    def _egress(self, sg: aws.ec2.SecurityGroup, cidr: str, description: str) -> None:
        aws.vpc.SecurityGroupEgressRule(
            f"{self._sg_names[sg]}-egress", security_group_id=sg.id, ip_protocol="-1",
            cidr_ipv4=cidr, description=description, opts=pulumi.ResourceOptions(parent=self))


def _hosts(ips: list[str]) -> list[str]:
    return [f"{ip}/32" for ip in ips]
