"""Reading resource properties as the engine hands them to policies.

Properties use the providers' schema names (camelCase: `userData`, `metadataOptions`).
During `pulumi preview` a value computed from another resource's output is unknown; reading
it raises pulumi_policy's UnknownValueError, which the engine reports as "can't run policy
during preview" and runs the policy again, with real values, before `pulumi up` changes
anything. Stack policies catch it per resource so that one unknown value does not hide
every other finding.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pulumi_policy import PolicyResource
from pulumi_policy.proxy import UnknownValueError

__all__ = ["UnknownValueError", "get", "is_true", "of_type", "strings", "text"]

INSTANCE = "aws:ec2/instance:Instance"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
BUCKET_OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"
EBS_VOLUME = "aws:ebs/volume:Volume"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
VPC_INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
PLACEMENT_GROUP = "aws:ec2/placementGroup:PlacementGroup"
INSTANCE_PROFILE = "aws:iam/instanceProfile:InstanceProfile"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ROLE_POLICY_ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
IAM_POLICY = "aws:iam/policy:Policy"
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
SECRET = "aws:secretsmanager/secret:Secret"
SECRET_POLICY = "aws:secretsmanager/secretPolicy:SecretPolicy"
COMMANDS = ("command:remote:Command", "command:local:Command")
VPC = "aws:ec2/vpc:Vpc"
VPC_CIDR = "aws:ec2/vpcIpv4CidrBlockAssociation:VpcIpv4CidrBlockAssociation"
SUBNET = "aws:ec2/subnet:Subnet"
NETWORK_INTERFACE = "aws:ec2/networkInterface:NetworkInterface"
ROUTE = "aws:ec2/route:Route"
ROUTE_TABLE = "aws:ec2/routeTable:RouteTable"
ROUTE_TABLE_ASSOCIATION = "aws:ec2/routeTableAssociation:RouteTableAssociation"
VPC_ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"
LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"
TARGET_GROUP_ATTACHMENT = "aws:lb/targetGroupAttachment:TargetGroupAttachment"


def get(obj: Any, *path: str | int) -> Any:
    """The value at `path`, or None where any step is missing. Unknown values raise."""
    for key in path:
        if isinstance(key, int):
            if not isinstance(obj, Sequence) or isinstance(obj, str) or key >= len(obj):
                return None
        elif not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
        if obj is None:
            return None
    return obj


def is_true(value: Any) -> bool:
    # Some schema booleans are strings (launch template `encrypted`).
    return value is True or (isinstance(value, str) and value.lower() == "true")


def text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def strings(value: Any) -> Iterator[str]:
    """Every known string inside a property value; unknown parts are skipped."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key in value:
            try:
                item = value[key]
            except UnknownValueError:
                continue
            yield from strings(item)
    elif isinstance(value, Sequence):
        for i in range(len(value)):
            try:
                item = value[i]
            except UnknownValueError:
                continue
            yield from strings(item)


def of_type(resources: Sequence[PolicyResource], *types: str) -> list[PolicyResource]:
    return [r for r in resources if r.resource_type in types]


# components/tags.py: the quorum arbiter is the one instance that is not a cluster node; the
# nodes' IAM may change only resources carrying the cluster tag.
ROLE_TAG, ARBITER_ROLE = "prep-ha:role", "arbiter"
CLUSTER_TAG = "prep-ha:cluster"
NODE_TAG = "prep-ha:node"


def is_arbiter(instance: PolicyResource) -> bool:
    try:
        tags = get(instance.props, "tags") or {}
    except UnknownValueError:
        return False
    return isinstance(tags, Mapping) and tags.get(ROLE_TAG) == ARBITER_ROLE


def cluster_nodes(resources: Sequence[PolicyResource]) -> list[PolicyResource]:
    """The instances that are cluster nodes (every instance but the quorum arbiter)."""
    return [r for r in of_type(resources, INSTANCE) if not is_arbiter(r)]


def arbiters(resources: Sequence[PolicyResource]) -> list[PolicyResource]:
    return [r for r in of_type(resources, INSTANCE) if is_arbiter(r)]
