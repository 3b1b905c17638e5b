"""The cluster script the bootstrap Commands will run, read back into the cluster model.

Policies judge this script, not a tag or a label: it is exactly what reaches the nodes.
parse_script reads the lines pcs will run to build the CIB and the `pcs cluster setup` line;
anything else in the script (or in another Command) that turns STONITH off is found by
scanning the raw text, since such a line could sit outside build_cib.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pulumi_policy import PolicyResource

from prep_ha.cluster.model import ClusterModel
from prep_ha.cluster.pcs import PCS_F, SETUP, ScriptParseError, parse_script

from .props import COMMANDS, UnknownValueError, get, strings

# Fields of a Command that run on the machine; `environment` values reach it too.
COMMAND_FIELDS = ("create", "update", "delete", "stdin")

# Pacemaker reads these as false (crm_is_true): false, no, off, 0, n.
_FALSE = r"['\"]?(?:false|no|off|0|n)\b"
_STONITH_ASSIGN = re.compile(
    r"stonith-enabled['\"]?(?:\s*=\s*|\s+(?:(?:-v|--update|--value|-U)[\s=]+)?)" + _FALSE, re.I)
_VALUE_FLAG = re.compile(r"(?:-v|--update|--value|-U)[\s=]+" + _FALSE, re.I)
_FENCE_REMOVED = re.compile(r"\bpcs\b.*\bstonith\s+(?:disable|delete|remove)\b")


@dataclass(frozen=True)
class Bootstrap:
    """A Command whose stdin is a cluster script, and what it parses to (or why it did not)."""

    resource: PolicyResource
    script: str
    model: ClusterModel | None
    error: str | None


def command_texts(props: Mapping[str, Any], skip: Collection[str] = ()) -> Iterator[str]:
    """The known text a Command runs: its command lines, stdin and `NAME=value` environment
    (without the fields in `skip`)."""
    for key in COMMAND_FIELDS:
        if key in skip:
            continue
        try:
            value = get(props, key)
        except UnknownValueError:
            continue
        if isinstance(value, str):
            yield value
    try:
        env = get(props, "environment")
    except UnknownValueError:
        env = None
    for name in env or ():
        try:
            value = env[name]
        except UnknownValueError:
            continue
        yield from (f"{name}={v}" for v in strings(value))


def is_cluster_script(text: str) -> bool:
    return any(line.strip().startswith((SETUP + " ", PCS_F + " ")) for line in text.splitlines())


def bootstraps(resources: Sequence[PolicyResource], *,
               require_known: bool = False) -> list[Bootstrap]:
    """Commands whose stdin is a cluster script; with `require_known`, an unknown stdin raises."""
    found = []
    for r in resources:
        if r.resource_type not in COMMANDS:
            continue
        try:
            script = get(r.props, "stdin")
        except UnknownValueError:
            if require_known:
                raise
            continue
        if not isinstance(script, str) or not is_cluster_script(script):
            continue
        try:
            found.append(Bootstrap(r, script, parse_script(script), None))
        except (ScriptParseError, ValueError, IndexError) as e:
            found.append(Bootstrap(r, script, None, str(e) or type(e).__name__))
    return found


def stonith_off_lines(text: str) -> list[str]:
    """Lines that would run with STONITH disabled or the fence device removed."""
    hits = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        off = "stonith-enabled" in line.lower() and (
            _STONITH_ASSIGN.search(line) or ("crm_attribute" in line and _VALUE_FLAG.search(line)))
        if off or _FENCE_REMOVED.search(line):
            hits.append(line)
    return hits
