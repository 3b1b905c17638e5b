"""Per-node cloud-init user-data, rendered from the templates in cloud-init/.

Plain functions over plain values (no Pulumi types) so tests can render and validate the
exact document a node boots with. The document carries secret *ids* only: the nodes fetch
the values from Secrets Manager with their instance role (see cloud-init/files/prep-ha-secret).
"""

from __future__ import annotations

import base64
import gzip
import ipaddress
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from prep_ha.config import ICON_IMAGE_REPO, ICON_IMAGE_TAG

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "cloud-init"
# EC2 rejects user-data above 16 KiB (before base64). The document travels gzip-compressed
# (cloud-init detects gzip), which leaves room for the node's scripts and their comments.
MAX_USER_DATA_BYTES = 16 * 1024

# (template in cloud-init/files/, path on the node, mode)
FILES: tuple[tuple[str, str, str], ...] = (
    ("docker-daemon.json", "/etc/docker/daemon.json", "0644"),
    ("aws-config", "/root/.aws/config", "0600"),
    ("prep-ha-secret", "/usr/local/sbin/prep-ha-secret", "0755"),
    ("prep-ha-data-volume", "/usr/local/sbin/prep-ha-data-volume", "0755"),
    ("prep-ha-chain-sync", "/usr/local/sbin/prep-ha-chain-sync", "0755"),
    ("prep-ha-citizen-key", "/usr/local/sbin/prep-ha-citizen-key", "0755"),
    ("prep-ha-network", "/usr/local/sbin/prep-ha-network", "0755"),
    ("prep-ha-holds-peer", "/usr/local/sbin/prep-ha-holds-peer", "0755"),
    ("prep-ha-fence-restart", "/usr/local/sbin/prep-ha-fence-restart", "0755"),
    ("prep-ha-alert", "/usr/local/sbin/prep-ha-alert", "0755"),
    ("prep-ha-alert.sudoers", "/etc/sudoers.d/prep-ha-alert", "0440"),
    ("ha-cluster-exporter.conf",
     "/etc/systemd/system/ha_cluster_exporter.service.d/prep-ha.conf", "0644"),
    ("prep-ha-hacluster", "/usr/local/sbin/prep-ha-hacluster", "0755"),
    ("prep-ha-firewall", "/usr/local/sbin/prep-ha-firewall", "0755"),
    ("prep-ha-firewall.service", "/etc/systemd/system/prep-ha-firewall.service", "0644"),
    ("prep-ha-ssh-host-key", "/usr/local/sbin/prep-ha-ssh-host-key", "0755"),
    ("pcsd-bind.conf", "/etc/systemd/system/pcsd.service.d/prep-ha-bind.conf", "0644"),
    ("prep-ha-network.service", "/etc/systemd/system/prep-ha-network.service", "0644"),
    ("cloud-init-network.cfg", "/etc/cloud/cloud.cfg.d/99-prep-ha-network.cfg", "0644"),
    ("unattended-upgrades.conf", "/etc/apt/apt.conf.d/51prep-ha-unattended-upgrades", "0644"),
    ("prep-ha-hacluster-password.service",
     "/etc/systemd/system/prep-ha-hacluster-password.service", "0644"),
    ("prep-ha-pull-image.service", "/etc/systemd/system/prep-ha-pull-image.service", "0644"),
    ("icon-image.env", "/etc/prep-ha/icon-image.env", "0644"),
    ("prep-ha-image", "/usr/local/sbin/prep-ha-image", "0755"),
    ("peer.yml", "/etc/prep-ha/peer.yml", "0644"),
    ("ctz.yml", "/etc/prep-ha/ctz.yml", "0644"),
    ("peer.service", "/etc/systemd/system/peer.service", "0644"),
    ("ctz.service", "/etc/systemd/system/ctz.service", "0644"),
)

# The arbiter needs only the hacluster password (its pcsd authenticates the nodes' pcs).
ARBITER_FILES: tuple[tuple[str, str, str], ...] = tuple(
    f for f in FILES if f[0] in ("prep-ha-secret", "prep-ha-hacluster",
                                 "prep-ha-hacluster-password.service"))

_PLACEHOLDER = re.compile(r"\{\{\s*([a-z0-9_]+)\s*\}\}")
# Values end up inside shell scripts, unit files and YAML; none needs more than this.
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:/@+=,-]*")


