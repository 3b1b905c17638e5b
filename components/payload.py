"""Where the instances' payloads live: an S3 bucket of the stack, one object per payload, named
by its digest (prep_ha/payload.py).

The node and arbiter roles read it, only through the VPC's S3 gateway endpoint
(components/network.py), and never write it, so role credentials taken from a node neither
read it from elsewhere nor change what the other instances install; no principal outside the
account reaches it at all. Within the account, who may write it is the account's IAM, as for
the stack's other resources: the deployer. A payload holds no secret (the same policy checks
apply to it as to user-data), and each instance installs a payload only if its bytes match
the digest its tag names, which only `pulumi up` sets.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components.tags import cluster_tags
from prep_ha.config import StackConfig
from prep_ha.payload import KEY_PREFIX, Payload, object_key

READ = "s3:GetObject"


def bucket_policy(bucket_arn: str, account: str, reader_role_arns: Sequence[str],
                  vpc_id: str) -> dict[str, Any]:
    """Nobody outside the account; the instance roles read payload objects from inside the VPC
    only, and never write; TLS only."""
    objects = f"{bucket_arn}/*"
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "AccountOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [bucket_arn, objects],
         "Condition": {"StringNotEquals": {"aws:PrincipalAccount": account}}},
        {"Sid": "InstanceRolesReadOnlyInsideTheVpc", "Effect": "Deny", "Principal": "*",
         "Action": READ, "Resource": objects,
         "Condition": {"ArnEquals": {"aws:PrincipalArn": list(reader_role_arns)},
                       "StringNotEquals": {"aws:SourceVpc": vpc_id}}},
        {"Sid": "InstanceRolesNeverWrite", "Effect": "Deny", "Principal": "*",
         "NotAction": READ, "Resource": [bucket_arn, objects],
         "Condition": {"ArnEquals": {"aws:PrincipalArn": list(reader_role_arns)}}},
        {"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [bucket_arn, objects],
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]}


def read_payloads_policy(bucket_arn: str) -> str:
    """The instance roles' own permission: the payload objects, nothing else of the bucket."""
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": READ, "Resource": f"{bucket_arn}/{KEY_PREFIX}*"}]})


@dataclass(frozen=True)
class PayloadStoreArgs:
    config: StackConfig
    vpc_id: pulumi.Input[str]


class PayloadStore(pulumi.ComponentResource):
    """The bucket; each instance's component publishes its payload (`publish`), and once every
    instance role exists, `admit` locks the bucket to them (a deny-only policy: what a role
    may read is its own IAM policy, read_payloads_policy)."""

    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]

    def __init__(self, name: str, args: PayloadStoreArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("icon-prep-ha:payload:PayloadStore", name, None, opts)
        cfg = args.config
        self._name = name
        self._vpc_id = args.vpc_id
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(
            f"{name}-bucket", bucket_prefix=f"{cfg.cluster_name}-payload-",
            # Only payload objects, each replaceable from the program: `pulumi destroy` empties
            # it instead of failing on leftovers.
            force_destroy=True,
            tags=cluster_tags(cfg.cluster_name, f"{cfg.cluster_name}-payload"), opts=child)
        aws.s3.BucketPublicAccessBlock(
            f"{name}-no-public-access", bucket=bucket.id, block_public_acls=True,
            block_public_policy=True, ignore_public_acls=True, restrict_public_buckets=True,
            opts=child)
        aws.s3.BucketOwnershipControls(
            f"{name}-owner", bucket=bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"}, opts=child)
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption", bucket=bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}],
            opts=child)
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self._bucket = bucket
        self.register_outputs({"bucketName": bucket.bucket})

    def publish(self, name: str, payload: pulumi.Output[Payload]) -> pulumi.Output[str]:
        """Store one instance's payload; its digest, once the object exists (what the
        instance's tag gets)."""
        archive = payload.apply(lambda p: (p.digest, base64.b64encode(p.archive()).decode()))
        obj = aws.s3.BucketObjectv2(
            f"{self._name}-{name}", bucket=self._bucket.id,
            key=archive.apply(lambda a: object_key(a[0])),
            content_base64=archive.apply(lambda a: a[1]), content_type="application/gzip",
            # Named by its digest: a new payload is a new object, and Pulumi deletes the old
            # one only at the end of the update, after the instances' tags name the new one.
            opts=pulumi.ResourceOptions(parent=self))
        return pulumi.Output.all(obj.key, archive).apply(lambda v: v[1][0])

    def admit(self, reader_role_arns: Sequence[pulumi.Input[str]],
              s3_endpoint: pulumi.Resource) -> aws.s3.BucketPolicy:
        """The bucket policy: the given instance roles read, from inside the VPC only (through
        `s3_endpoint`, which the aws:SourceVpc condition relies on)."""
        account = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        policy = aws.s3.BucketPolicy(
            f"{self._name}-policy", bucket=self._bucket.id,
            policy=pulumi.Output.all(self._bucket.arn, account.account_id, self._vpc_id,
                                     *reader_role_arns).apply(
                lambda v: json.dumps(bucket_policy(v[0], v[1], v[3:], v[2]))),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[s3_endpoint]))
        self.register_outputs({"bucketName": self.bucket_name})
        return policy
