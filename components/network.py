"""The VPC side of the pair: each node zone's four subnets and routes, one group per role.

Two topologies of the same product (prep_ha/config.py):

- Single-AZ (one zone): both nodes and the arbiter share one AZ and one set of subnets. The
  peer and citizen VIPs are secondary private IPs that awsvip moves between the two service
  ENIs; a private IP belongs to one subnet, so this only works while both service ENIs are in
  the same subnet, hence the one AZ.
- Multi-AZ (two zones, the arbiter in a third): each node has its own four subnets in its
  own AZ, and its own NAT gateway, so losing one zone leaves the other's egress intact. The
  peer's address is an overlay IP outside the VPC: aws-vpc-move-ip moves a `<ip>/32` route
  in every table that must reach it (components/overlay.py) to the active node's service ENI.
  Those routes are separate aws.ec2.Route resources, and a table may not mix them with inline
  routes, so multi-AZ tables get their default routes as separate resources too. The APIs on
  the failover path (fencing, the route move, alerts, secrets) are reached through interface
  endpoints in both node zones, so a failover depends on neither NAT gateway.

Single-AZ resources keep the names and properties they were created with (no suffix, inline
routes); multi-AZ names carry the zone's suffix (`network-service-1`, `network-nat-2`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.tags import cluster_tags
from prep_ha.config import StackConfig, Zone

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
# Interface endpoints a single-AZ stack has: Secrets Manager (its policies refuse the node
# role outside the VPC). Its other API calls leave through the one NAT gateway, as created.
SINGLE_AZ_ENDPOINTS = ("secretsmanager",)
# Multi-AZ adds what the nodes' agents call on the failover path: ec2 (fence_aws,
# aws-vpc-move-ip), sns and monitoring (prep-ha-alert).
MULTI_AZ_ENDPOINTS = ("secretsmanager", "ec2", "sns", "monitoring")


def zone_suffix(cfg: StackConfig, zone_index: int) -> str:
    """Name suffix of a node zone's resources: none single-AZ (the names stacks have), -1, -2."""
    return f"-{zone_index + 1}" if cfg.multi_az else ""


def node_zone_index(cfg: StackConfig, node_index: int) -> int:
    """Index into cfg.zones (and the per-zone id lists) of node `node_index`'s zone."""
    return cfg.zones.index(cfg.nodes[node_index].zone)


@dataclass(frozen=True)
class NetworkArgs:
    config: StackConfig


