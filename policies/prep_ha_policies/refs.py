"""Which resource another resource's property points at.

The engine gives stack policies each property's dependencies, which hold even in a preview
where the referenced id is still unknown; a known value (id, name or ARN) also identifies it.
"""

from __future__ import annotations

from collections.abc import Sequence

from pulumi_policy import PolicyResource

from .props import UnknownValueError, get, strings

_IDENTITIES = ("id", "name", "arn")


def _identities(resource: PolicyResource) -> set[str]:
    found = set()
    for key in _IDENTITIES:
        try:
            value = get(resource.props, key)
        except UnknownValueError:
            continue
        if isinstance(value, str):
            found.add(value)
    return found


def referenced(resource: PolicyResource, prop: str,
               candidates: Sequence[PolicyResource], *within: str | int) -> list[PolicyResource]:
    """The candidates `resource.<prop>` (or a value inside it, at `within`) refers to.

    A list or mapping refers to every candidate one of its known strings names. Raises
    UnknownValueError when the value is unknown and no dependency names the target.
    """
    deps = resource.property_dependencies.get(prop, [])
    found = [c for c in candidates if any(c is d for d in deps)]
    try:
        value = get(resource.props, prop, *within)
    except UnknownValueError:
        if not found:
            raise
        return found
    names = set(strings(value))
    found += [c for c in candidates
              if not any(c is f for f in found) and names & _identities(c)]
    return found
