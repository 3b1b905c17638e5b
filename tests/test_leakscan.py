"""The lab's leak scanner can fail: it finds a planted value in every form and place it
searches, skips only what it is told is allowed, and never prints a value."""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
import time

import pytest

from lab.leakscan import Scanner, needles

CANARY = "CANARY-leak-9fQ2xLm7"


def planted_tree(root):
    (root / "etc").mkdir(parents=True)
    (root / "etc/clean.conf").write_text("nothing to see\n")
    (root / "var/log").mkdir(parents=True)
    (root / "var/log/raw.log").write_text(f"x KEY_PASSWORD = '{CANARY}'\n")
    (root / "var/log/old.log.1.gz").write_bytes(gzip.compress(f"pw={CANARY}".encode()))
    (root / "b64").write_bytes(b"ud=" + base64.b64encode(b"#cloud-config\n" + CANARY.encode()))
    (root / "escaped.json").write_text(json.dumps({"v": f'say "{CANARY}"\n'}))
    (root / "run/prep-ha/peer").mkdir(parents=True)
    (root / "run/prep-ha/peer/keysecret").write_text(CANARY)
    (root / "link").symlink_to(root / "var/log/raw.log")  # counted once, via its target


def test_every_form_is_found_and_only_the_allowed_place_is_skipped(tmp_path):
    planted_tree(tmp_path)
    scanner = Scanner({"canary": CANARY})
    scanner.tree("files", tmp_path, "node:",
                 skip=lambda p: p == "run/prep-ha/peer" or p.startswith("run/prep-ha/peer/"))
    found = sorted(h.where for h in scanner.hits)
    assert found == ["node:/b64", "node:/escaped.json", "node:/var/log/old.log.1.gz",
                     "node:/var/log/raw.log"]
    assert scanner.scanned == {"files": 5}
    report = scanner.report("test")
    assert "4 hits" in report and CANARY not in report


def test_a_clean_tree_reports_zero_hits(tmp_path):
    (tmp_path / "a").write_text("nothing")
    scanner = Scanner({"canary": CANARY})
    scanner.tree("files", tmp_path, "n:")
    assert scanner.hits == [] and scanner.report("t").endswith("zero hits")


def test_process_argv_and_environment_are_searched():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                             env={**os.environ, "LEAKED": CANARY})
    try:
        # Until the child has exec'd, /proc shows the environment it was forked with.
        cmdline = f"/proc/{child.pid}/cmdline"
        deadline = time.monotonic() + 10
        while b"time.sleep" not in open(cmdline, "rb").read() and time.monotonic() < deadline:
            time.sleep(0.01)
        scanner = Scanner({"canary": CANARY})
        scanner.processes("processes", [child.pid, os.getpid()], "here")
        assert [h.where for h in scanner.hits] == [f"here pid {child.pid} environ"]
    finally:
        child.kill()
        child.wait()


def test_a_value_across_a_chunk_boundary_is_found(tmp_path, monkeypatch):
    import lab.leakscan as leakscan
    monkeypatch.setattr(leakscan, "READ_LIMIT", 4096)
    big = tmp_path / "big"
    big.write_bytes(b"x" * (4096 - 5) + CANARY.encode() + b"y" * 10000)
    scanner = Scanner({"canary": CANARY})
    scanner.file("files", big, "big")
    assert [h.where for h in scanner.hits] == ["big"]


def test_secrets_too_short_to_search_are_refused():
    with pytest.raises(ValueError, match="too short"):
        Scanner({"pin": "1234"})


@pytest.mark.parametrize("offset", range(3))
def test_base64_needles_match_at_every_alignment(offset):
    blob = base64.b64encode(b"ab"[:offset] + CANARY.encode() + b"tail")
    assert any(n in blob for n in needles(CANARY) if n != CANARY.encode())
