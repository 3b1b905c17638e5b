"""Credentials the stack keeps in Secrets Manager, who may read them, and the admin SSH key pair.

The validator key (keystore and password) never passes through Pulumi: the stack creates its
two secrets empty, encrypted with a customer-managed KMS key, readable only by the node role
and only from inside the stack's VPC; the operator's machine stores the values with boto3
(`python -m prep_ha put-keystore`, run by the `keystore-put` local Command before the nodes
boot), so neither `Pulumi.<stack>.yaml` nor the state ever holds them. Values Pulumi does
generate (the hacluster password, the nodes' SSH host keys) are Pulumi secrets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random
import pulumi_tls as tls
from pulumi_command import local

from components.iam import read_secrets_policy
from components.kms import account_administers_through_iam
from components.tags import cluster_tags
from prep_ha.config import StackConfig

# A deleted MainNet keystore secret stays recoverable for a week; elsewhere deletion is
# immediate so a test stack can be destroyed and rebuilt under the same secret names.
MAINNET_RECOVERY_WINDOW_DAYS = 7
# KMS keeps a deleted key for at least 7 days; MainNet takes the maximum.
KEY_DELETION_WINDOW_DAYS = {True: 30, False: 7}
READ = "secretsmanager:GetSecretValue"


def ssh_host_key_secret_name(node_name: str) -> str:
    """Where a node finds its SSH host key (cloud-init/files/prep-ha-ssh-host-key)."""
    return f"{node_name}/ssh-host-key"


def put_keystore_command(stack: str) -> str:
    """Run on the operator's machine during `pulumi up`; stores the key unless it is there."""
    return f"python3 -m prep_ha put-keystore --stack {stack} --if-unset"


def secret_policy(role_arn: str, vpc_id: str, *, only_the_role: bool) -> dict[str, Any]:
    """A secret's resource policy: the node role reads it only from inside the VPC (through
    its Secrets Manager endpoint), so credentials taken from a node are useless elsewhere;
    with `only_the_role`, no other principal reads it at all (the operators store the key,
    they never read it back)."""
    statements: list[dict[str, Any]] = [{
        "Sid": "NodeRoleOnlyInsideTheVpc",
        "Effect": "Deny",
        "Principal": "*",
        "Action": READ,
        "Resource": "*",
        "Condition": {"StringEquals": {"aws:PrincipalArn": role_arn},
                      "StringNotEquals": {"aws:SourceVpc": vpc_id}},
    }]
    if only_the_role:
        statements.insert(0, {
            "Sid": "OnlyTheNodeRoleReads",
            "Effect": "Deny",
            "Principal": "*",
            "Action": READ,
            "Resource": "*",
            "Condition": {"StringNotEquals": {"aws:PrincipalArn": role_arn}},
        })
    return {"Version": "2012-10-17", "Statement": statements}


