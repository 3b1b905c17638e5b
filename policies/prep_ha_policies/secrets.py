"""Secrets: the keystore, its password and private keys reach the nodes only via Secrets Manager.

User-data is readable by any process on the node and by anyone allowed
ec2:DescribeInstanceAttribute; command lines and stdin end up in logs and in state.

How secretness reaches a policy: the engine sends secret values to the analyzer, and
pulumi_policy's Analyze/AnalyzeStack deserialize them *unwrapped*, with no marker
(deserialize_properties(..., proxy_secrets=False); only Remediate wraps them in
pulumi_policy.Secret; see pulumi/pulumi-policy#241). What a validation can see is the
resource option additionalSecretOutputs, and the values themselves: so a Secrets Manager
value must be declared secret there (or arrive wrapped), and must not show up in any other
resource's plain (non-secret) properties.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from pulumi_policy import (
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Secret,
    StackValidationArgs,
    StackValidationPolicy,
)

from .props import (
    BUCKET_OBJECT,
    COMMANDS,
    INSTANCE,
    LAUNCH_TEMPLATE,
    SECRET_VERSION,
    UnknownValueError,
    get,
    of_type,
    strings,
)
from .script import command_texts
from .userdata import UNREADABLE, document_name, user_data

_PEM_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
# A JSON keystore (ICON/Ethereum v3), as JSON or escaped inside YAML/shell quoting.
_KEYSTORE_CRYPTO = re.compile(r"""crypto\\?["']?\s*:""", re.I)
_KEYSTORE_FIELD = re.compile(r"""(?:ciphertext|kdf)\\?["']?\s*:""", re.I)
# A literal value, not an expansion ($VAR, $(cmd)), a template ({{ x }}) or an empty string.
_LITERAL = r"""\s*["']?(?![\s"'$`;{}!&*|>]|null\b|~)"""
_KEY_PASSWORD = re.compile(r"KEY_PASSWORD\s*[=:]" + _LITERAL)
_PASSWORD_KEY = re.compile(r"""(?<![\w.-])["']?[\w.-]*password["']?\s*:""" + _LITERAL, re.I)
_PASSWORD_ENV = re.compile(r"^[\w.-]*PASS(?:WORD|PHRASE)[\w.-]*=" + _LITERAL, re.I)
MIN_SECRET_LEN = 8


def secret_findings(text: str) -> list[str]:
    """What kinds of secret `text` carries in clear (never the secret itself)."""
    found = []
    if _PEM_KEY.search(text):
        found.append("a PEM private key")
    if _KEYSTORE_CRYPTO.search(text) and _KEYSTORE_FIELD.search(text):
        found.append("a JSON keystore (crypto/ciphertext/kdf)")
    if _KEY_PASSWORD.search(text):
        found.append("a literal KEY_PASSWORD")
    elif _PASSWORD_KEY.search(text) or any(_PASSWORD_ENV.search(line)
                                         for line in text.splitlines()):
        found.append("a literal password")
    return found


def _plain_texts(args: ResourceValidationArgs) -> Iterator[tuple[str, str]]:
    if args.resource_type in (INSTANCE, LAUNCH_TEMPLATE, BUCKET_OBJECT):
        document = user_data(args.resource_type, args.props)
        if document:
            yield document_name(args.resource_type), document
    elif args.resource_type in COMMANDS:
        # A field the program declares secret (additional_secret_outputs) is encrypted in the
        # state and masked in output: the roll Command's stdin, the admin key, is one.
        secret = set(args.opts.additional_secret_outputs or ())
        for text in command_texts(args.props, skip=secret):
            yield "the command, its stdin or environment", text


def _validate_plain_inputs(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for where, text in _plain_texts(args):
        if text.startswith(UNREADABLE):
            report(f"{where} cannot be read ({text[len(UNREADABLE):].strip()}), so it cannot "
                   "be checked for secrets. Fix: publish payloads only through "
                   "PayloadStore.publish (components/payload.py), which writes the archive "
                   "prep_ha/payload.py builds.")
        for finding in secret_findings(text):
            report(f"{where} contains {finding}. Fix: store it in Secrets Manager "
                   "(components/secrets.py) and let the node fetch it by id at service start "
                   "(prep-ha-secret); user-data and commands must carry secret ids only.")


secrets_plain_inputs = ResourceValidationPolicy(
    name="secrets-plain-inputs",
    description="No keystore, password or private key in user-data or Command inputs.",
    validate=_validate_plain_inputs,
)


def _secret_value(props: Mapping[str, Any]) -> tuple[Any, bool]:
    value = get(props, "secretString")
    if isinstance(value, Secret):
        return value.value, True
    return value, False


def _leaks(value: str, resource: Any) -> list[str]:
    secret_keys = set(resource.opts.additional_secret_outputs or ())
    hits = []
    for key in resource.props:
        if key in secret_keys:
            continue
        try:
            item = resource.props[key]
        except UnknownValueError:
            continue
        if any(value in s for s in strings(item)):
            hits.append(key)
    return hits


def _validate_secret_values(args: StackValidationArgs, report: ReportViolation) -> None:
    versions = of_type(args.resources, SECRET_VERSION)
    for version in versions:
        try:
            value, wrapped = _secret_value(version.props)
        except UnknownValueError:
            continue
        if value is None:
            continue
        if not wrapped and "secretString" not in (version.opts.additional_secret_outputs or ()):
            report("secretString is not a secret: Pulumi would keep it in clear in the state. "
                   "Fix: pass pulumi.Output.secret(...) or a value read with "
                   "Config.require_secret, and list secretString in additional_secret_outputs.",
                   version.urn)
        if not isinstance(value, str) or len(value) < MIN_SECRET_LEN:
            continue
        for other in args.resources:
            if other.resource_type == SECRET_VERSION:
                continue
            for key in _leaks(value, other):
                report(f"The value stored by {version.name} appears in plain property "
                       f"`{key}` of {other.name}. Fix: pass the secret's id or name instead, "
                       "and let the node read it from Secrets Manager.", other.urn)


secrets_manager_values = StackValidationPolicy(
    name="secrets-manager-values",
    description="Secrets Manager values are Pulumi secrets and appear in no plain input.",
    validate=_validate_secret_values,
)
