"""What a node runs: the user-data text, its commands and the files it writes; and its payload
(an S3 object, prep_ha/payload.py), read as the same kind of document: its first-boot steps
as runcmd, its files as write_files."""

from __future__ import annotations

import base64
import binascii
import gzip
import re
import tarfile
from collections.abc import Mapping
from typing import Any

import yaml

from prep_ha.payload import KEY_PREFIX, read_archive

from .props import BUCKET_OBJECT, INSTANCE, LAUNCH_TEMPLATE, get

# The two services Pacemaker alone may start (systemd:peer and systemd:ctz in the CIB).
MANAGED_UNITS = ("peer", "ctz")
_UNIT = r"(?<![\w.@-])(?:peer|ctz)(?:\.service)?(?![\w.@-])"
_STARTS = re.compile(
    r"\bsystemctl\b[^;&|\n]*\b(?:enable|start|restart|reenable|try-restart|reload-or-restart|"
    r"try-reload-or-restart)\b[^;&|\n]*" + _UNIT
    + r"|\bservice\s+" + _UNIT + r"\s+(?:start|restart)\b"
    # A hand-made symlink into a .wants directory enables a unit just the same.
    + r"|\.wants/" + _UNIT)
# How a payload that is not an archive the installer reads shows (no policy can check it).
UNREADABLE = "#cloud-config\n# unreadable payload: "
_MANAGED_UNIT_FILE = re.compile(r"(?:^|/)(?:peer|ctz)\.service(?:\.d/[^/]+)?$")
_INSTALL_KEY = re.compile(r"(?m)^\s*(?:WantedBy|RequiredBy|UpheldBy|Alias)\s*=")
_PULLS_IN = re.compile(r"(?m)^\s*(?:Wants|Requires|BindsTo|Upholds)\s*=.*" + _UNIT)


def user_data(resource_type: str, props: Mapping[str, Any]) -> str | None:
    """The user-data document of an instance or launch template, decoded, or a payload object
    as a cloud-config document; None if it has none."""
    if resource_type == BUCKET_OBJECT:
        return _payload_document(props)
    if resource_type == INSTANCE:
        plain = get(props, "userData")
        if isinstance(plain, str) and plain:
            return _maybe_encoded(plain, base64_expected=False)
        encoded = get(props, "userDataBase64")
    elif resource_type == LAUNCH_TEMPLATE:
        encoded = get(props, "userData")
    else:
        return None
    return _maybe_encoded(encoded, base64_expected=True) if isinstance(encoded, str) else None


def document_name(resource_type: str) -> str:
    """How a finding names the document it comes from."""
    return "the payload" if resource_type == BUCKET_OBJECT else "user-data"


def _payload_document(props: Mapping[str, Any]) -> str | None:
    key, encoded = get(props, "key"), get(props, "contentBase64")
    if not (isinstance(key, str) and key.startswith(KEY_PREFIX) and isinstance(encoded, str)):
        return None
    try:
        manifest, contents = read_archive(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError, KeyError, OSError, tarfile.TarError) as e:
        return f"{UNREADABLE}{type(e).__name__}: {e}\n"
    doc = {"runcmd": manifest.get("first_boot", []),
           "write_files": [{"path": p, "content": c.decode(errors="replace")}
                           for p, c in contents.items()]}
    # Each file's lines kept as lines (literal blocks, never folded), as scanners read them.
    return "#cloud-config\n" + yaml.dump(doc, Dumper=_LiteralDumper, sort_keys=False,
                                          width=1_000_000)


class _LiteralDumper(yaml.SafeDumper):
    pass


_LiteralDumper.add_representer(str, lambda dumper, data: dumper.represent_scalar(
    "tag:yaml.org,2002:str", data, style="|" if "\n" in data else None))


def _maybe_encoded(value: str, *, base64_expected: bool) -> str:
    raw: bytes = value.encode()
    if base64_expected:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            pass
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode(errors="replace")


def cloud_config(text: str) -> Mapping[str, Any] | None:
    if not text.startswith("#cloud-config"):
        return None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return doc if isinstance(doc, Mapping) else None


def _command_line(item: Any) -> str:
    return " ".join(str(w) for w in item) if isinstance(item, list) else str(item)


def boot_commands(text: str) -> list[str]:
    """Command lines the node runs: cloud-config runcmd/bootcmd, or every line of a script."""
    doc = cloud_config(text)
    if doc is None:
        return text.splitlines()
    items = [*(doc.get("bootcmd") or []), *(doc.get("runcmd") or [])]
    lines = [_command_line(item) for item in items]
    for f in written_files(doc).values():
        lines += f.splitlines()
    return lines


def written_files(doc: Mapping[str, Any] | None) -> dict[str, str]:
    out = {}
    for entry in (doc or {}).get("write_files") or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("path"), str):
            out[entry["path"]] = str(entry.get("content") or "")
    return out


def autostart_problems(text: str) -> list[str]:
    """Ways `text` (user-data or a command) starts peer/ctz outside Pacemaker."""
    problems = [f"runs `{line.strip()}`" for line in boot_commands(text) if _STARTS.search(line)]
    for path, content in written_files(cloud_config(text)).items():
        if _MANAGED_UNIT_FILE.search(path) and _INSTALL_KEY.search(content):
            problems.append(f"writes {path} with an [Install] section (WantedBy=...), so "
                            "systemd would start it at boot")
        elif _PULLS_IN.search(content):
            problems.append(f"writes {path}, which pulls in peer/ctz (Wants/Requires=)")
    return problems
