"""Stack facts a policy needs beyond the resources: admin CIDRs and the ICON network.

Read from the policy's config (`--policy-pack-config`) when set there, else from the stack's
own `icon-prep-ha:*` config, which the engine hands to policy packs (pulumi.Config works
inside a policy). One source of truth: the stack file the program itself reads.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Any

import pulumi

from prep_ha.config import ICON_NETWORKS, NAMESPACE

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _stack_value(key: str) -> Any:
    try:
        raw = pulumi.Config(NAMESPACE).get(key)
    except Exception:  # outside an engine run there is no stack config to read
        return None
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def setting(config: Mapping[str, Any], key: str) -> Any:
    value = config.get(key) if config else None
    return value if value is not None else _stack_value(key)


def admin_cidrs(config: Mapping[str, Any]) -> list[Network] | None:
    """The networks SSH may come from, or None when neither config names them."""
    value = setting(config, "adminCidrs")
    if value is None:
        return None
    values = [value] if isinstance(value, str) else list(value)
    return [ipaddress.ip_network(str(v), strict=False) for v in values]


def is_mainnet(config: Mapping[str, Any]) -> bool:
    """Whether the stack is a MainNet validator; an unknown network counts as MainNet."""
    network = setting(config, "iconNetwork")
    return ICON_NETWORKS.get(str(network), "mainnet") == "mainnet"
