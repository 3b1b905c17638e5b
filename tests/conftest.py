"""The nodes' own tools for every test that runs pcs, Pacemaker, cloud-init or netplan.

They come from prep_ha.nodetools: this machine's if it runs the nodes' Debian release, else the
lab's cached node image. Without either a test skips, naming the fix, unless
PREP_HA_REQUIRE_NODE_TOOLS=1 (set by .ci/run, which builds the image first): there a missing
tool is a failure, never a silently skipped check.
"""

from __future__ import annotations

import os

import pytest

from prep_ha.nodetools import NodeTools, NodeToolsMissing
from prep_ha.nodetools import node_tools as find_node_tools

REQUIRE_ENV = "PREP_HA_REQUIRE_NODE_TOOLS"


@pytest.fixture(scope="session")
def node_tools() -> NodeTools:
    try:
        return find_node_tools()
    except NodeToolsMissing as e:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(str(e))
        pytest.skip(str(e))
