"""The lab's pulumi-command: the program's declared Commands, run as `pulumi up` runs them.

Local Commands that follow a remote one (the image roll) run here too, on the client.

Each Command's `create` (or `update` on a second `up`) goes over SSH to the host it names, with
its `stdin`, in the order the program declared them, pinning the host key the Command's
connection names; a connection that fails (or meets another host key) is dialled again like
pulumi-command does (dialErrorLimit); a non-zero exit fails the whole `up`, naming the
Command and showing its output, which is what an operator would see.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.client import SSH_UNREACHABLE, ssh
from lab.deploy import Command
from lab.netns import LabError, ns_argv, run_proc
from lab.topology import CLIENT_NS

REPO = Path(__file__).resolve().parent.parent

DIAL_ERROR_LIMIT = 60  # components/cluster.py
DIAL_PAUSE = 5


@dataclass(frozen=True)
class CommandRun:
    name: str
    seconds: float
    stdout: str
    stderr: str


def run_local(cmd: Command, key: Path, text: str) -> subprocess.CompletedProcess[str]:
    """A local Command: a shell on the operator's machine (the client), in the project
    directory, with the Command's environment; the admin key on stdin if it asked for it."""
    stdin = key.read_text() if cmd.stdin_is_admin_key else cmd.stdin
    return run_proc(ns_argv(CLIENT_NS, "/bin/sh", "-c", text), timeout=3600, input=stdin,
                    cwd=str(REPO), env={**os.environ, **(cmd.environment or {})})


def run_command(cmd: Command, key: Path, *, update: bool = False,
                stdin: str | None = None) -> CommandRun:
    text = (cmd.update or cmd.create) if update else cmd.create
    t0 = time.monotonic()
    if cmd.local:
        proc = run_local(cmd, key, text)
        if proc.returncode != 0:
            raise LabError(f"`pulumi up` fails: local Command {cmd.name} exited "
                           f"{proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return CommandRun(cmd.name, time.monotonic() - t0, proc.stdout, proc.stderr)
    for _ in range(DIAL_ERROR_LIMIT):
        proc = ssh(key, cmd.user, cmd.host, text, input=stdin if stdin is not None else cmd.stdin,
                   host_key=cmd.host_key)
        if proc.returncode != SSH_UNREACHABLE:
            break
        time.sleep(DIAL_PAUSE)
    if proc.returncode != 0:
        raise LabError(f"`pulumi up` fails: Command {cmd.name} on {cmd.host} exited "
                       f"{proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return CommandRun(cmd.name, time.monotonic() - t0, proc.stdout, proc.stderr)


def run_commands(commands: list[Command], key: Path, *, update: bool = False,
                 stdin_of: Callable[[Command], str | None] = lambda c: None,
                 echo: Callable[[str], None] = print) -> list[CommandRun]:
    """Every Command in declared order; `stdin_of` may substitute a script (the benchmark)."""
    runs = []
    for cmd in commands:
        result = run_command(cmd, key, update=update, stdin=stdin_of(cmd))
        echo(f"  {cmd.name}: done in {result.seconds:.0f} s")
        runs.append(result)
    return runs