def key_policy(role_arn: str, region: str) -> dict[str, Any]:
    """The keystore key: administered through IAM as usual (the account statement keeps the
    key manageable), and usable by the node role only to decrypt through Secrets Manager."""
    partition, account = role_arn.split(":")[1], role_arn.split(":")[4]
    return {
        "Version": "2012-10-17",
        "Statement": [
            account_administers_through_iam(partition, account),
            {
                "Sid": "NodeRoleDecryptsViaSecretsManager",
                "Effect": "Allow",
                "Principal": {"AWS": role_arn},
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {"StringEquals": {
                    "kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}},
            },
        ],
    }


@dataclass(frozen=True)
class NodeSecretsArgs:
    config: StackConfig
    reader_role_arn: pulumi.Input[str]   # the node role
    reader_role_name: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    # The VPC's Secrets Manager endpoint: the policies' aws:SourceVpc condition only admits
    # the nodes once their calls go through it, so the policies wait for it.
    endpoint_id: pulumi.Input[str]


class NodeSecrets(pulumi.ComponentResource):
    keystore_secret_arn: pulumi.Output[str]
    keystore_password_secret_arn: pulumi.Output[str]
    hacluster_password_secret_arn: pulumi.Output[str]
    hacluster_password_secret_name: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]
    # ssh-ed25519 public keys of node 1 and node 2, as `authorized_keys` lines.
    ssh_host_public_keys: list[pulumi.Output[str]]

    def __init__(self, name: str, args: NodeSecretsArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("icon-prep-ha:secrets:NodeSecrets", name, None, opts)
        self._args = args
        self._name = name
        cfg = args.config
        child = pulumi.ResourceOptions(parent=self)

        key = aws.kms.Key(
            f"{name}-keystore-key", description=f"{cfg.cluster_name}: the P-Rep keystore",
            enable_key_rotation=True,
            deletion_window_in_days=KEY_DELETION_WINDOW_DAYS[cfg.is_mainnet],
            policy=pulumi.Output.from_input(args.reader_role_arn).apply(
                lambda arn: json.dumps(key_policy(arn, cfg.region))),
            tags=cluster_tags(cfg.cluster_name, f"{cfg.cluster_name}-keystore"), opts=child)

        keystore = self._secret("keystore", cfg.keystore_secret_name,
                                "ICON P-Rep keystore (JSON); stored by put-keystore", key.arn)
        keystore_password = self._secret(
            "keystore-password", cfg.keystore_password_secret_name,
            "ICON P-Rep keystore password; stored by put-keystore", key.arn)
        # pcsd authenticates the bootstrap as hacluster; only the nodes (and the arbiter)
        # ever read it.
        hacluster = random.RandomPassword(
            f"{name}-hacluster-password", length=32, special=False, opts=child)
        hacluster_secret = self._secret("hacluster-password", cfg.hacluster_secret_name,
                                        "pcsd hacluster password", None, hacluster.result)
        host_keys, host_key_secrets = [], []
        for index, node_name in enumerate(cfg.node_names, start=1):
            host_key = tls.PrivateKey(f"{name}-ssh-host-key-{index}", algorithm="ED25519",
                                      opts=child)
            host_keys.append(host_key.public_key_openssh)
            host_key_secrets.append(self._secret(
                f"ssh-host-key-{index}", ssh_host_key_secret_name(node_name),
                f"SSH host key of {node_name}", None, host_key.private_key_openssh))

        policies = [self._policy("keystore", keystore, only_the_role=True),
                    self._policy("keystore-password", keystore_password, only_the_role=True),
                    self._policy("hacluster-password", hacluster_secret, only_the_role=False)]
        policies += [self._policy(f"ssh-host-key-{i}", s, only_the_role=False)
                     for i, s in enumerate(host_key_secrets, start=1)]
        readable = [keystore, keystore_password, hacluster_secret, *host_key_secrets]
        reader = aws.iam.RolePolicy(
            f"{name}-node-read", role=args.reader_role_name,
            policy=pulumi.Output.all(key.arn, *(s.arn for s in readable)).apply(
                lambda v: json.dumps(read_secrets_policy(v[1:], v[0], cfg.region))),
            opts=child)

        # The key's values come from the operator's files, not from Pulumi (see the module
        # docstring); the nodes boot after this (they depend on this component). Secrets
        # created anew (a renamed cluster) are empty: the triggers store the key again.
        # Rotation is `put-keystore` by hand (README: The validator key).
        put = local.Command(
            f"{name}-keystore-put", create=put_keystore_command(cfg.stack),
            triggers=[keystore.arn, keystore_password.arn],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*policies, reader]))

        self.keystore_secret_arn = keystore.arn
        self.keystore_password_secret_arn = keystore_password.arn
        self.hacluster_password_secret_arn = hacluster_secret.arn
        self.hacluster_password_secret_name = hacluster_secret.name
        self.kms_key_arn = key.arn
        self.ssh_host_public_keys = host_keys
        self.register_outputs({
            "keystoreSecretArn": keystore.arn,
            "keystorePasswordSecretArn": keystore_password.arn,
            "haclusterPasswordSecretArn": hacluster_secret.arn,
            "haclusterPasswordSecretName": hacluster_secret.name,
            "kmsKeyArn": key.arn,
            "sshHostPublicKeys": host_keys,
            "keystorePut": put.stdout,
        })

    def _secret(self, label: str, name: str, description: str,
                kms_key_id: pulumi.Input[str] | None,
                value: pulumi.Input[str] | None = None) -> aws.secretsmanager.Secret:
        cfg = self._args.config
        secret = aws.secretsmanager.Secret(
            f"{self._name}-{label}", name=name, description=description, kms_key_id=kms_key_id,
            recovery_window_in_days=MAINNET_RECOVERY_WINDOW_DAYS if cfg.is_mainnet else 0,
            tags=cluster_tags(cfg.cluster_name, name),
            opts=pulumi.ResourceOptions(parent=self))
        if value is not None:
            aws.secretsmanager.SecretVersion(
                f"{self._name}-{label}", secret_id=secret.id,
                # Wrapped again so the value stays secret even if an input arrived plain.
                secret_string=pulumi.Output.secret(value),
                opts=pulumi.ResourceOptions(parent=self))
        return secret

    def _policy(self, label: str, secret: aws.secretsmanager.Secret, *,
                only_the_role: bool) -> aws.secretsmanager.SecretPolicy:
        args = self._args
        document = pulumi.Output.all(args.reader_role_arn, args.vpc_id, args.endpoint_id).apply(
            lambda v: json.dumps(secret_policy(v[0], v[1], only_the_role=only_the_role)))
        return aws.secretsmanager.SecretPolicy(
            f"{self._name}-{label}", secret_arn=secret.arn, policy=document,
            block_public_policy=True, opts=pulumi.ResourceOptions(parent=self))


@dataclass(frozen=True)
class AdminSshKeyArgs:
    cluster_name: str


class AdminSshKey(pulumi.ComponentResource):
    """The EC2 key pair for the `admin` user; its private half exists only as a secret output."""

    key_name: pulumi.Output[str]
    private_key_openssh: pulumi.Output[str]

    def __init__(self, name: str, args: AdminSshKeyArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("icon-prep-ha:secrets:AdminSshKey", name, None, opts)
        key = tls.PrivateKey(f"{name}-key", algorithm="ED25519",
                             opts=pulumi.ResourceOptions(parent=self))
        key_pair = aws.ec2.KeyPair(
            f"{name}-key-pair", key_name=f"{args.cluster_name}-admin",
            public_key=key.public_key_openssh,
            tags=cluster_tags(args.cluster_name, f"{args.cluster_name}-admin"),
            opts=pulumi.ResourceOptions(parent=self))
        self.key_name = key_pair.key_name
        self.private_key_openssh = pulumi.Output.secret(key.private_key_openssh)
        self.register_outputs({"keyName": key_pair.key_name})
