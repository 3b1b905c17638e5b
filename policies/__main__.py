"""Policy pack entry point: `pulumi preview --policy-pack policies` runs this file.

The policies live in prep_ha_policies/ so that tests import them without starting the
policy server that PolicyPack(...) starts here.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The policies read the cluster script with the project's own parser (prep_ha), so that
# what they judge is what the bootstrap renders.
sys.path[:0] = [str(HERE.parent), str(HERE)]

from prep_ha_policies import POLICIES  # noqa: E402
from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

# Mandatory unless the stack's --policy-pack-config relaxes a policy (policies/config/).
PolicyPack(name="icon-prep-ha", enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
