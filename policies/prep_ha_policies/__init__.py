"""The icon-prep-ha policies, importable without starting a policy server (see ../__main__.py)."""

from __future__ import annotations

from pulumi_policy import Policy

from .colocation import (
    anti_colocation_constraint,
    anti_colocation_pacemaker_only,
    anti_colocation_two_nodes,
)
from .exposure import (
    exposure_cluster_ports,
    exposure_ebs_encrypted,
    exposure_imdsv2,
    exposure_ssh_admin_only,
)
from .mainnet import mainnet_termination_protection
from .secrets import secrets_manager_values, secrets_plain_inputs
from .stonith import stonith_cluster_config, stonith_fence_permissions

POLICIES: list[Policy] = [
    stonith_cluster_config,
    stonith_fence_permissions,
    anti_colocation_constraint,
    anti_colocation_two_nodes,
    anti_colocation_pacemaker_only,
    exposure_cluster_ports,
    exposure_ssh_admin_only,
    exposure_imdsv2,
    exposure_ebs_encrypted,
    secrets_plain_inputs,
    secrets_manager_values,
    mainnet_termination_protection,
]
