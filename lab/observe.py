"""What the drill and the benchmark look at: the VIP from a client, the stand-ins on each node."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field

from lab.netns import run
from lab.node import NodeSpec, processes
from lab.topology import CLIENT_NS


def probe(vip: str, timeout: float = 1.0) -> dict | None:
    """GET http://VIP:9000/ from the client host: {"role", "node"} or None if nothing answers."""
    out = run(["ip", "netns", "exec", CLIENT_NS, "curl", "-s", "-m", str(timeout),
               f"http://{vip}:9000/"], check=False, timeout=timeout + 5)
    try:
        return json.loads(out)
    except ValueError:
        return None


def roles_on(spec: NodeSpec) -> set[str]:
    """Roles of the service stand-ins running on the node right now."""
    return {argv[-1] for _, argv in processes(spec)
            if len(argv) >= 3 and os.path.basename(argv[-2]) == "standin.py"}


@dataclass
class Sampler:
    """Samples both nodes' stand-ins in the background, recording every unsafe moment."""

    nodes: tuple[NodeSpec, ...]
    interval: float = 0.2
    samples: int = 0
    peer_on_both: list[float] = field(default_factory=list)
    peer_with_ctz: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.time()
            roles = [roles_on(n) for n in self.nodes]
            self.samples += 1
            if sum("peer" in r for r in roles) > 1:
                self.peer_on_both.append(now)
            if any({"peer", "ctz"} <= r for r in roles):
                self.peer_with_ctz.append(now)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
