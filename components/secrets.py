"""Credentials the stack stores or generates: Secrets Manager entries the nodes read at
service start or boot, and the admin SSH key pair."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random
import pulumi_tls as tls

from components.tags import cluster_tags
from prep_ha.config import StackConfig

# A deleted MainNet keystore secret stays recoverable for a week; elsewhere deletion is
# immediate so a test stack can be destroyed and rebuilt under the same secret names.
MAINNET_RECOVERY_WINDOW_DAYS = 7


@dataclass(frozen=True)
class NodeSecretsArgs:
    config: StackConfig
    keystore: pulumi.Input[str]           # secret: the P-Rep keystore JSON
    keystore_password: pulumi.Input[str]  # secret


class NodeSecrets(pulumi.ComponentResource):
    keystore_secret_arn: pulumi.Output[str]
    keystore_password_secret_arn: pulumi.Output[str]
    hacluster_password_secret_arn: pulumi.Output[str]
    hacluster_password_secret_name: pulumi.Output[str]
    secret_arns: list[pulumi.Output[str]]

    def __init__(self, name: str, args: NodeSecretsArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("icon-prep-ha:secrets:NodeSecrets", name, None, opts)
        self._args = args
        self._name = name

        # pcsd authenticates the bootstrap as hacluster; only the nodes ever read it.
        hacluster = random.RandomPassword(
            f"{name}-hacluster-password", length=32, special=False,
            opts=pulumi.ResourceOptions(parent=self))

        cfg = args.config
        keystore = self._secret("keystore", cfg.keystore_secret_name,
                                "ICON P-Rep keystore (JSON)", args.keystore)
        keystore_password = self._secret("keystore-password", cfg.keystore_password_secret_name,
                                         "ICON P-Rep keystore password", args.keystore_password)
        hacluster_secret = self._secret("hacluster-password", cfg.hacluster_secret_name,
                                        "pcsd hacluster password", hacluster.result)

        self.keystore_secret_arn = keystore.arn
        self.keystore_password_secret_arn = keystore_password.arn
        self.hacluster_password_secret_arn = hacluster_secret.arn
        self.hacluster_password_secret_name = hacluster_secret.name
        self.secret_arns = [keystore.arn, keystore_password.arn, hacluster_secret.arn]
        self.register_outputs({
            "keystoreSecretArn": keystore.arn,
            "keystorePasswordSecretArn": keystore_password.arn,
            "haclusterPasswordSecretArn": hacluster_secret.arn,
            "haclusterPasswordSecretName": hacluster_secret.name,
        })

    def _secret(self, label: str, name: str, description: str,
                value: pulumi.Input[str]) -> aws.secretsmanager.Secret:
        cfg = self._args.config
        secret = aws.secretsmanager.Secret(
            f"{self._name}-{label}", name=name, description=description,
            recovery_window_in_days=MAINNET_RECOVERY_WINDOW_DAYS if cfg.is_mainnet else 0,
            tags=cluster_tags(cfg.cluster_name, name),
            opts=pulumi.ResourceOptions(parent=self))
        aws.secretsmanager.SecretVersion(
            f"{self._name}-{label}", secret_id=secret.id,
            # Wrapped again so the value stays secret even if an input arrived plain.
            secret_string=pulumi.Output.secret(value),
            opts=pulumi.ResourceOptions(parent=self))
        return secret


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
