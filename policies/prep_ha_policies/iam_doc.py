"""Just enough IAM policy evaluation to tell whether a role can fence or move a route, and
only its cluster's."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from fnmatch import fnmatchcase
from typing import Any

# An instance ARN naming one instance, not a wildcard over all of them.
_ONE_INSTANCE = re.compile(r"^arn:[^:]+:ec2:[^:]*:[^:]*:instance/i-[0-9a-f]+$")
# Route tables, and nothing else a wildcard could also name.
_ROUTE_TABLES = re.compile(r"^arn:[^:]+:ec2:[^:]*:[^:]*:route-table/[A-Za-z0-9*?-]+$")
# Operators that grant only when the tag has the value (a negated one grants everywhere else).
_POSITIVE = ("stringequals", "stringlike", "stringequalsignorecase")


def statements(document: Any) -> Iterator[Mapping[str, Any]]:
    """The statements of a policy document given as JSON text or as a mapping."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError:
            return
    if not isinstance(document, Mapping):
        return
    found = document.get("Statement", [])
    for stmt in [found] if isinstance(found, Mapping) else found:
        if isinstance(stmt, Mapping):
            yield stmt


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _matches(patterns: list[str], action: str) -> bool:
    return any(fnmatchcase(action.lower(), p.lower()) for p in patterns)


def grants(stmt: Mapping[str, Any], action: str) -> bool:
    if "NotAction" in stmt:
        return not _matches(_list(stmt["NotAction"]), action)
    return _matches(_list(stmt.get("Action")), action)


def is_allow(stmt: Mapping[str, Any]) -> bool:
    return stmt.get("Effect") == "Allow"


def is_scoped(stmt: Mapping[str, Any]) -> bool:
    """Limited to some instances: a resource-tag condition, or ARNs of single instances."""
    condition = stmt.get("Condition") or {}
    for operator in condition.values():
        if isinstance(operator, Mapping) and any(
                "resourcetag/" in key.lower() or key.lower() == "ec2:instanceid"
                for key in operator):
            return True
    resources = _list(stmt.get("Resource"))
    return bool(resources) and "NotResource" not in stmt and all(
        _ONE_INSTANCE.match(r) for r in resources)


def has_tag_condition(stmt: Mapping[str, Any], tag: str) -> bool:
    """Granted only on resources whose tag `tag` has the given value."""
    condition = stmt.get("Condition") or {}
    for operator, tests in condition.items():
        if not isinstance(tests, Mapping) or operator.lower().removeprefix(
                "forallvalues:").removeprefix("foranyvalue:") not in _POSITIVE:
            continue
        if any(key.lower().endswith(f"resourcetag/{tag.lower()}") and tests[key] not in ("*", "")
               for key in tests):
            return True
    return False


def on_route_tables_only(stmt: Mapping[str, Any]) -> bool:
    resources = _list(stmt.get("Resource"))
    return bool(resources) and "NotResource" not in stmt and all(
        _ROUTE_TABLES.match(r) for r in resources)
