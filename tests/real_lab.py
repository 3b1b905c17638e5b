"""Shared by the real-node lab's test modules (tests/test_lab.py: single-AZ,
tests/test_lab_multi_az.py: multi-AZ): one lab per module, and a drill case run as CI runs it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from lab.cluster import Lab, lab_skip_reason, running_lab
from lab.drill import Drill
from prep_ha.config import StackConfig


@contextmanager
def booted_lab(cfg: StackConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The stack's lab, up for the module and torn down after (skipped where it cannot run)."""
    if reason := lab_skip_reason():
        pytest.skip(reason)
    with running_lab(Lab(cfg, tmp_path_factory.mktemp("lab") / "run")) as running:
        yield running


def drill_case(lab: Lab, case: str) -> None:
    """One drill case, its alerts and a leak scan after it; fails with the case's report."""
    drill = Drill(lab)
    result = drill.run_case(case)
    drill.leak_scan(result, [])
    print(result.report())
    assert result.checks and result.passed, result.report()
