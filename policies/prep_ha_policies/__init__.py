"""The icon-prep-ha policies, importable without starting a policy server (see ../__main__.py)."""

from __future__ import annotations

from pulumi_policy import Policy

from .argv import secrets_not_on_argv
from .colocation import (
    anti_colocation_constraint,
    anti_colocation_pacemaker_only,
    anti_colocation_two_nodes,
)
from .exposure import (
    exposure_cluster_ports,
    exposure_cluster_ports_hosts_only,
    exposure_ebs_encrypted,
    exposure_imds_hop_limit,
    exposure_imdsv2,
    exposure_ssh_admin_only,
)
from .keystore import secrets_keystore_guarded, secrets_keystore_out_of_state
from .mainnet import mainnet_termination_protection
from .quorum import quorum_split_rule, quorum_token_bounds, stonith_host_map_distinct
from .secrets import secrets_manager_values, secrets_plain_inputs
from .stonith import stonith_cluster_config, stonith_fence_permissions
from .topology import (
    topology_api_endpoints,
    topology_mainnet_multi_az,
    topology_multi_az_placement,
    topology_overlay_routing,
    topology_route_iam_scope,
)

POLICIES: list[Policy] = [
    stonith_cluster_config,
    stonith_fence_permissions,
    stonith_host_map_distinct,
    quorum_split_rule,
    quorum_token_bounds,
    anti_colocation_constraint,
    anti_colocation_two_nodes,
    anti_colocation_pacemaker_only,
    exposure_cluster_ports,
    exposure_cluster_ports_hosts_only,
    exposure_ssh_admin_only,
    exposure_imdsv2,
    exposure_imds_hop_limit,
    exposure_ebs_encrypted,
    secrets_plain_inputs,
    secrets_manager_values,
    secrets_keystore_out_of_state,
    secrets_keystore_guarded,
    secrets_not_on_argv,
    mainnet_termination_protection,
    topology_multi_az_placement,
    topology_overlay_routing,
    topology_api_endpoints,
    topology_route_iam_scope,
    topology_mainnet_multi_az,
]
