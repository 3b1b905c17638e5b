"""Tags every resource of the stack carries; fence_aws/awsvip IAM conditions rely on CLUSTER_TAG."""

from __future__ import annotations

# The instance role may stop/start instances and move private IPs only on resources with
# this tag set to the cluster name (see components/iam.py).
CLUSTER_TAG = "prep-ha:cluster"
NODE_TAG = "prep-ha:node"
ROLE_TAG = "prep-ha:role"


def cluster_tags(cluster_name: str, name: str, **extra: str) -> dict[str, str]:
    """Name plus the cluster tag, plus any extra `prep-ha:*` tags given by the caller."""
    return {"Name": name, CLUSTER_TAG: cluster_name, **extra}
