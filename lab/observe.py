"""What the drill and the benchmark look at: the ICON role processes on each node."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from lab.client import probe
from lab.node import NodeSpec, is_stopped, processes

# The lab's stand-in for the icon2-node container process (lab/standins/icon_node.py).
ICON_NODE = "/usr/lib/prep-ha-lab/icon_node.py"


def is_role(argv: list[str], role: str | None = None) -> bool:
    return len(argv) >= 2 and argv[-2] == ICON_NODE and (role is None or argv[-1] == role)


def roles_on(spec: NodeSpec) -> dict[str, int]:
    """role -> pid of the ICON role processes running (not frozen) on the node right now."""
    return {argv[-1]: pid for pid, argv in processes(spec) if is_role(argv)
            and not is_stopped(pid)}


class Background:
    """Calls `tick()` every `interval` seconds in a thread while used as a context manager."""

    interval: float

    def tick(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def __enter__(self):  # noqa: ANN204 - returns the subclass
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@dataclass
class Sampler(Background):
    """Samples both nodes' role processes in the background, recording every unsafe moment
    and every peer process seen (a new pid on a node is a start of the peer there)."""

    nodes: tuple[NodeSpec, ...]
    interval: float = 0.2
    samples: int = 0
    peer_on_both: list[float] = field(default_factory=list)
    peer_with_ctz: list[float] = field(default_factory=list)
    peer_pids: dict[str, list[int]] = field(default_factory=dict)  # node -> pids, in order

    def tick(self) -> None:
        now = time.time()
        roles = [roles_on(n) for n in self.nodes]
        self.samples += 1
        if sum("peer" in r for r in roles) > 1:
            self.peer_on_both.append(now)
        if any({"peer", "ctz"} <= set(r) for r in roles):
            self.peer_with_ctz.append(now)
        for spec, r in zip(self.nodes, roles, strict=True):
            pids = self.peer_pids.setdefault(spec.name, [])
            if "peer" in r and r["peer"] not in pids:
                pids.append(r["peer"])


@dataclass
class Prober(Background):
    """Asks the peer VIP who answers, twice a second, from the client: (time, answer)."""

    vip: str
    interval: float = 0.5
    answers: list[tuple[float, dict | None]] = field(default_factory=list)

    def tick(self) -> None:
        self.answers.append((time.time(), probe(self.vip)))

    def since(self, t: float) -> list[dict | None]:
        return [a for at, a in self.answers if at >= t]
