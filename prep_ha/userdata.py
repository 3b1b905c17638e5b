"""What each instance runs: its payload (every file, the packages, the first-boot steps) and
the few lines of user-data that fetch it, rendered from the templates in cloud-init/.

Plain functions over plain values (no Pulumi types) so tests render and check exactly what a
node installs. Neither carries a secret: the nodes fetch secret values from Secrets Manager
with their instance role (see cloud-init/files/prep-ha-secret), by the ids given here.
"""

from __future__ import annotations

import base64
import gzip
import ipaddress
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from prep_ha.config import ICON_IMAGE_REPO, ICON_IMAGE_TAG
from prep_ha.payload import APT_GET, Payload, PayloadFile

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "cloud-init"
# EC2 rejects user-data above 16 KiB. It holds only the payload's fetcher now, and stays far
# below that (the payload has no such limit): a document past this budget is a mistake.
MAX_USER_DATA_BYTES = 8 * 1024
BOOT = "/usr/local/sbin/prep-ha-boot"
HOST_KEY = "/usr/local/sbin/prep-ha-ssh-host-key"

# (template in cloud-init/files/, path on the node, mode, effect, units): what a changed file
# takes on a running node (prep_ha/payload.py EFFECTS; the roll acts on it).
FILES: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ("prep-ha-payload", "/usr/local/sbin/prep-ha-payload", "0755", "use", ()),
    ("apt-no-recommends.conf", "/etc/apt/apt.conf.d/90prep-ha-no-recommends", "0644", "use", ()),
    ("docker-daemon.json", "/etc/docker/daemon.json", "0644", "node", ("docker.service",)),
    ("aws-config", "/root/.aws/config", "0600", "use", ()),
    ("prep-ha-secret", "/usr/local/sbin/prep-ha-secret", "0755", "use", ()),
    ("prep-ha-data-volume", "/usr/local/sbin/prep-ha-data-volume", "0755", "use", ()),
    ("prep-ha-chain-sync", "/usr/local/sbin/prep-ha-chain-sync", "0755", "use", ()),
    ("prep-ha-citizen-key", "/usr/local/sbin/prep-ha-citizen-key", "0755", "use", ()),
    ("prep-ha-network", "/usr/local/sbin/prep-ha-network", "0755", "node",
     ("prep-ha-network.service",)),
    ("prep-ha-holds-peer", "/usr/local/sbin/prep-ha-holds-peer", "0755", "use", ()),
    ("prep-ha-fence-restart", "/usr/local/sbin/prep-ha-fence-restart", "0755", "use", ()),
    ("prep-ha-alert", "/usr/local/sbin/prep-ha-alert", "0755", "use", ()),
    # The cluster's own agents (prep_ha/cluster/model.py): Pacemaker runs them per operation.
    ("prep-ha-awsvip", "/usr/lib/ocf/resource.d/prep-ha/awsvip", "0755", "use", ()),
    ("prep-ha-aws", "/usr/local/sbin/prep-ha-aws", "0755", "use", ()),
    ("fence_aws_skip_os_shutdown", "/usr/sbin/fence_aws_skip_os_shutdown", "0755", "use", ()),
    ("prep-ha-alert.sudoers", "/etc/sudoers.d/prep-ha-alert", "0440", "use", ()),
    ("ha-cluster-exporter.conf",
     "/etc/systemd/system/ha_cluster_exporter.service.d/prep-ha.conf", "0644", "restart",
     ("ha_cluster_exporter.service",)),
    ("prep-ha-hacluster", "/usr/local/sbin/prep-ha-hacluster", "0755", "use", ()),
    ("prep-ha-firewall", "/usr/local/sbin/prep-ha-firewall", "0755", "restart",
     ("prep-ha-firewall.service",)),
    ("prep-ha-firewall.service", "/etc/systemd/system/prep-ha-firewall.service", "0644",
     "restart", ("prep-ha-firewall.service",)),
    ("pcsd-bind.conf", "/etc/systemd/system/pcsd.service.d/prep-ha-bind.conf", "0644",
     "restart", ("pcsd.service",)),
    ("prep-ha-network.service", "/etc/systemd/system/prep-ha-network.service", "0644", "node",
     ("prep-ha-network.service",)),
    ("cloud-init-network.cfg", "/etc/cloud/cloud.cfg.d/99-prep-ha-network.cfg", "0644", "use",
     ()),
    ("unattended-upgrades.conf", "/etc/apt/apt.conf.d/51prep-ha-unattended-upgrades", "0644",
     "use", ()),
    ("prep-ha-hacluster-password.service",
     "/etc/systemd/system/prep-ha-hacluster-password.service", "0644", "reload", ()),
    ("prep-ha-pull-image.service", "/etc/systemd/system/prep-ha-pull-image.service", "0644",
     "reload", ()),
    # The image is the roll's to change (prep-ha-image set), after a pull.
    ("icon-image.env", "/etc/prep-ha/icon-image.env", "0644", "first-boot", ()),
    ("prep-ha-image", "/usr/local/sbin/prep-ha-image", "0755", "use", ()),
    ("peer.yml", "/etc/prep-ha/peer.yml", "0644", "peer", ()),
    ("ctz.yml", "/etc/prep-ha/ctz.yml", "0644", "ctz", ()),
    ("peer.service", "/etc/systemd/system/peer.service", "0644", "peer", ()),
    ("ctz.service", "/etc/systemd/system/ctz.service", "0644", "ctz", ()),
)

