"""What every customer-managed key of the stack grants first."""

from __future__ import annotations

from typing import Any


def account_administers_through_iam(partition: str, account: str) -> dict[str, Any]:
    """The account statement AWS puts in a default key policy: without it the key can only be
    managed by the principals named in its policy, and a mistake there locks everyone out."""
    return {
        "Sid": "AccountAdministersThroughIam",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:{partition}:iam::{account}:root"},
        "Action": "kms:*",
        "Resource": "*",
    }