@dataclass(frozen=True)
class _ZoneNetwork:
    """What one node zone's resources are to the rest of the network."""

    public: aws.ec2.Subnet
    service: aws.ec2.Subnet
    heartbeat: aws.ec2.Subnet
    management: aws.ec2.Subnet
    nat: aws.ec2.NatGateway
    public_table: aws.ec2.RouteTable
    service_table: aws.ec2.RouteTable


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    # Per node zone, in cfg.zones order (single-AZ: one entry; node_zone_index picks a node's).
    nat_gateway_ids: list[pulumi.Output[str]]
    public_subnet_ids: list[pulumi.Output[str]]
    service_subnet_ids: list[pulumi.Output[str]]
    heartbeat_subnet_ids: list[pulumi.Output[str]]
    management_subnet_ids: list[pulumi.Output[str]]
    # Multi-AZ: the tables that must reach the overlay IP (both service tables, and both
    # public ones, the NLB's), by table role (`service-1`); single-AZ: empty.
    overlay_route_table_ids: dict[str, pulumi.Output[str]]
    secrets_endpoint_id: pulumi.Output[str]
    # Interface endpoints by service name (secretsmanager, and multi-AZ ec2, sns, monitoring).
    api_endpoint_ids: dict[str, pulumi.Output[str]]
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

        vpc_id, igw_id = self._vpc()
        zones = [self._zone(i, zone, vpc_id, igw_id) for i, zone in enumerate(cfg.zones)]
        self._security_groups(vpc_id)

        endpoints = MULTI_AZ_ENDPOINTS if cfg.multi_az else SINGLE_AZ_ENDPOINTS
        self.api_endpoint_ids = self._api_endpoints(vpc_id, [z.service for z in zones],
                                                    endpoints)
        self.secrets_endpoint_id = self.api_endpoint_ids["secretsmanager"]
        # S3 (the payloads, components/payload.py) inside the VPC too: the nodes' calls leave
        # from their service address, so the service tables get the endpoint's routes (the
        # arbiter adds its own table).
        self.s3_endpoint = aws.ec2.VpcEndpoint(
            f"{name}-s3", vpc_id=vpc_id, vpc_endpoint_type="Gateway",
            service_name=f"com.amazonaws.{cfg.region}.s3",
            route_table_ids=[z.service_table.id for z in zones],
            tags=self._tags("s3"), opts=pulumi.ResourceOptions(parent=self))

        self.vpc_id = vpc_id
        self.nat_gateway_ids = [z.nat.id for z in zones]
        self.public_subnet_ids = [z.public.id for z in zones]
        self.service_subnet_ids = [z.service.id for z in zones]
        self.heartbeat_subnet_ids = [z.heartbeat.id for z in zones]
        self.management_subnet_ids = [z.management.id for z in zones]
        self.overlay_route_table_ids = {}
        if cfg.multi_az:
            # The NLB's tables first: aws-vpc-move-ip replaces the routes in this order, a
            # second or two apart, and the peer's inbound traffic follows the public ones.
            for role in ("public", "service"):
                for i, z in enumerate(zones):
                    table = z.public_table if role == "public" else z.service_table
                    self.overlay_route_table_ids[f"{role}{zone_suffix(cfg, i)}"] = table.id
        self.register_outputs({
            "vpcId": vpc_id,
            **self._per_zone("publicSubnetId", self.public_subnet_ids),
            **self._per_zone("serviceSubnetId", self.service_subnet_ids),
            **self._per_zone("heartbeatSubnetId", self.heartbeat_subnet_ids),
            **self._per_zone("managementSubnetId", self.management_subnet_ids),
            **self._per_zone("natGatewayId", self.nat_gateway_ids),
            "secretsEndpointId": self.secrets_endpoint_id,
            "s3EndpointId": self.s3_endpoint.id,
        })

    def _per_zone(self, key: str, values: list[pulumi.Output[str]]) -> dict[str, object]:
        # Single-AZ components keep the outputs they were created with.
        return {f"{key}s": values} if self._cfg.multi_az else {key: values[0]}

    def _vpc(self) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        """The VPC and its internet gateway: created, or the existing VPC's (vpcId)."""
        cfg, child = self._cfg, pulumi.ResourceOptions(parent=self)
        if cfg.vpc_id is None:
            vpc = aws.ec2.Vpc(
                f"{self._name}-vpc", cidr_block=cfg.vpc_cidr, enable_dns_support=True,
                enable_dns_hostnames=True, tags=self._tags("vpc"), opts=child)
            igw = aws.ec2.InternetGateway(
                f"{self._name}-igw", vpc_id=vpc.id, tags=self._tags("igw"), opts=child)
            self.internet_ready = [igw]
            return vpc.id, igw.id
        # An internet-facing NLB and a NAT gateway need the existing VPC's gateway.
        self.internet_ready = []
        igw_id = aws.ec2.get_internet_gateway_output(
            filters=[{"name": "attachment.vpc-id", "values": [cfg.vpc_id]}],
            opts=pulumi.InvokeOutputOptions(parent=self)).internet_gateway_id
        return pulumi.Output.from_input(cfg.vpc_id), igw_id

    def _zone(self, index: int, zone: Zone, vpc_id: pulumi.Output[str],
              igw_id: pulumi.Output[str]) -> _ZoneNetwork:
        """A node zone's four subnets, its NAT gateway and the subnets' route tables."""
        sfx = zone_suffix(self._cfg, index)
        public = self._subnet(f"public{sfx}", vpc_id, zone.public_cidr, zone.name)
        service = self._subnet(f"service{sfx}", vpc_id, zone.service_cidr, zone.name)
        heartbeat = self._subnet(f"heartbeat{sfx}", vpc_id, zone.heartbeat_cidr, zone.name)
        management = self._subnet(f"management{sfx}", vpc_id, zone.management_cidr, zone.name)

        after_igw = pulumi.ResourceOptions(parent=self, depends_on=self.internet_ready)
        nat_eip = aws.ec2.Eip(f"{self._name}-nat-eip{sfx}", domain="vpc",
                              tags=self._tags(f"nat{sfx}"), opts=after_igw)
        nat = aws.ec2.NatGateway(
            f"{self._name}-nat{sfx}", allocation_id=nat_eip.allocation_id, subnet_id=public.id,
            tags=self._tags(f"nat{sfx}"), opts=after_igw)

        public_table = self._route_table(f"public{sfx}", vpc_id, public, {"gateway_id": igw_id})
        # Nodes reach ICON peers and Docker Hub (and, single-AZ, the AWS APIs but Secrets
        # Manager) through their zone's NAT gateway; inbound ICON traffic comes via the NLB.
        service_table = self._route_table(f"service{sfx}", vpc_id, service,
                                          {"nat_gateway_id": nat.id})
        # Corosync link 0 needs no route out: the VPC's local route joins the heartbeat
        # subnets, on-link in one AZ, across the zones' subnets in multi-AZ.
        self._route_table(f"heartbeat{sfx}", vpc_id, heartbeat, None)
        # "public": admins reach the management Elastic IPs through the IGW. "private":
        # they come in by VPN or peering, which the operator routes.
        self._route_table(f"management{sfx}", vpc_id, management,
                          {"gateway_id": igw_id} if self._cfg.management_access == "public"
                          else None)
        return _ZoneNetwork(public, service, heartbeat, management, nat, public_table,
                            service_table)

    def _security_groups(self, vpc_id: pulumi.Output[str]) -> None:
        cfg = self._cfg
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
        self._egress(service_sg, [ANYWHERE], "ICON peers, registries and AWS APIs via NAT")

        self._ingress(heartbeat_sg, "corosync", "udp", COROSYNC_PORTS, _hosts(heartbeat_ips),
                      "corosync knet link 0 from the nodes")
        # pcsd listens on the heartbeat address only (cloud-init/files/pcsd-bind.conf); the
        # nodes' pcs reach each other there (the guide's pcmk*-hb names).
        self._ingress(heartbeat_sg, "pcsd", "tcp", (PCSD_PORT, PCSD_PORT), _hosts(heartbeat_ips),
                      "pcsd from the nodes")
        self._egress(heartbeat_sg, [z.heartbeat_cidr for z in cfg.zones],
                     "corosync link 0 and pcsd")

        self._ingress(management_sg, "ssh", "tcp", (SSH_PORT, SSH_PORT), list(cfg.admin_cidrs),
                      "SSH from admins")
        # No pcsd here: admins run pcs on a node over SSH, so pcsd never faces the internet.
        # Cluster metrics for a Prometheus inside a management subnet; never from the admin
        # networks (the management Elastic IPs face the internet).
        self._ingress(management_sg, "hacluster-exporter", "tcp",
                      (HACLUSTER_EXPORTER_PORT, HACLUSTER_EXPORTER_PORT),
                      [z.management_cidr for z in cfg.zones], "prometheus-hacluster-exporter")
        self._egress(management_sg, [ANYWHERE], "replies to admins via the management route")

        self.service_security_group_id = service_sg.id
        self.heartbeat_security_group_id = heartbeat_sg.id
        self.management_security_group_id = management_sg.id

    def _api_endpoints(self, vpc_id: pulumi.Output[str], subnets: list[aws.ec2.Subnet],
                       services: tuple[str, ...]) -> dict[str, pulumi.Output[str]]:
        """Interface endpoints with private DNS, one ENI in each node zone's service subnet:
        the nodes' (and the arbiter's) SDK calls go through them. Secrets Manager's lets the
        secrets' resource policies refuse the node role anywhere else (aws:SourceVpc): stolen
        role credentials cannot read the key from outside. Multi-AZ, a node's failover calls
        stay in its own zone."""
        what = "the AWS API endpoints" if self._cfg.multi_az else "the Secrets Manager endpoint"
        sg = self._security_group("secrets-endpoint", vpc_id,
                                  f"HTTPS to {what} from the stack's VPC")
        self._ingress(sg, "https", "tcp", (HTTPS_PORT, HTTPS_PORT), [self._cfg.vpc_cidr],
                      "AWS APIs from the stack's instances" if self._cfg.multi_az
                      else "Secrets Manager API from the stack's instances")
        return {service: aws.ec2.VpcEndpoint(
            f"{self._name}-{service}", vpc_id=vpc_id, vpc_endpoint_type="Interface",
            service_name=f"com.amazonaws.{self._cfg.region}.{service}",
            subnet_ids=[s.id for s in subnets], security_group_ids=[sg.id],
            private_dns_enabled=True, tags=self._tags(service),
            opts=pulumi.ResourceOptions(parent=self)).id for service in services}

    def _tags(self, role: str) -> dict[str, str]:
        # The cluster tag also scopes the nodes' ec2:ReplaceRoute to these route tables.
        return cluster_tags(self._cfg.cluster_name, f"{self._cfg.cluster_name}-{role}")

    def _subnet(self, role: str, vpc_id: pulumi.Input[str], cidr: str,
                zone: str) -> aws.ec2.Subnet:
        return aws.ec2.Subnet(
            f"{self._name}-{role}", vpc_id=vpc_id, cidr_block=cidr, availability_zone=zone,
            map_public_ip_on_launch=False, tags=self._tags(role),
            opts=pulumi.ResourceOptions(parent=self))

    def _route_table(self, role: str, vpc_id: pulumi.Input[str], subnet: aws.ec2.Subnet,
                     default_route: dict[str, pulumi.Input[str]] | None) -> aws.ec2.RouteTable:
        child = pulumi.ResourceOptions(parent=self)
        # Multi-AZ tables take the overlay routes as aws.ec2.Route, which an inline `routes`
        # list would delete: all their routes are separate resources. Single-AZ tables keep
        # the inline routes they were created with.
        inline = not self._cfg.multi_az
        routes = [{"cidr_block": ANYWHERE, **default_route}] if default_route else []
        table = aws.ec2.RouteTable(
            f"{self._name}-{role}-rt", vpc_id=vpc_id, routes=routes if inline else None,
            tags=self._tags(role), opts=child)
        if default_route and not inline:
            aws.ec2.Route(f"{self._name}-{role}-default", route_table_id=table.id,
                          destination_cidr_block=ANYWHERE, **default_route, opts=child)
        aws.ec2.RouteTableAssociation(
            f"{self._name}-{role}-rta", subnet_id=subnet.id, route_table_id=table.id,
            opts=child)
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

    def _egress(self, sg: aws.ec2.SecurityGroup, cidrs: list[str], description: str) -> None:
        for i, cidr in enumerate(cidrs):
            # The first rule keeps the name single-destination groups were created with.
            aws.vpc.SecurityGroupEgressRule(
                f"{self._sg_names[sg]}-egress{f'-{i}' if i else ''}", security_group_id=sg.id,
                ip_protocol="-1", cidr_ipv4=cidr, description=description,
                opts=pulumi.ResourceOptions(parent=self))


def _hosts(ips: list[str]) -> list[str]:
    return [f"{ip}/32" for ip in ips]
