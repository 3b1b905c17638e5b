"""A program.Cloud backed by moto: each resource the program declares, created through boto3.

ids, ARNs, MAC addresses and user-data are then moto's own, consistent with what the nodes see
through the EC2 API and the IMDS (lab/imds.py). Numbers arrive from Pulumi as floats and
property names in the provider's camelCase; both are translated to the EC2 API's here.

Real in moto:
  aws:ec2 Vpc, InternetGateway (attached), Subnet, RouteTable (+ routes), Route (the
  multi-AZ overlay routes, which aws-vpc-move-ip then replaces), RouteTableAssociation,
  SecurityGroup (default egress revoked, as the AWS provider does),
  aws:vpc SecurityGroupIngressRule / SecurityGroupEgressRule, Eip (from 203.0.113.0/24 by
  `Address=`, associated with its ENI and private IP), NatGateway, NetworkInterface,
  NetworkInterface source/destination check, Instance (run_instances with the primary ENI as
  device 0), NetworkInterfaceAttachment,
  KeyPair (import_key_pair), aws:ebs Volume, VolumeAttachment; aws:iam Role, RolePolicy,
  InstanceProfile (role added); aws:secretsmanager Secret, SecretVersion; aws:lb
  LoadBalancer (network, EIP subnet mapping), TargetGroup (+ attributes),
  TargetGroupAttachment (with its AvailabilityZone), Listener.
  Invokes: getAmi (describe_images with the program's owners and filters; seed_debian_amis
  puts Debian's images into moto, else one is registered), getInternetGateway (describe).
  aws:kms Key; aws:secretsmanager SecretPolicy (stored; moto enforces no resource policy);
  aws:ec2 VpcEndpoint (recorded; the lab's DNS sends every AWS API name to moto anyway).
  aws:sns Topic, TopicSubscription; aws:cloudwatch MetricAlarm (moto never evaluates it:
  lab/alerts.py reads what the nodes' alert agent published). Invoke getCallerIdentity.
  aws:s3 Bucket, BucketObjectv2 (the payloads the nodes fetch), BucketPublicAccessBlock,
  BucketOwnershipControls, BucketServerSideEncryptionConfiguration; BucketPolicy (recorded
  in `bucket_policies`, not applied: moto lacks the request context it conditions on);
  aws:ec2 VpcEndpointRouteTableAssociation.
Run here: command:local:Command (`create` in a shell in the project directory, as
  pulumi-command runs it on the operator's machine, with AWS_ENDPOINT_URL set to moto),
  unless registered after a remote Command: then the lab runs it with the remote ones.
Not cloud resources, answered here: tls PrivateKey (the admin key is the caller's ed25519 key
  pair, other keys are generated; with the provider's fingerprint and PEM outputs), random
  RandomPassword (fresh per deploy, kept in memory for leak searches).
Faked (program.FakeCloud outputs): aws:ec2 PlacementGroup (moto has no
  CreatePlacementGroup; run_instances ignores the group), command:remote:Command (recorded,
  run later over SSH by the lab), component resources, getPartition ("aws"), and any type
  not listed above.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import string
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from lab.program import ACCOUNT, FakeCloud
from prep_ha.release import DEBIAN_VERSION

# TEST-NET-3 (RFC 5737): Elastic IPs exist only inside the lab's namespaces. Above the
# stacks' admin /28 (203.0.113.0/28, where the lab client lives) so none looks like an admin.
EIP_POOL = tuple(f"203.0.113.{i}" for i in range(100, 255))
# The lab's Debian image (seeded by seed_debian_amis, else registered on first lookup), named
# as Debian names the release's AMIs.
DEBIAN_AMI_NAME = f"debian-{DEBIAN_VERSION}-{{arch}}-20251117-2299"
DEBIAN_AMI_OWNER = "136693071363"
ADMIN_KEY = "admin-ssh-key"  # components/secrets.py AdminSshKey("admin-ssh")
# boto3's S3 client settings for moto's endpoint: path-style (the endpoint is an address, no
# bucket name can prefix it), and plain bodies (moto stores an aws-chunked upload with a
# checksum trailer, botocore's default over TLS, as an empty object).
S3_CLIENT = {"s3": {"addressing_style": "path"}, "request_checksum_calculation": "when_required"}


def _new_ed25519_key() -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, public


def _tags(resource_type: str, tags: Mapping[str, str] | None) -> list[dict[str, Any]]:
    if not tags:
        return []
    return [{"ResourceType": resource_type,
             "Tags": [{"Key": k, "Value": str(v)} for k, v in tags.items()]}]


def _number(value: Any) -> Any:
    """Pulumi sends every number as a float; boto3 wants integers where EC2 does."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _autoname(name: str) -> str:
    # Pulumi's auto-naming: the logical name plus a random suffix of 7 characters.
    return f"{name}-{secrets.token_hex(4)[:7]}"


def _ssh_fingerprints(public_openssh: str) -> dict[str, str]:
    blob = base64.b64decode(public_openssh.split()[1])
    sha = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    md5 = hashlib.md5(blob).hexdigest()  # noqa: S324 - the fingerprint format, not security
    return {"publicKeyFingerprintSha256": f"SHA256:{sha}",
            "publicKeyFingerprintMd5": ":".join(md5[i:i + 2] for i in range(0, 32, 2))}


