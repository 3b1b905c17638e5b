"""The Debian release every instance of a stack runs, in one place.

The AMI lookup (components/node.py), the lab's node image (lab/image.py), the cluster tools the
tests and `python -m prep_ha simulate` run (prep_ha/nodetools.py) and the membership check that
keeps a pair on one release (prep_ha/cluster/membership.py) all read it from here.

Debian 13 (trixie): Pacemaker 3.0, pcs 0.12, corosync 3.1.9, resource-agents and fence-agents
4.16, cloud-init 25.1. Debian 12 left regular security support in June 2026 (LTS until June
2028); pcs 0.11 (12) and 0.12 (13) each support only their own Pacemaker line, so a pair never
mixes the two.
"""

from __future__ import annotations

DEBIAN_VERSION = "13"
DEBIAN_CODENAME = "trixie"


def ami_name_pattern(architecture: str) -> str:
    """The official Debian AMIs of the release (owner 136693071363) for an EC2 architecture.

    `debian-13-amd64-20251117-2299`; the backports variant (`debian-13-backports-amd64-…`)
    does not match."""
    return f"debian-{DEBIAN_VERSION}-{'arm64' if architecture == 'arm64' else 'amd64'}-*"
