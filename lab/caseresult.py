"""What a drill case found: its checks, each a sentence and a verdict (lab/drill.py and the
case modules around it share it without importing the drill)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.node import NodeSpec, exec_in


@dataclass
class CaseResult:
    name: str
    active: str
    checks: list[tuple[str, bool]] = field(default_factory=list)
    failover_s: float | None = None

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.checks)

    def check(self, what: str, ok: object) -> None:
        self.checks.append((what, bool(ok)))

    def report(self) -> str:
        took = f", peer answers again after {self.failover_s:.1f} s" if self.failover_s else ""
        lines = [f"== {self.name} (Peer was on {self.active}){took}: "
                 f"{'PASS' if self.passed else 'FAIL'}"]
        lines += [f"   {'ok ' if ok else 'BAD'} {what}" for what, ok in self.checks]
        return "\n".join(lines)


def corosync_timeouts(spec: NodeSpec) -> tuple[int, int]:
    """(token, consensus) in ms as the running corosync has them."""
    out = exec_in(spec, "corosync-cmapctl", "-g", "runtime.config.totem.token")
    token = int(out.rsplit("=", 1)[1])
    out = exec_in(spec, "corosync-cmapctl", "-g", "runtime.config.totem.consensus")
    return token, int(out.rsplit("=", 1)[1])