@dataclass(frozen=True)
class NodeUserData:
    """Everything one node's first boot needs, all non-secret."""

    node_name: str
    region: str
    icon_network: str
    icon_image: str
    data_volume_id: str
    heartbeat_ip: str
    heartbeat_cidr: str
    management_ip: str
    management_cidr: str
    peer_vip: str
    citizen_vip: str
    p2p_advertise: str
    keystore_secret_id: str
    keystore_password_secret_id: str
    hacluster_secret_id: str
    # How prep-ha-data-volume marks a volume it formats (prep_ha.config.CHAIN_SYNC).
    chain_sync: str = "snapshot"
    # Where prep-ha-alert publishes; empty (lab/image.py, which only reads the packages):
    # the agent still counts events as metrics.
    alert_topic_arn: str = ""


@dataclass(frozen=True)
class ArbiterUserData:
    """The quorum arbiter's first boot, all non-secret."""

    arbiter_name: str
    region: str
    hacluster_secret_id: str


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings as literal blocks so the node's files stay readable."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def fill(template: str, values: dict[str, str]) -> str:
    """Replace every {{ name }}; an unknown name is a bug in the template, not a blank."""

    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template placeholder {{{{ {key} }}}} has no value")
        return values[key]

    text = _PLACEHOLDER.sub(value, template)
    if "{{" in text:
        raise ValueError(f"malformed placeholder near {text[text.index('{{'):][:40]!r}")
    return text


def _safe(data: NodeUserData | ArbiterUserData) -> dict[str, str]:
    values = asdict(data)
    for key, value in values.items():
        if not _SAFE_VALUE.fullmatch(value):
            raise ValueError(f"user-data value {key}={value!r} has characters unsafe in a script")
    return values


def _values(node: NodeUserData) -> dict[str, str]:
    values = _safe(node)
    heartbeat = ipaddress.IPv4Network(node.heartbeat_cidr)
    management = ipaddress.IPv4Network(node.management_cidr)
    values["heartbeat_prefix"] = str(heartbeat.prefixlen)
    # AWS puts a subnet's router at its network address + 1.
    values["management_gateway"] = str(management.network_address + 1)
    # Node names are <clusterName>-<n> (StackConfig.node_names).
    values["cluster_name"] = node.node_name.rsplit("-", 1)[0]
    # What prep-ha-image accepts, as config and the roll do (an ERE as well as a Python re).
    values["icon_image_pattern"] = f"{ICON_IMAGE_REPO}:{ICON_IMAGE_TAG}"
    return values


def render_user_data(node: NodeUserData, template_dir: Path = TEMPLATE_DIR) -> str:
    """The `#cloud-config` document for one node."""
    return _render("cloud-config.yaml", FILES, _values(node), template_dir)


def render_arbiter_user_data(arbiter: ArbiterUserData,
                             template_dir: Path = TEMPLATE_DIR) -> str:
    """The `#cloud-config` document of the quorum arbiter."""
    return _render("arbiter-config.yaml", ARBITER_FILES, _safe(arbiter), template_dir)


def _render(template: str, files: tuple[tuple[str, str, str], ...], values: dict[str, str],
            template_dir: Path) -> str:
    doc = yaml.safe_load(fill((template_dir / template).read_text(), values))
    doc["write_files"] = [
        {
            "path": path,
            "permissions": mode,
            "owner": "root:root",
            "content": fill((template_dir / "files" / source).read_text(), values),
        }
        for source, path, mode in files
    ]
    text = "#cloud-config\n" + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000)
    size = len(compress(text))
    if size > MAX_USER_DATA_BYTES:
        raise ValueError(f"user-data is {size} bytes compressed, above EC2's limit of "
                         f"{MAX_USER_DATA_BYTES}")
    return text


def compress(text: str) -> bytes:
    # mtime=0: the same document always gives the same bytes, so Pulumi sees no change.
    return gzip.compress(text.encode(), mtime=0)


def encode_user_data(text: str) -> str:
    """The instance's userDataBase64: the gzip-compressed document, base64-encoded."""
    return base64.b64encode(compress(text)).decode()


def decode_user_data(encoded: str) -> str:
    return gzip.decompress(base64.b64decode(encoded)).decode()