def _pem_outputs(private_openssh: str) -> dict[str, str]:
    """The tls provider's PEM outputs for an ed25519 key (PKCS#8), from the OpenSSH key."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_private_key(private_openssh.encode(), password=None)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return {"privateKeyPem": pem, "privateKeyPemPkcs8": pem, "publicKeyPem": public_pem}


def _password(inputs: Mapping[str, Any]) -> str:
    """What random.RandomPassword would generate for these inputs (length and classes)."""
    length = int(inputs.get("length", 16))
    special = inputs.get("overrideSpecial") or "!@#$%&*()-_=+[]{}<>:?"
    classes = [c for flag, c in (("upper", string.ascii_uppercase),
                                 ("lower", string.ascii_lowercase),
                                 ("numeric", string.digits), ("special", special))
               if inputs.get(flag, True)]
    alphabet = "".join(classes)
    while True:
        value = "".join(secrets.choice(alphabet) for _ in range(length))
        if length < len(classes) or all(any(ch in c for ch in value) for c in classes):
            return value


def _debian_ami_name(args: Mapping[str, Any]) -> str:
    arch = next((f["values"][0] for f in args.get("filters", []) if f["name"] == "architecture"),
                "x86_64")
    return DEBIAN_AMI_NAME.format(arch="arm64" if arch == "arm64" else "amd64")


def seed_debian_amis(region: str, account: str = ACCOUNT) -> dict[str, str]:
    """In the moto process: Debian AMIs of the nodes' release as Debian publishes them (owner,
    architecture, hvm, /dev/xvda), so the program's lookup finds one by its own owners and
    filters.

    Returns {architecture: image id}; idempotent.
    """
    from moto.backends import get_backend
    from moto.ec2.models.amis import Ami

    backend = get_backend("ec2")[account][region]
    seeded = {}
    for arch, deb in (("x86_64", "amd64"), ("arm64", "arm64")):
        name = DEBIAN_AMI_NAME.format(arch=deb)
        found = [a for a in backend.amis.values() if a.name == name]
        if not found:
            ami_id = "ami-" + hashlib.sha256(f"{region}{name}".encode()).hexdigest()[:17]
            backend.amis[ami_id] = Ami(
                backend, ami_id, name=name, description=f"Debian {DEBIAN_VERSION} ({deb})",
                owner_id=DEBIAN_AMI_OWNER, public=True, virtualization_type="hvm",
                architecture=arch, root_device_type="ebs", root_device_name="/dev/xvda",
                hypervisor="xen", region_name=f"{region}a", boot_mode="uefi-preferred")
            found = [backend.amis[ami_id]]
        seeded[arch] = found[0].id
    return seeded


class MotoCloud:
    """A program.Cloud that creates each resource in moto (see the module docstring)."""

    def __init__(self, *, endpoint: str, ca_bundle: str | None, region: str,
                 ssh_key: tuple[str, str], eip_pool: Iterable[str] = EIP_POOL) -> None:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(aws_access_key_id="lab", aws_secret_access_key="lab",
                                        region_name=region)
        verify: bool | str = ca_bundle if ca_bundle else True

        def client(service: str, **config: Any) -> Any:
            return session.client(service, endpoint_url=endpoint, verify=verify,
                                  config=Config(**config))

        self.region = region
        self.ec2, self.iam = client("ec2"), client("iam")
        self.secretsmanager, self.elbv2 = client("secretsmanager"), client("elbv2")
        self.kms = client("kms")
        self.s3 = client("s3", **S3_CLIENT)
        self.sns, self.cloudwatch, self.sts = client("sns"), client("cloudwatch"), client("sts")
        # What a local Command's process needs to reach this cloud as the operator's
        # machine reaches AWS (boto3 honours AWS_ENDPOINT_URL and AWS_CA_BUNDLE).
        self.local_env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "lab",
                          "AWS_SECRET_ACCESS_KEY": "lab", "AWS_DEFAULT_REGION": region,
                          **({"AWS_CA_BUNDLE": ca_bundle} if ca_bundle else {})}
        self.local_outputs: dict[str, str] = {}
        # Local Commands registered after a remote one may need the nodes (the image roll):
        # they are left for the lab to run after the remote ones, as the engine would.
        self.remote_commands_seen = False
        self.deferred_local_commands: list[str] = []
        self.ssh_private_key, self.ssh_public_key = ssh_key
        self.fake = FakeCloud(region)
        # Generated here, per deploy; never written anywhere by this module.
        self.passwords: dict[str, str] = {}
        self.secret_values: dict[str, str] = {}
        self.bucket_policies: dict[str, str] = {}
        self._eip_pool = list(eip_pool)

    # -- provider functions -------------------------------------------------------------
    def call(self, token: str, args: dict[str, Any]) -> dict[str, Any]:
        if token == "aws:ec2/getAmi:getAmi":
            return self._get_ami(args)
        if token == "aws:ec2/getInternetGateway:getInternetGateway":
            filters = [{"Name": f["name"], "Values": f["values"]} for f in args.get("filters", [])]
            [igw] = self.ec2.describe_internet_gateways(Filters=filters)["InternetGateways"]
            return {"id": igw["InternetGatewayId"], "internetGatewayId": igw["InternetGatewayId"]}
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            me = self.sts.get_caller_identity()
            return {"id": me["Account"], "accountId": me["Account"], "arn": me["Arn"],
                    "userId": me["UserId"]}
        return self.fake.call(token, args)

    def _get_ami(self, args: dict[str, Any]) -> dict[str, Any]:
        filters = [{"Name": f["name"], "Values": f["values"]} for f in args.get("filters", [])]
        images = self.ec2.describe_images(Owners=args.get("owners") or [],
                                          Filters=filters)["Images"]
        if not images:
            # Not seeded (seed_debian_amis): moto registers images only under the lab's own
            # account and without architecture, so match ours by name alone.
            by_name = [f for f in filters if f["Name"] == "name"]
            images = self.ec2.describe_images(Owners=["self"], Filters=by_name)["Images"]
        if not images:
            image_id = self.ec2.register_image(
                Name=_debian_ami_name(args),
                Description=f"Debian {DEBIAN_VERSION} (lab)")["ImageId"]
            images = self.ec2.describe_images(ImageIds=[image_id])["Images"]
        image = max(images, key=lambda i: i.get("CreationDate", ""))
        return {"id": image["ImageId"], "imageId": image["ImageId"], "name": image["Name"],
                "architecture": image.get("Architecture") or "x86_64",
                "ownerId": image.get("OwnerId", ""),
                "rootDeviceName": image.get("RootDeviceName", "/dev/xvda")}

    # -- resources ------------------------------------------------------------------------
    def new_resource(self, type_: str, name: str,
                     inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if type_ == "command:remote:Command":
            self.remote_commands_seen = True
        handler = self._handlers().get(type_)
        if handler is None:
            return self.fake.new_resource(type_, name, inputs)
        return handler(name, inputs)

    def _handlers(self) -> dict[str, Any]:
        return {
            "aws:ec2/vpc:Vpc": self._vpc,
            "aws:ec2/internetGateway:InternetGateway": self._internet_gateway,
            "aws:ec2/subnet:Subnet": self._subnet,
            "aws:ec2/routeTable:RouteTable": self._route_table,
            "aws:ec2/routeTableAssociation:RouteTableAssociation": self._route_table_association,
            "aws:ec2/securityGroup:SecurityGroup": self._security_group,
            "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": self._ingress_rule,
            "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": self._egress_rule,
            "aws:ec2/eip:Eip": self._eip,
            "aws:ec2/natGateway:NatGateway": self._nat_gateway,
            "aws:ec2/networkInterface:NetworkInterface": self._network_interface,
            "aws:ec2/route:Route": self._route,
            "aws:ec2/instance:Instance": self._instance,
            "aws:ec2/networkInterfaceAttachment:NetworkInterfaceAttachment":
                self._network_interface_attachment,
            "aws:ec2/keyPair:KeyPair": self._key_pair,
            "aws:ebs/volume:Volume": self._volume,
            "aws:ec2/volumeAttachment:VolumeAttachment": self._volume_attachment,
            "aws:iam/role:Role": self._role,
            "aws:iam/rolePolicy:RolePolicy": self._role_policy,
            "aws:iam/instanceProfile:InstanceProfile": self._instance_profile,
            "aws:secretsmanager/secret:Secret": self._secret,
            "aws:secretsmanager/secretVersion:SecretVersion": self._secret_version,
            "aws:secretsmanager/secretPolicy:SecretPolicy": self._secret_policy,
            "aws:kms/key:Key": self._kms_key,
            "aws:ec2/vpcEndpoint:VpcEndpoint": self._vpc_endpoint,
            "aws:ec2/vpcEndpointRouteTableAssociation:VpcEndpointRouteTableAssociation":
                self._vpc_endpoint_route_table,
            "aws:s3/bucket:Bucket": self._bucket,
            "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": self._public_access_block,
            "aws:s3/bucketOwnershipControls:BucketOwnershipControls": self._ownership_controls,
            "aws:s3/bucketServerSideEncryptionConfiguration:"
            "BucketServerSideEncryptionConfiguration": self._bucket_encryption,
            "aws:s3/bucketObjectv2:BucketObjectv2": self._bucket_object,
            "aws:s3/bucketPolicy:BucketPolicy": self._bucket_policy,
            "command:local:Command": self._local_command,
            "aws:lb/loadBalancer:LoadBalancer": self._load_balancer,
            "aws:lb/targetGroup:TargetGroup": self._target_group,
            "aws:lb/targetGroupAttachment:TargetGroupAttachment": self._target_group_attachment,
            "aws:lb/listener:Listener": self._listener,
            "aws:sns/topic:Topic": self._sns_topic,
            "aws:sns/topicSubscription:TopicSubscription": self._sns_subscription,
            "aws:cloudwatch/metricAlarm:MetricAlarm": self._metric_alarm,
            "tls:index/privateKey:PrivateKey": self._private_key,
            "random:index/randomPassword:RandomPassword": self._random_password,
        }

    def _arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{ACCOUNT}:{resource}"

    def _vpc(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        vpc = self.ec2.create_vpc(CidrBlock=i["cidrBlock"],
                                  TagSpecifications=_tags("vpc", i.get("tags")))["Vpc"]
        vpc_id = vpc["VpcId"]
        for attribute, key in (("EnableDnsSupport", "enableDnsSupport"),
                               ("EnableDnsHostnames", "enableDnsHostnames")):
            if key in i:
                self.ec2.modify_vpc_attribute(VpcId=vpc_id, **{attribute: {"Value": bool(i[key])}})
        return vpc_id, {"arn": self._arn("ec2", f"vpc/{vpc_id}"), "ownerId": vpc["OwnerId"],
                        "mainRouteTableId": "", "defaultSecurityGroupId": ""}

    def _internet_gateway(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        igw = self.ec2.create_internet_gateway(
            TagSpecifications=_tags("internet-gateway", i.get("tags")))["InternetGateway"]
        igw_id = igw["InternetGatewayId"]
        if i.get("vpcId"):
            self.ec2.attach_internet_gateway(InternetGatewayId=igw_id, VpcId=i["vpcId"])
        return igw_id, {"arn": self._arn("ec2", f"internet-gateway/{igw_id}")}

    def _subnet(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        kwargs = {"VpcId": i["vpcId"], "CidrBlock": i["cidrBlock"],
                  "TagSpecifications": _tags("subnet", i.get("tags"))}
        if i.get("availabilityZone"):
            kwargs["AvailabilityZone"] = i["availabilityZone"]
        subnet = self.ec2.create_subnet(**kwargs)["Subnet"]
        return subnet["SubnetId"], {"arn": subnet.get("SubnetArn", ""),
                                    "availabilityZone": subnet["AvailabilityZone"],
                                    "availabilityZoneId": subnet.get("AvailabilityZoneId", "")}

    def _route_table(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        rt_id = self.ec2.create_route_table(
            VpcId=i["vpcId"], TagSpecifications=_tags("route-table", i.get("tags"))
        )["RouteTable"]["RouteTableId"]
        targets = {"gatewayId": "GatewayId", "natGatewayId": "NatGatewayId",
                   "networkInterfaceId": "NetworkInterfaceId",
                   "vpcPeeringConnectionId": "VpcPeeringConnectionId"}
        for route in i.get("routes") or []:
            target = {api: route[key] for key, api in targets.items() if route.get(key)}
            self.ec2.create_route(RouteTableId=rt_id, DestinationCidrBlock=route["cidrBlock"],
                                  **target)
        return rt_id, {"arn": self._arn("ec2", f"route-table/{rt_id}")}

    def _route(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        targets = {"gatewayId": "GatewayId", "natGatewayId": "NatGatewayId",
                   "networkInterfaceId": "NetworkInterfaceId"}
        self.ec2.create_route(RouteTableId=i["routeTableId"],
                              DestinationCidrBlock=i["destinationCidrBlock"],
                              **{api: i[key] for key, api in targets.items() if i.get(key)})
        # The provider's id for a route: table and destination.
        return f"r-{i['routeTableId']}{zlib.crc32(i['destinationCidrBlock'].encode())}", {
            "state": "active", "origin": "CreateRoute"}

    def _route_table_association(self, name: str, i: dict[str, Any]) -> tuple[str, dict]:
        assoc = self.ec2.associate_route_table(RouteTableId=i["routeTableId"],
                                               SubnetId=i["subnetId"])
        return assoc["AssociationId"], {}

    def _security_group(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        group_name = i.get("name") or _autoname(name)
        sg_id = self.ec2.create_security_group(
            GroupName=group_name, Description=i.get("description") or "Managed by Pulumi",
            VpcId=i["vpcId"], TagSpecifications=_tags("security-group", i.get("tags"))
        )["GroupId"]
        # The AWS provider removes EC2's default allow-all egress: only declared rules remain.
        self.ec2.revoke_security_group_egress(GroupId=sg_id, IpPermissions=[
            {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        return sg_id, {"arn": self._arn("ec2", f"security-group/{sg_id}"), "name": group_name,
                       "ownerId": ACCOUNT}

    @staticmethod
    def _permission(i: dict[str, Any]) -> dict[str, Any]:
        perm: dict[str, Any] = {"IpProtocol": str(i["ipProtocol"])}
        if perm["IpProtocol"] not in ("-1", "all"):
            perm.update(FromPort=int(i["fromPort"]), ToPort=int(i["toPort"]))
        described = {"Description": i["description"]} if i.get("description") else {}
        if i.get("cidrIpv4"):
            perm["IpRanges"] = [{"CidrIp": i["cidrIpv4"], **described}]
        if i.get("cidrIpv6"):
            perm["Ipv6Ranges"] = [{"CidrIpv6": i["cidrIpv6"], **described}]
        if i.get("referencedSecurityGroupId"):
            perm["UserIdGroupPairs"] = [{"GroupId": i["referencedSecurityGroupId"], **described}]
        return perm

    def _ingress_rule(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        rules = self.ec2.authorize_security_group_ingress(
            GroupId=i["securityGroupId"], IpPermissions=[self._permission(i)])
        rule_id = rules["SecurityGroupRules"][0]["SecurityGroupRuleId"]
        return rule_id, {"securityGroupRuleId": rule_id,
                         "arn": self._arn("ec2", f"security-group-rule/{rule_id}")}

    def _egress_rule(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        rules = self.ec2.authorize_security_group_egress(
            GroupId=i["securityGroupId"], IpPermissions=[self._permission(i)])
        rule_id = rules["SecurityGroupRules"][0]["SecurityGroupRuleId"]
        return rule_id, {"securityGroupRuleId": rule_id,
                         "arn": self._arn("ec2", f"security-group-rule/{rule_id}")}

    def _next_address(self) -> str:
        taken = {a["PublicIp"] for a in self.ec2.describe_addresses()["Addresses"]}
        for address in self._eip_pool:
            if address not in taken:
                return address
        raise RuntimeError("the lab's Elastic IP pool (203.0.113.0/24) is exhausted")

    def _eip(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        eip = self.ec2.allocate_address(Domain="vpc", Address=self._next_address(),
                                        TagSpecifications=_tags("elastic-ip", i.get("tags")))
        alloc = eip["AllocationId"]
        out = {"allocationId": alloc, "publicIp": eip["PublicIp"], "domain": "vpc",
               "arn": self._arn("ec2", f"elastic-ip/{alloc}"), "privateIp": "",
               "associationId": "", "publicDns": ""}
        target: dict[str, Any] = {}
        if i.get("networkInterface"):
            target["NetworkInterfaceId"] = i["networkInterface"]
            if i.get("associateWithPrivateIp"):
                target["PrivateIpAddress"] = i["associateWithPrivateIp"]
        elif i.get("instance"):
            target["InstanceId"] = i["instance"]
        if target:
            assoc = self.ec2.associate_address(AllocationId=alloc, **target)
            out.update(associationId=assoc["AssociationId"],
                       privateIp=i.get("associateWithPrivateIp") or "")
        return alloc, out

    def _nat_gateway(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        kwargs = {"SubnetId": i["subnetId"],
                  "TagSpecifications": _tags("natgateway", i.get("tags"))}
        if i.get("allocationId"):
            kwargs["AllocationId"] = i["allocationId"]
        nat = self.ec2.create_nat_gateway(**kwargs)["NatGateway"]
        addresses = nat.get("NatGatewayAddresses") or [{}]
        return nat["NatGatewayId"], {"networkInterfaceId": addresses[0].get(
            "NetworkInterfaceId", ""), "privateIp": addresses[0].get("PrivateIp", ""),
            "publicIp": addresses[0].get("PublicIp", "")}

    def _network_interface(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ips = list(i.get("privateIpLists") or i.get("privateIps") or [])
        kwargs: dict[str, Any] = {
            "SubnetId": i["subnetId"], "Groups": list(i.get("securityGroups") or []),
            "TagSpecifications": _tags("network-interface", i.get("tags"))}
        if i.get("description"):
            kwargs["Description"] = i["description"]
        if ips:
            kwargs["PrivateIpAddresses"] = [{"PrivateIpAddress": ip, "Primary": n == 0}
                                            for n, ip in enumerate(ips)]
        eni = self.ec2.create_network_interface(**kwargs)["NetworkInterface"]
        if i.get("sourceDestCheck") is False:  # multi-AZ: the overlay IP is no ENI address
            self.ec2.modify_network_interface_attribute(
                NetworkInterfaceId=eni["NetworkInterfaceId"], SourceDestCheck={"Value": False})
        actual = [a["PrivateIpAddress"] for a in eni["PrivateIpAddresses"]]
        return eni["NetworkInterfaceId"], {
            "macAddress": eni["MacAddress"], "privateIp": eni["PrivateIpAddress"],
            "privateIps": actual, "privateIpList": actual,
            "privateDnsName": eni.get("PrivateDnsName", ""), "ownerId": eni.get("OwnerId", ""),
            "arn": self._arn("ec2", f"network-interface/{eni['NetworkInterfaceId']}")}

    def _root_device_name(self, image_id: str) -> str:
        images = self.ec2.describe_images(ImageIds=[image_id])["Images"]
        return images[0].get("RootDeviceName", "/dev/xvda") if images else "/dev/xvda"

    def _instance(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if i.get("primaryNetworkInterface"):  # the nodes: their service ENI is device 0
            eni_id = i["primaryNetworkInterface"]["networkInterfaceId"]
            [eni] = self.ec2.describe_network_interfaces(
                NetworkInterfaceIds=[eni_id])["NetworkInterfaces"]
            network: dict[str, Any] = {
                "NetworkInterfaces": [{"DeviceIndex": 0, "NetworkInterfaceId": eni_id}]}
            zone = eni["AvailabilityZone"]
        else:  # the arbiter: EC2 makes its ENI in the subnet, with the given address
            network = {k: v for k, v in (("SubnetId", i.get("subnetId")),
                                         ("PrivateIpAddress", i.get("privateIp")),
                                         ("SecurityGroupIds", i.get("vpcSecurityGroupIds")))
                       if v}
            [subnet] = self.ec2.describe_subnets(SubnetIds=[i["subnetId"]])["Subnets"]
            zone = subnet["AvailabilityZone"]
        placement = {"AvailabilityZone": zone}
        if i.get("placementGroup"):
            # Accepted and ignored by moto (no placement groups there).
            placement["GroupName"] = i["placementGroup"]
        kwargs: dict[str, Any] = {
            "ImageId": i["ami"], "InstanceType": i["instanceType"], "MinCount": 1,
            "MaxCount": 1, "Placement": placement, **network,
            "DisableApiTermination": bool(i.get("disableApiTermination", False)),
            "DisableApiStop": bool(i.get("disableApiStop", False)),
            "TagSpecifications": _tags("instance", i.get("tags"))}
        if i.get("keyName"):
            kwargs["KeyName"] = i["keyName"]
        if i.get("iamInstanceProfile"):
            kwargs["IamInstanceProfile"] = {"Name": i["iamInstanceProfile"]}
        # boto3 base64-encodes UserData itself: give it the raw bytes EC2 is to hold.
        if i.get("userData") is not None:
            kwargs["UserData"] = i["userData"]
        elif i.get("userDataBase64") is not None:
            kwargs["UserData"] = base64.b64decode(i["userDataBase64"])
        if i.get("metadataOptions"):
            m = i["metadataOptions"]
            kwargs["MetadataOptions"] = {k: v for k, v in (
                ("HttpEndpoint", m.get("httpEndpoint")), ("HttpTokens", m.get("httpTokens")),
                ("HttpPutResponseHopLimit", _number(m.get("httpPutResponseHopLimit"))),
                ("InstanceMetadataTags", m.get("instanceMetadataTags"))) if v is not None}
        root = i.get("rootBlockDevice")
        if root:
            ebs = {k: v for k, v in (
                ("VolumeSize", _number(root.get("volumeSize"))),
                ("VolumeType", root.get("volumeType")),
                ("Encrypted", root.get("encrypted")),
                ("DeleteOnTermination", root.get("deleteOnTermination"))) if v is not None}
            kwargs["BlockDeviceMappings"] = [{"DeviceName": self._root_device_name(i["ami"]),
                                              "Ebs": ebs}]
            if root.get("tags"):
                kwargs["TagSpecifications"] += _tags("volume", root["tags"])
        inst = self.ec2.run_instances(**kwargs)["Instances"][0]
        instance_id = inst["InstanceId"]
        return instance_id, {
            "arn": self._arn("ec2", f"instance/{instance_id}"),
            "privateIp": inst.get("PrivateIpAddress", ""),
            "privateDns": inst.get("PrivateDnsName", ""),
            "primaryNetworkInterfaceId": inst["NetworkInterfaces"][0]["NetworkInterfaceId"],
            "availabilityZone": inst["Placement"]["AvailabilityZone"],
            "instanceState": inst["State"]["Name"], "publicIp": "", "publicDns": ""}

    def _network_interface_attachment(self, name: str, i: dict[str, Any]) -> tuple[str, dict]:
        attachment = self.ec2.attach_network_interface(
            NetworkInterfaceId=i["networkInterfaceId"], InstanceId=i["instanceId"],
            DeviceIndex=int(i["deviceIndex"]))["AttachmentId"]
        return attachment, {"attachmentId": attachment, "status": "attached"}

    def _key_pair(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        key_name = i.get("keyName") or _autoname(name)
        pair = self.ec2.import_key_pair(
            KeyName=key_name, PublicKeyMaterial=i["publicKey"].encode(),
            TagSpecifications=_tags("key-pair", i.get("tags")))
        return key_name, {"keyName": key_name, "keyPairId": pair["KeyPairId"],
                          "fingerprint": pair["KeyFingerprint"], "keyType": "ed25519",
                          "arn": self._arn("ec2", f"key-pair/{key_name}")}

    def _volume(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {"AvailabilityZone": i["availabilityZone"],
                                  "TagSpecifications": _tags("volume", i.get("tags"))}
        for key, api in (("size", "Size"), ("type", "VolumeType"), ("encrypted", "Encrypted"),
                         ("iops", "Iops"), ("throughput", "Throughput")):
            if i.get(key) is not None:
                kwargs[api] = _number(i[key])
        volume_id = self.ec2.create_volume(**kwargs)["VolumeId"]
        return volume_id, {"arn": self._arn("ec2", f"volume/{volume_id}")}

    def _volume_attachment(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.ec2.attach_volume(VolumeId=i["volumeId"], InstanceId=i["instanceId"],
                               Device=i["deviceName"])
        # The AWS provider's id for an attachment: a hash of device, instance and volume.
        digest = hashlib.sha1(  # noqa: S324 - an id, not security
            f"{i['deviceName']}-{i['instanceId']}-{i['volumeId']}".encode()).hexdigest()
        return f"vai-{int(digest[:8], 16)}", {}

    def _role(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        role_name = i.get("name") or _autoname(name)
        kwargs: dict[str, Any] = {"RoleName": role_name,
                                  "AssumeRolePolicyDocument": i["assumeRolePolicy"],
                                  "Tags": [{"Key": k, "Value": v}
                                           for k, v in (i.get("tags") or {}).items()]}
        if i.get("description"):
            kwargs["Description"] = i["description"]
        role = self.iam.create_role(**kwargs)["Role"]
        return role_name, {"arn": role["Arn"], "name": role_name, "uniqueId": role["RoleId"]}

    def _role_policy(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        policy_name = i.get("name") or _autoname(name)
        self.iam.put_role_policy(RoleName=i["role"], PolicyName=policy_name,
                                 PolicyDocument=i["policy"])
        return f"{i['role']}:{policy_name}", {"name": policy_name}

    def _instance_profile(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        profile_name = i.get("name") or _autoname(name)
        profile = self.iam.create_instance_profile(
            InstanceProfileName=profile_name,
            Tags=[{"Key": k, "Value": v} for k, v in (i.get("tags") or {}).items()],
        )["InstanceProfile"]
        if i.get("role"):
            self.iam.add_role_to_instance_profile(InstanceProfileName=profile_name,
                                                  RoleName=i["role"])
        return profile_name, {"arn": profile["Arn"], "name": profile_name,
                              "uniqueId": profile["InstanceProfileId"]}

    def _secret(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {"Name": i.get("name") or _autoname(name),
                                  "Tags": [{"Key": k, "Value": v}
                                           for k, v in (i.get("tags") or {}).items()]}
        if i.get("description"):
            kwargs["Description"] = i["description"]
        if i.get("kmsKeyId"):
            kwargs["KmsKeyId"] = i["kmsKeyId"]
        secret = self.secretsmanager.create_secret(**kwargs)
        return secret["ARN"], {"arn": secret["ARN"], "name": secret["Name"]}

    def _secret_version(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        version = self.secretsmanager.put_secret_value(SecretId=i["secretId"],
                                                       SecretString=i["secretString"])
        self.secret_values[version["Name"]] = i["secretString"]
        return f"{version['ARN']}|{version['VersionId']}", {
            "arn": version["ARN"], "versionId": version["VersionId"],
            "versionStages": version.get("VersionStages", ["AWSCURRENT"])}

    def _secret_policy(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        # Stored, not enforced: moto evaluates no resource policy (see the README's table).
        self.secretsmanager.put_resource_policy(
            SecretId=i["secretArn"], ResourcePolicy=i["policy"],
            BlockPublicPolicy=bool(i.get("blockPublicPolicy")))
        return i["secretArn"], {}

    def _kms_key(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {"Tags": [{"TagKey": k, "TagValue": v}
                                           for k, v in (i.get("tags") or {}).items()]}
        for key, field in (("description", "Description"), ("policy", "Policy")):
            if i.get(key):
                kwargs[field] = i[key]
        meta = self.kms.create_key(**kwargs)["KeyMetadata"]
        if i.get("enableKeyRotation"):
            self.kms.enable_key_rotation(KeyId=meta["KeyId"])
        return meta["KeyId"], {"arn": meta["Arn"], "keyId": meta["KeyId"]}

    def _vpc_endpoint(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "VpcId": i["vpcId"], "ServiceName": i["serviceName"],
            "VpcEndpointType": i.get("vpcEndpointType", "Gateway"),
            "TagSpecifications": _tags("vpc-endpoint", i.get("tags"))}
        for key, field in (("subnetIds", "SubnetIds"), ("securityGroupIds", "SecurityGroupIds"),
                           ("routeTableIds", "RouteTableIds")):
            if i.get(key):
                kwargs[field] = i[key]
        if "privateDnsEnabled" in i:
            kwargs["PrivateDnsEnabled"] = bool(i["privateDnsEnabled"])
        endpoint = self.ec2.create_vpc_endpoint(**kwargs)["VpcEndpoint"]
        return endpoint["VpcEndpointId"], {"arn": self._arn(
            "ec2", f"vpc-endpoint/{endpoint['VpcEndpointId']}")}

    def _vpc_endpoint_route_table(self, name: str, i: dict[str, Any]) -> tuple[str, dict]:
        self.ec2.modify_vpc_endpoint(VpcEndpointId=i["vpcEndpointId"],
                                     AddRouteTableIds=[i["routeTableId"]])
        return f"{i['vpcEndpointId']}/{i['routeTableId']}", {}

    def _bucket(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        bucket = i.get("bucket") or f"{i.get('bucketPrefix', name + '-')}{secrets.token_hex(6)}"
        self.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={
            "LocationConstraint": self.region})
        if i.get("tags"):
            self.s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [
                {"Key": k, "Value": str(v)} for k, v in i["tags"].items()]})
        return bucket, {"bucket": bucket, "arn": f"arn:aws:s3:::{bucket}",
                        "region": self.region}

    def _public_access_block(self, name: str, i: dict[str, Any]) -> tuple[str, dict]:
        flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                 "restrictPublicBuckets")
        self.s3.put_public_access_block(Bucket=i["bucket"], PublicAccessBlockConfiguration={
            f[0].upper() + f[1:]: bool(i.get(f)) for f in flags})
        return i["bucket"], {}

    def _ownership_controls(self, name: str, i: dict[str, Any]) -> tuple[str, dict]:
        self.s3.put_bucket_ownership_controls(Bucket=i["bucket"], OwnershipControls={
            "Rules": [{"ObjectOwnership": i["rule"]["objectOwnership"]}]})
        return i["bucket"], {}

    def _bucket_encryption(self, name: str, i: dict[str, Any]) -> tuple[str, dict]:
        rules = [{"ApplyServerSideEncryptionByDefault": {
            "SSEAlgorithm": r["applyServerSideEncryptionByDefault"]["sseAlgorithm"]}}
            for r in i["rules"]]
        self.s3.put_bucket_encryption(Bucket=i["bucket"], ServerSideEncryptionConfiguration={
            "Rules": rules})
        return i["bucket"], {}

    def _bucket_object(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        body = base64.b64decode(i["contentBase64"]) if "contentBase64" in i else \
            str(i.get("content", "")).encode()
        put = self.s3.put_object(Bucket=i["bucket"], Key=i["key"], Body=body,
                                 ContentType=i.get("contentType", "binary/octet-stream"))
        return f"{i['bucket']}/{i['key']}", {"etag": put["ETag"].strip('"'),
                                            "versionId": put.get("VersionId", "")}

    def _bucket_policy(self, name: str, i: dict[str, Any]) -> tuple[str, dict]:
        # Recorded, not applied: moto would evaluate it without the request context AWS gives
        # (aws:PrincipalAccount, aws:SourceVpc) and so refuse everyone (README: lab).
        self.bucket_policies[i["bucket"]] = i["policy"]
        return i["bucket"], {}

    def _local_command(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Run `create` as pulumi-command's local.Command does: a shell on this (the
        operator's) machine, in the project directory, with this process's environment; a
        non-zero exit fails the deploy, with the command's output. One registered after a
        remote Command is deferred: the lab runs it later, in order (lab/bootstrap.py)."""
        import subprocess

        if self.remote_commands_seen:
            self.deferred_local_commands.append(name)
            return self.fake.new_resource("command:local:Command", name, i)

        from lab.program import PROJECT_DIR

        env = {**os.environ, **self.local_env, **(i.get("environment") or {})}
        proc = subprocess.run(["/bin/sh", "-c", i["create"]], cwd=i.get("dir") or PROJECT_DIR,
                              env=env, input=i.get("stdin"), capture_output=True, text=True,
                              timeout=300, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"local Command {name} ({i['create']}) exited "
                               f"{proc.returncode}:\n{proc.stdout}{proc.stderr}")
        self.local_outputs[name] = proc.stdout
        return f"{name}-{secrets.token_hex(4)}", {"stdout": proc.stdout, "stderr": proc.stderr}

    def _load_balancer(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "Name": i.get("name") or _autoname(name)[:32],
            "Type": i.get("loadBalancerType", "application"),
            "Scheme": "internal" if i.get("internal") else "internet-facing",
            "Tags": [{"Key": k, "Value": v} for k, v in (i.get("tags") or {}).items()]}
        if i.get("ipAddressType"):
            kwargs["IpAddressType"] = i["ipAddressType"]
        if i.get("subnetMappings"):
            kwargs["SubnetMappings"] = [
                {k: v for k, v in (("SubnetId", m.get("subnetId")),
                                   ("AllocationId", m.get("allocationId")),
                                   ("PrivateIPv4Address", m.get("privateIpv4Address"))) if v}
                for m in i["subnetMappings"]]
        elif i.get("subnets"):
            kwargs["Subnets"] = list(i["subnets"])
        lb = self.elbv2.create_load_balancer(**kwargs)["LoadBalancers"][0]
        arn = lb["LoadBalancerArn"]
        return arn, {"arn": arn, "dnsName": lb["DNSName"], "zoneId":
                     lb.get("CanonicalHostedZoneId", ""), "name": lb["LoadBalancerName"],
                     "arnSuffix": arn.split(":loadbalancer/", 1)[-1]}

    def _target_group(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "Name": i.get("name") or _autoname(name)[:32], "Protocol": i["protocol"],
            "Port": int(i["port"]), "TargetType": i.get("targetType", "instance"),
            "Tags": [{"Key": k, "Value": v} for k, v in (i.get("tags") or {}).items()]}
        if i.get("vpcId"):
            kwargs["VpcId"] = i["vpcId"]
        check = i.get("healthCheck") or {}
        for key, api in (("protocol", "HealthCheckProtocol"), ("port", "HealthCheckPort"),
                         ("interval", "HealthCheckIntervalSeconds"),
                         ("timeout", "HealthCheckTimeoutSeconds"),
                         ("healthyThreshold", "HealthyThresholdCount"),
                         ("unhealthyThreshold", "UnhealthyThresholdCount")):
            if check.get(key) is not None:
                kwargs[api] = _number(check[key])
        group = self.elbv2.create_target_group(**kwargs)["TargetGroups"][0]
        arn = group["TargetGroupArn"]
        attributes = [{"Key": k, "Value": str(i[key])} for key, k in (
            ("deregistrationDelay", "deregistration_delay.timeout_seconds"),
            ("preserveClientIp", "preserve_client_ip.enabled")) if i.get(key) is not None]
        if attributes:
            self.elbv2.modify_target_group_attributes(TargetGroupArn=arn, Attributes=attributes)
        return arn, {"arn": arn, "name": group["TargetGroupName"],
                     "arnSuffix": arn.split(":", 5)[-1]}

    def _target_group_attachment(self, name: str, i: dict[str, Any]) -> tuple[str, dict]:
        target = {"Id": i["targetId"]}
        if i.get("port") is not None:
            target["Port"] = int(i["port"])
        if i.get("availabilityZone"):  # "all": an IP target outside the VPC (multi-AZ)
            target["AvailabilityZone"] = i["availabilityZone"]
        self.elbv2.register_targets(TargetGroupArn=i["targetGroupArn"], Targets=[target])
        return f"{i['targetGroupArn']}-{_autoname('attachment')}", {}

    def _listener(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        actions = [{"Type": a["type"], "TargetGroupArn": a["targetGroupArn"]}
                   for a in i.get("defaultActions") or []]
        listener = self.elbv2.create_listener(
            LoadBalancerArn=i["loadBalancerArn"], Protocol=i["protocol"], Port=int(i["port"]),
            DefaultActions=actions)["Listeners"][0]
        return listener["ListenerArn"], {"arn": listener["ListenerArn"]}

    def _sns_topic(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        attributes = {api: str(i[key]) for key, api in (
            ("kmsMasterKeyId", "KmsMasterKeyId"), ("displayName", "DisplayName")) if i.get(key)}
        arn = self.sns.create_topic(
            Name=i.get("name") or _autoname(name), Attributes=attributes,
            Tags=[{"Key": k, "Value": v} for k, v in (i.get("tags") or {}).items()])["TopicArn"]
        return arn, {"arn": arn, "name": arn.rsplit(":", 1)[-1]}

    def _sns_subscription(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        # An email subscription stays pending, as in AWS until its link is followed.
        arn = self.sns.subscribe(TopicArn=i["topic"], Protocol=i["protocol"],
                                 Endpoint=i["endpoint"],
                                 ReturnSubscriptionArn=True)["SubscriptionArn"]
        return arn, {"arn": arn}

    def _metric_alarm(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        alarm = i.get("name") or _autoname(name)
        kwargs: dict[str, Any] = {
            "AlarmName": alarm, "EvaluationPeriods": int(i["evaluationPeriods"]),
            "ComparisonOperator": i["comparisonOperator"],
            "Dimensions": [{"Name": k, "Value": v}
                           for k, v in (i.get("dimensions") or {}).items()],
            "Tags": [{"Key": k, "Value": v} for k, v in (i.get("tags") or {}).items()]}
        for key, api in (("namespace", "Namespace"), ("metricName", "MetricName"),
                         ("statistic", "Statistic"), ("period", "Period"),
                         ("threshold", "Threshold"), ("datapointsToAlarm", "DatapointsToAlarm"),
                         ("treatMissingData", "TreatMissingData"),
                         ("alarmDescription", "AlarmDescription"),
                         ("alarmActions", "AlarmActions"), ("okActions", "OKActions")):
            if i.get(key) is not None:
                kwargs[api] = _number(i[key])
        self.cloudwatch.put_metric_alarm(**kwargs)
        [found] = self.cloudwatch.describe_alarms(AlarmNames=[alarm])["MetricAlarms"]
        return alarm, {"arn": found["AlarmArn"], "name": alarm}

    def _private_key(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The admin key is the caller's (the lab logs in with it); any other key (the nodes'
        SSH host keys) is generated here, fresh per deploy."""
        if str(i.get("algorithm", "")).upper() != "ED25519":
            raise ValueError(f"{name}: the lab supplies only ed25519 keys, not "
                             f"{i.get('algorithm')}")
        private, public = ((self.ssh_private_key, self.ssh_public_key)
                           if name == ADMIN_KEY else _new_ed25519_key())
        public = " ".join(public.split()[:2]) + "\n"
        return f"{name}-{secrets.token_hex(8)}", {
            "privateKeyOpenssh": private, "publicKeyOpenssh": public,
            **_ssh_fingerprints(public), **_pem_outputs(private)}

    def _random_password(self, name: str, i: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        value = _password(i)
        self.passwords[name] = value
        return "none", {"result": value}
