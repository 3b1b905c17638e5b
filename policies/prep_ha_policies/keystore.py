"""The validator key: out of Pulumi's state, readable only by the nodes, only inside the VPC.

Whatever Pulumi writes into a secret (a SecretVersion) sits, encrypted only with the stack's
passphrase, in every state file and backup; the keystore and its password are stored by
`python -m prep_ha put-keystore` instead. Their secrets are the ones named `<cluster>/keystore`
and `<cluster>/keystore-password` (prep_ha/config.py). Each must be encrypted with a
customer-managed KMS key and carry a resource policy that lets one principal (the node role)
read it, and that principal only from inside a VPC (through its Secrets Manager endpoint).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi_policy import PolicyResource, ReportViolation, StackValidationArgs
from pulumi_policy import StackValidationPolicy as Stack

from .iam_doc import statements
from .props import SECRET, SECRET_POLICY, SECRET_VERSION, UnknownValueError, get, of_type
from .refs import referenced
from .secrets import secret_findings

KEY_SECRET_SUFFIXES = ("/keystore", "/keystore-password")
READ = "secretsmanager:getsecretvalue"
_AWS_MANAGED = ("", "alias/aws/secretsmanager")
_FIX_PUT = ("Fix: declare the secret without a value (no SecretVersion); the operator stores "
            "it with `python -m prep_ha put-keystore` (components/secrets.py).")


def key_secrets(resources: list[PolicyResource]) -> list[PolicyResource]:
    """The keystore's and its password's secrets, by the project's naming."""
    found = []
    for secret in of_type(resources, SECRET):
        name = get(secret.props, "name")
        if isinstance(name, str) and name.endswith(KEY_SECRET_SUFFIXES):
            found.append(secret)
    return found


def _validate_out_of_state(args: StackValidationArgs, report: ReportViolation) -> None:
    keys = key_secrets(list(args.resources))
    for version in of_type(args.resources, SECRET_VERSION):
        for secret in referenced(version, "secretId", keys):
            report(f"{version.name} writes a value into {get(secret.props, 'name')}: Pulumi "
                   f"would keep the validator key in its state. {_FIX_PUT}", version.urn)
        try:
            value = get(version.props, "secretString")
        except UnknownValueError:
            continue
        value = getattr(value, "value", value)  # pulumi_policy.Secret when wrapped
        if isinstance(value, str) and "a JSON keystore (crypto/ciphertext/kdf)" in \
                secret_findings(value):
            report(f"{version.name} stores a JSON keystore through Pulumi. {_FIX_PUT}",
                   version.urn)


secrets_keystore_out_of_state = Stack(
    name="secrets-keystore-out-of-state",
    description="No SecretVersion writes the keystore or its password: Pulumi state never "
                "holds the validator key.",
    validate=_validate_out_of_state,
)


def _lower_keys(mapping: Any) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in mapping.items()} if isinstance(mapping, Mapping) \
        else {}


def _everyone(principal: Any) -> bool:
    if isinstance(principal, Mapping):
        principal = principal.get("AWS")
    return principal == "*" or principal == ["*"]


def _denies_read(stmt: Mapping[str, Any]) -> bool:
    actions = stmt.get("Action", [])
    actions = [actions] if isinstance(actions, str) else list(actions)
    return stmt.get("Effect") == "Deny" and _everyone(stmt.get("Principal")) \
        and any(a.lower() in (READ, "secretsmanager:*", "*") for a in actions)


def _condition_keys(stmt: Mapping[str, Any], operators: tuple[str, ...]) -> set[str]:
    keys: set[str] = set()
    for operator, block in _lower_keys(stmt.get("Condition")).items():
        if operator in operators:
            keys |= set(_lower_keys(block))
    return keys


def policy_gaps(document: Any) -> list[str]:
    """What a keystore secret's resource policy lacks (empty when it guards the key)."""
    denies = [s for s in statements(document) if _denies_read(s)]
    gaps = []
    if not any("aws:principalarn" in _condition_keys(s, ("stringnotequals", "arnnotequals",
                                                         "arnnotlike", "stringnotlike"))
               for s in denies):
        gaps.append("a Deny of GetSecretValue to every principal but the node role "
                    "(aws:PrincipalArn)")
    if not any(_condition_keys(s, ("stringnotequals",)) & {"aws:sourcevpc", "aws:sourcevpce"}
               for s in denies):
        gaps.append("a Deny of GetSecretValue from outside the VPC (aws:SourceVpc or "
                    "aws:SourceVpce)")
    return gaps


def _validate_guarded(args: StackValidationArgs, report: ReportViolation) -> None:
    policies = of_type(args.resources, SECRET_POLICY)
    for secret in key_secrets(list(args.resources)):
        name = get(secret.props, "name")
        try:
            kms = get(secret.props, "kmsKeyId")
        except UnknownValueError:  # a preview: the key is being created, so it is ours
            kms = "unknown"
        if not isinstance(kms, str) or kms in _AWS_MANAGED:
            report(f"{name} is encrypted with the AWS-managed key: anyone allowed "
                   "secretsmanager:GetSecretValue in the account can read it. Fix: set "
                   "kms_key_id to the stack's customer-managed key (components/secrets.py).",
                   secret.urn)
        attached = [p for p in policies if secret in referenced(p, "secretArn", [secret])]
        if not attached:
            report(f"{name} has no resource policy, so any principal with IAM access, from "
                   "anywhere, can read the validator key. Fix: attach a SecretPolicy like "
                   "components/secrets.py secret_policy(only_the_role=True).", secret.urn)
            continue
        for policy in attached:
            for gap in policy_gaps(get(policy.props, "policy")):
                report(f"The resource policy of {name} lacks {gap}. Fix: use "
                       "components/secrets.py secret_policy(only_the_role=True).", policy.urn)


secrets_keystore_guarded = Stack(
    name="secrets-keystore-guarded",
    description="The keystore secrets use a customer-managed KMS key and a resource policy: "
                "only the node role reads them, and only from inside the VPC.",
    validate=_validate_guarded,
)
