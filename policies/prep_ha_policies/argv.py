"""Secrets on a command line: what a node or the operator's machine runs must not put one there.

Every local user can read every process's argv (/proc/PID/cmdline, `ps`), and shells and
audit logs keep it: `pcs host auth -p "$(fetch)"` hands the hacluster password to all of
them even though the text Pulumi stores carries only the fetch. Passwords go on stdin
(`printf '%s\\n' "$pw" | pcs host auth ... -u hacluster`), secret values through files.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pulumi_policy import ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from .props import BUCKET_OBJECT, COMMANDS, INSTANCE, LAUNCH_TEMPLATE
from .script import command_texts
from .userdata import boot_commands, document_name, user_data

ARGV_SECRETS = (
    (re.compile(r"\bpcs\b.*\b(?:host|cluster)\s+auth\b.*\s(?:-p|--password)(?:[\s=]|$)"),
     "the hacluster password (`pcs ... auth -p`)"),
    (re.compile(r"\bput-secret-value\b.*\s--secret-(?:string|binary)\b"),
     "a Secrets Manager value (`--secret-string`)"),
    (re.compile(r"\bdocker(?:-compose)?\b.*\s(?:-e|--env)[\s=]+KEY_PASSWORD\b"),
     "KEY_PASSWORD (`docker -e`)"),
)


def logical_lines(text: str) -> Iterator[str]:
    """Shell lines with backslash continuations joined, so a split command is seen whole."""
    yield from re.sub(r"\\\n\s*", " ", text).splitlines()


def argv_findings(text: str) -> list[str]:
    found = []
    for line in logical_lines(text):
        for pattern, what in ARGV_SECRETS:
            if pattern.search(line):
                found.append(f"`{line.strip()[:120]}` puts {what} on a command line")
    return found


def _texts(args: ResourceValidationArgs) -> Iterator[tuple[str, str]]:
    if args.resource_type in COMMANDS:
        for text in command_texts(args.props):
            yield "the command or its stdin", text
    elif args.resource_type in (INSTANCE, LAUNCH_TEMPLATE, BUCKET_OBJECT):
        document = user_data(args.resource_type, args.props)
        if document:
            yield document_name(args.resource_type), "\n".join(boot_commands(document))


def _validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for where, text in _texts(args):
        for finding in argv_findings(text):
            report(f"In {where}, {finding}, where every local user can read it (/proc, ps). "
                   "Fix: pass it on stdin (pcs reads the password from stdin when -p is "
                   "absent) or in a root-only tmpfs file.")


secrets_not_on_argv = ResourceValidationPolicy(
    name="secrets-not-on-argv",
    description="No password or secret value on a command line the nodes or the operator run.",
    validate=_validate,
)