# The arbiter needs only the hacluster password (its pcsd authenticates the nodes' pcs), and
# follows its payload tag by itself.
ARBITER_FILES = tuple(
    f for f in FILES if f[0] in ("prep-ha-payload", "apt-no-recommends.conf", "prep-ha-secret",
                                 "prep-ha-hacluster", "prep-ha-hacluster-password.service")) + (
    ("prep-ha-payload-follow.service", "/etc/systemd/system/prep-ha-payload-follow.service",
     "0644", "reload", ()),
    ("prep-ha-payload-follow.timer", "/etc/systemd/system/prep-ha-payload-follow.timer",
     "0644", "restart", ("prep-ha-payload-follow.timer",)),
)

_PLACEHOLDER = re.compile(r"\{\{\s*([a-z0-9_]+)\s*\}\}")
# Values end up inside shell scripts, unit files and YAML; none needs more than this.
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:/@+=,-]*")


@dataclass(frozen=True)
class NodeSettings:
    """Everything one node's files need, all non-secret."""

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
    # Multi-AZ: None; the citizen advertises its node's service address instead.
    citizen_vip: str | None
    p2p_advertise: str
    keystore_secret_id: str
    keystore_password_secret_id: str
    hacluster_secret_id: str
    # How prep-ha-data-volume marks a volume it formats (prep_ha.config.CHAIN_SYNC).
    chain_sync: str = "snapshot"
    # Where prep-ha-alert publishes; empty (lab/image.py, which only reads the packages):
    # the agent still counts events as metrics.
    alert_topic_arn: str = ""
    # The node's own address on the service subnet (multi-AZ: the citizen's P2P address).
    service_ip: str = ""


@dataclass(frozen=True)
class ArbiterSettings:
    """The quorum arbiter's files, all non-secret."""

    arbiter_name: str
    region: str
    hacluster_secret_id: str


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


def _safe(values: dict[str, str]) -> dict[str, str]:
    for key, value in values.items():
        if not _SAFE_VALUE.fullmatch(value):
            raise ValueError(f"value {key}={value!r} has characters unsafe in a script")
    return {**values, "apt_get": json.dumps(list(APT_GET))}


def _node_values(node: NodeSettings) -> dict[str, str]:
    values = _safe({k: v for k, v in asdict(node).items() if v is not None})
    if not (node.citizen_vip or node.service_ip):
        raise ValueError(f"{node.node_name}: a citizen without a VIP needs the node's service_ip")
    values["citizen_p2p"] = f"{node.citizen_vip or node.service_ip}:7100"
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


def node_payload(node: NodeSettings, template_dir: Path | None = None) -> Payload:
    """Everything one node runs besides Debian."""
    return _payload("node.yaml", FILES, _node_values(node), template_dir)


def arbiter_payload(arbiter: ArbiterSettings, template_dir: Path | None = None) -> Payload:
    """Everything the quorum arbiter runs besides Debian."""
    return _payload("arbiter.yaml", ARBITER_FILES, _safe(asdict(arbiter)), template_dir)


def _payload(template: str, files: tuple[tuple[str, str, str, str, tuple[str, ...]], ...],
             values: dict[str, str], template_dir: Path | None) -> Payload:
    template_dir = template_dir or TEMPLATE_DIR
    doc = yaml.safe_load(fill((template_dir / template).read_text(), values))
    return Payload(
        files=tuple(PayloadFile(path, mode, fill((template_dir / "files" / src).read_text(),
                                                 values), effect, units)
                    for src, path, mode, effect, units in files),
        packages=tuple(doc["packages"]),
        first_boot=tuple(tuple(str(w) for w in argv) for argv in doc["first_boot"]))


def render_user_data(hostname: str, region: str, bucket: str, *, ssh_host_key: bool,
                     template_dir: Path | None = None) -> str:
    """The `#cloud-config` document of every instance: fetch and install its payload; with
    `ssh_host_key` (the nodes), install the SSH host key the stack pinned for it first."""
    template_dir = template_dir or TEMPLATE_DIR
    values = _safe({"hostname": hostname, "region": region, "payload_bucket": bucket})
    doc = yaml.safe_load(fill((template_dir / "user-data.yaml").read_text(), values))
    files = [BOOT, *([HOST_KEY] if ssh_host_key else [])]
    doc["write_files"] = [{"path": path, "permissions": "0755", "owner": "root:root",
                           "content": fill((template_dir / "files" / Path(path).name)
                                           .read_text(), values)} for path in files]
    if ssh_host_key:
        doc["runcmd"].insert(0, [HOST_KEY])
    text = "#cloud-config\n" + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000)
    size = len(compress(text))
    if size > MAX_USER_DATA_BYTES:
        raise ValueError(f"user-data is {size} bytes compressed, above its budget of "
                         f"{MAX_USER_DATA_BYTES}: move what grew into the payload")
    return text


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings as literal blocks so the node's files stay readable."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def compress(text: str) -> bytes:
    # mtime=0: the same document always gives the same bytes, so Pulumi sees no change.
    return gzip.compress(text.encode(), mtime=0)


def encode_user_data(text: str) -> str:
    """The instance's userDataBase64: the gzip-compressed document, base64-encoded."""
    return base64.b64encode(compress(text)).decode()


def decode_user_data(encoded: str) -> str:
    return gzip.decompress(base64.b64decode(encoded)).decode()
