"""EC2's instance metadata service (IMDSv2) over moto's in-process state.

The cloud host runs moto's server in its own process, so this IMDS reads moto's backends
directly: what an instance sees is always EC2's current view of it (after awsvip moves a VIP,
the new owner's `local-ipv4s` lists it). The caller of a request is identified, as on EC2, by
its source address: any private IP of any ENI of a running instance.

What it serves is what its clients crawl: cloud-init 22.4.2's Ec2 datasource (version probe
of /2021-03-23/meta-data/instance-id, then user-data, the whole meta-data/ tree and
dynamic/instance-identity), botocore's instance-role and region fetchers (note the trailing
slash on `placement/availability-zone/`), awsvip and fence_aws (instance-id, mac,
interface-id) and the product's scripts in cloud-init/files (macs/, device-number,
local-ipv4s with the primary address first). Every dated version gets the same, current tree.

    imds = Imds(region="eu-central-1")
    status, headers, body = imds.handle("PUT", "/latest/api/token",
                                        {"X-aws-ec2-metadata-token-ttl-seconds": "60"}, ip)
    server = serve(imds, ("169.254.169.254", 80))   # then server.serve_forever()
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

ACCOUNT = "123456789012"
TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "x-aws-ec2-metadata-token"
MAX_TTL = 21600
# The versions EC2 lists at `/`; cloud-init asks for 2021-03-23, 2018-09-24, 2016-09-02 and
# falls back to 2009-04-04.
VERSIONS = ("1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15",
            "2008-02-01", "2008-09-01", "2009-04-04", "2011-01-01", "2011-05-01", "2012-01-12",
            "2014-02-25", "2014-11-05", "2015-10-20", "2016-04-19", "2016-06-30", "2016-09-02",
            "2018-03-28", "2018-08-17", "2018-09-24", "2019-10-01", "2020-10-27", "2021-01-03",
            "2021-03-23", "2021-07-15", "2022-09-24", "latest")
# Instance-role credentials last 6 hours and are replaced well before they expire.
CREDENTIAL_SECONDS = 6 * 3600
CREDENTIAL_RENEW_SECONDS = 3600
DEFAULT_TTL = 64

Response = tuple[int, dict[str, str], bytes]
Tree = dict[str, Any]  # a directory: values are Trees or leaf strings
# A directory whose listing EC2 writes specially (public-keys/ lists "0=key-name").
LISTING = "__listing__"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _aware(moment: Any) -> datetime:
    # moto keeps naive UTC datetimes.
    if not isinstance(moment, datetime):
        return datetime.now(UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _ec2_json(doc: Mapping[str, Any]) -> str:
    # EC2's own layout: two-space indent and " : " between key and value.
    return json.dumps(doc, indent=2, separators=(",", " : "))


def _text(status: int, body: str | bytes = b"", **headers: str) -> Response:
    data = body.encode() if isinstance(body, str) else body
    return status, {"Content-Type": "text/plain", **headers}, data


class Imds:
    """The metadata service of every instance moto holds in `region` (one account)."""

    def __init__(self, *, region: str, account: str = ACCOUNT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.region = region
        self.account = account
        self._clock = clock
        self._tokens: dict[str, tuple[float, str]] = {}  # token -> (expiry, instance id)
        self._credentials: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.Lock()

    # -- moto state -----------------------------------------------------------------------
    def _ec2(self) -> Any:
        from moto.backends import get_backend

        return get_backend("ec2")[self.account][self.region]

    def instance_for(self, client_ip: str) -> Any | None:
        """The running instance one of whose ENIs holds `client_ip` now, if any."""
        for instance in self._ec2().all_instances():
            if instance.state in ("terminated", "shutting-down"):
                continue
            for eni in instance.nics.values():
                if any(a.get("PrivateIpAddress") == client_ip
                       for a in eni.private_ip_addresses):
                    return instance
        return None

    def hop_limit(self, client_ip: str) -> int | None:
        """The instance's http_put_response_hop_limit: the IP TTL of IMDS's PUT responses."""
        instance = self.instance_for(client_ip)
        options = getattr(instance, "metadata_options", None)
        return int(options.http_put_response_hop_limit) if options is not None else None

    # -- HTTP semantics -------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: Mapping[str, str],
               client_ip: str) -> Response:
        """One request, as EC2 answers it: (status, headers, body)."""
        headers = {k.lower(): v for k, v in headers.items()}
        path = urlsplit(path).path
        if "x-forwarded-for" in headers:
            # EC2 refuses proxied requests (a container or proxy relaying for someone else).
            return _text(403)
        instance = self.instance_for(client_ip)
        if instance is None or instance.metadata_options.http_endpoint == "disabled":
            return _text(403)
        if method == "PUT":
            if path != TOKEN_PATH:
                return _text(404)
            return self._new_token(headers.get(TTL_HEADER), instance.id)
        if method not in ("GET", "HEAD"):
            return _text(405, Allow="GET, HEAD, PUT")
        remaining = self._token_ttl(headers.get(TOKEN_HEADER), instance.id)
        if remaining is None:
            return _text(401)
        status, out, body = self._get(instance, path)
        out["X-Aws-Ec2-Metadata-Token-Ttl-Seconds"] = str(remaining)
        return status, out, b"" if method == "HEAD" else body

    def _new_token(self, ttl_text: str | None, instance_id: str) -> Response:
        try:
            ttl = int(ttl_text or "")
        except ValueError:
            return _text(400)
        if not 1 <= ttl <= MAX_TTL:
            return _text(400)
        token = secrets.token_urlsafe(42)
        with self._lock:
            now = self._clock()
            self._tokens = {t: v for t, v in self._tokens.items() if v[0] > now}
            self._tokens[token] = (now + ttl, instance_id)
        return _text(200, token, **{"X-Aws-Ec2-Metadata-Token-Ttl-Seconds": str(ttl)})

    def _token_ttl(self, token: str | None, instance_id: str) -> int | None:
        """Seconds left on `token` if it is valid for this instance, else None."""
        with self._lock:
            entry = self._tokens.get(token or "")
        if entry is None or entry[1] != instance_id:
            return None
        left = entry[0] - self._clock()
        return int(left) if left > 0 else None

    def _get(self, instance: Any, path: str) -> Response:
        parts = [p for p in path.split("/") if p]
        if not parts:
            return _text(200, "\n".join(VERSIONS))
        if parts[0] not in VERSIONS:
            return _text(404)
        user_data = self._user_data(instance)
        if len(parts) == 1:
            return _text(200, "dynamic\nmeta-data" + ("\nuser-data" if user_data else ""))
        if parts[1] == "user-data" and len(parts) == 2:
            if user_data is None:
                return _text(404)
            return 200, {"Content-Type": "application/octet-stream"}, user_data
        if parts[1] == "meta-data":
            return _walk(self.meta_data(instance), parts[2:])
        if parts[1] == "dynamic":
            return _walk({"instance-identity": {
                "document": _ec2_json(self.identity_document(instance))}}, parts[2:])
        return _text(404)

    # -- the data -------------------------------------------------------------------------
    @staticmethod
    def _user_data(instance: Any) -> bytes | None:
        raw = instance.user_data
        if isinstance(raw, list):  # older moto: [base64 text]
            raw = raw[0] if raw else None
        if raw is None:
            return None
        if hasattr(raw, "as_bytes"):
            raw = raw.as_bytes()
        data = base64.b64decode(raw)
        return data or None

    def _hostname(self, ip: str) -> str:
        suffix = "ec2.internal" if self.region == "us-east-1" else \
            f"{self.region}.compute.internal"
        return f"ip-{ip.replace('.', '-')}.{suffix}"

    def _public_hostname(self, ip: str) -> str:
        suffix = "compute-1.amazonaws.com" if self.region == "us-east-1" else \
            f"{self.region}.compute.amazonaws.com"
        return f"ec2-{ip.replace('.', '-')}.{suffix}"

    @staticmethod
    def _ips(eni: Any) -> list[str]:
        addresses = sorted(eni.private_ip_addresses, key=lambda a: not a.get("Primary"))
        return [a["PrivateIpAddress"] for a in addresses]

    @staticmethod
    def _groups(eni: Any) -> list[Any]:
        # The ENI's own groups: moto also mixes in the instance's launch groups.
        return list(getattr(eni, "_group_set", None) or eni.group_set)

    def _public_ip(self, eni: Any) -> str | None:
        for address in self._ec2().addresses:
            if address.eni is eni:
                return address.public_ip
        return eni.public_ip or None

    def _interface(self, eni: Any) -> Tree:
        ec2 = self._ec2()
        subnet = eni.subnet
        vpc = ec2.get_vpc(subnet.vpc_id)
        ips = self._ips(eni)
        groups = self._groups(eni)
        vpc_cidrs = [c["cidr_block"] for c in vpc.cidr_block_association_set] or \
            [vpc.cidr_block]
        tree: Tree = {
            "device-number": str(eni.device_index),
            "interface-id": eni.id,
            "local-hostname": self._hostname(ips[0]),
            "local-ipv4s": "\n".join(ips),
            "mac": eni.mac_address,
            "owner-id": self.account,
            "security-group-ids": "\n".join(g.id for g in groups),
            "security-groups": "\n".join(g.name for g in groups),
            "subnet-id": subnet.id,
            "subnet-ipv4-cidr-block": subnet.cidr_block,
            "vpc-id": subnet.vpc_id,
            "vpc-ipv4-cidr-block": vpc.cidr_block,
            "vpc-ipv4-cidr-blocks": "\n".join(vpc_cidrs),
        }
        public = self._public_ip(eni)
        if public:
            tree["ipv4-associations"] = {public: ips[0]}
            tree["public-hostname"] = self._public_hostname(public)
            tree["public-ipv4s"] = public
        return tree

    def _profile(self, instance: Any) -> Any | None:
        association = self._ec2().iam_instance_profile_associations.get(instance.id)
        return association.iam_instance_profile if association is not None else None

    def credentials(self, instance: Any, role: Any) -> dict[str, str]:
        """The role's temporary credentials as IMDS hands them out, minted by moto's STS."""
        key = (instance.id, role.name)
        now = datetime.now(UTC)
        with self._lock:
            cached = self._credentials.get(key)
            if cached is not None and datetime.strptime(
                    cached["Expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) \
                    - now > timedelta(seconds=CREDENTIAL_RENEW_SECONDS):
                return cached
            creds = self._mint(instance.id, role.arn)
            creds = {"Code": "Success", "LastUpdated": _iso(now), "Type": "AWS-HMAC",
                     **creds}
            self._credentials[key] = creds
            return creds

    def _mint(self, instance_id: str, role_arn: str) -> dict[str, str]:
        # Assumed through moto's STS, so moto knows these keys belong to the role (and its
        # IAM policies apply if moto's authorization is switched on).
        from moto.backends import get_backend

        sts = get_backend("sts")[self.account]["aws"]
        assumed = sts.assume_role(region_name=self.region, role_session_name=instance_id,
                                  role_arn=role_arn, policy=None,
                                  duration=CREDENTIAL_SECONDS, external_id=None)
        return {"AccessKeyId": assumed.access_key_id,
                "SecretAccessKey": assumed.secret_access_key,
                "Token": assumed.session_token, "Expiration": _iso(assumed.expiration)}

    def _iam(self, instance: Any) -> Tree | None:
        profile = self._profile(instance)
        if profile is None:
            return None
        info = {"Code": "Success", "LastUpdated": _iso(datetime.now(UTC)),
                "InstanceProfileArn": profile.arn, "InstanceProfileId": profile.id}
        roles = {role.name: _ec2_json(self.credentials(instance, role))
                 for role in profile.roles}
        return {"info": _ec2_json(info), "security-credentials": roles}

    def meta_data(self, instance: Any) -> Tree:
        """The meta-data/ tree of `instance`, from moto's current state."""
        ec2 = self._ec2()
        primary = instance.nics[0]
        ips = self._ips(primary)
        reservation = next((r.id for r in ec2.reservations.values()
                            if instance in r.instances), "")
        root = instance.root_device_name or "/dev/xvda"
        tree: Tree = {
            "ami-id": instance.image_id,
            "ami-launch-index": str(instance.ami_launch_index),
            "ami-manifest-path": "(unknown)",
            "block-device-mapping": {"ami": root, "root": root},
            "hostname": self._hostname(ips[0]),
            "instance-action": "none",
            "instance-id": instance.id,
            "instance-life-cycle": "on-demand",
            "instance-type": instance.instance_type,
            "local-hostname": self._hostname(ips[0]),
            "local-ipv4": ips[0],
            "mac": primary.mac_address,
            "network": {"interfaces": {"macs": {
                eni.mac_address: self._interface(eni)
                for _, eni in sorted(instance.nics.items())}}},
            "placement": {
                "availability-zone": instance.availability_zone,
                "availability-zone-id": getattr(primary.subnet, "availability_zone_id", "")
                or "",
                "region": self.region,
            },
            "profile": "default-hvm",
            "reservation-id": reservation,
            "security-groups": "\n".join(g.name for g in self._groups(primary)),
            "services": {"domain": "amazonaws.com", "partition": "aws"},
        }
        public = self._public_ip(primary)
        if public:
            tree["public-hostname"] = self._public_hostname(public)
            tree["public-ipv4"] = public
        iam = self._iam(instance)
        if iam is not None:
            tree["iam"] = iam
        if instance.key_name:
            pair = ec2.key_pairs.get(instance.key_name)
            if pair is not None:
                key = " ".join(pair.public_key.split()[:2]) + f" {instance.key_name}"
                tree["public-keys"] = {"0": {"openssh-key": key},
                                       LISTING: f"0={instance.key_name}"}
        if instance.metadata_options.instance_metadata_tags == "enabled":
            tree["tags"] = {"instance": {t["key"]: t["value"] for t in instance.get_tags()}}
        return tree

    def identity_document(self, instance: Any) -> dict[str, Any]:
        """dynamic/instance-identity/document; cloud-init reads instanceId, availabilityZone
        and region from it (they win over meta-data)."""
        return {
            "accountId": self.account,
            "architecture": instance.architecture or "x86_64",
            "availabilityZone": instance.availability_zone,
            "billingProducts": None,
            "devpayProductCodes": None,
            "marketplaceProductCodes": None,
            "imageId": instance.image_id,
            "instanceId": instance.id,
            "instanceType": instance.instance_type,
            "kernelId": None,
            "pendingTime": _iso(_aware(instance.launch_time)),
            "privateIp": self._ips(instance.nics[0])[0],
            "ramdiskId": None,
            "region": self.region,
            "version": "2017-09-30",
        }


def _walk(tree: Tree, parts: list[str]) -> Response:
    node: Any = tree
    for part in parts:
        if not isinstance(node, dict) or part == LISTING or part not in node:
            return _text(404)
        node = node[part]
    if isinstance(node, dict):
        if LISTING in node:
            return _text(200, node[LISTING])
        return _text(200, "\n".join(k + ("/" if isinstance(v, dict) else "")
                                    for k, v in sorted(node.items())))
    # A leaf asked for with a trailing slash is still the leaf, as on EC2.
    return _text(200, node)


def make_handler(imds: Imds, peer_ip: Callable[[str], str] = lambda ip: ip
                 ) -> type[BaseHTTPRequestHandler]:
    """An http.server handler for `imds`; `peer_ip` maps the socket's peer address to the
    instance address to look up (identity on the lab's link; tests map loopback)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "EC2ws"
        sys_version = ""

        def log_message(self, *args: object) -> None:
            pass

        def _serve(self) -> None:
            client = peer_ip(self.client_address[0])
            # The request body (if any) is ignored, as by EC2; read it to keep the stream sane.
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            status, headers, body = imds.handle(self.command, self.path, dict(self.headers),
                                                client)
            ttl = imds.hop_limit(client) if self.command == "PUT" else None
            self._set_ttl(ttl or DEFAULT_TTL)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _set_ttl(self, ttl: int) -> None:
            # On EC2 the hop limit is exactly this: the IP TTL of the PUT response, so a
            # token cannot reach a container behind one more routing hop.
            try:
                self.connection.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            except OSError:
                pass

        do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _serve  # noqa: N815

    return Handler


def serve(imds: Imds, address: tuple[str, int],
          peer_ip: Callable[[str], str] = lambda ip: ip) -> ThreadingHTTPServer:
    """A bound (not yet serving) threaded HTTP server for `imds`; run serve_forever()."""
    server = ThreadingHTTPServer(address, make_handler(imds, peer_ip))
    server.daemon_threads = True
    return server


def install_ec2_semantics() -> None:
    """Make moto's AssignPrivateIpAddresses behave as EC2's; idempotent, in moto's process.

    EC2 moves an address another ENI holds only with AllowReassignment (awsvip always asks
    for it), taking it off the old ENI; without it, or for a primary address, it refuses
    (InvalidIPAddress.InUse). moto would leave the address on both ENIs, and the old node's
    awsvip monitor (and its IMDS local-ipv4s) would keep reporting a VIP it lost.
    """
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses.elastic_network_interfaces import ElasticNetworkInterfaces

    original = ElasticNetworkInterfaces.assign_private_ip_addresses
    if getattr(original, "_prep_ha_lab", False):
        return

    def assign(self: Any) -> Any:
        eni_id = self._get_param("NetworkInterfaceId")
        wanted = set(self._get_param("PrivateIpAddresses", []) or [])
        allow = str(self._get_param("AllowReassignment", False)).lower() == "true"
        for other in list(self.ec2_backend.enis.values()):
            if other.id == eni_id:
                continue
            for address in list(other.private_ip_addresses):
                if address.get("PrivateIpAddress") not in wanted:
                    continue
                if address.get("Primary") or not allow:
                    raise EC2ClientError(
                        "InvalidIPAddress.InUse",
                        f"Address {address['PrivateIpAddress']} is in use by {other.id}.")
                other.private_ip_addresses.remove(address)
        return original(self)

    assign._prep_ha_lab = True  # type: ignore[attr-defined]
    ElasticNetworkInterfaces.assign_private_ip_addresses = assign  # type: ignore[method-assign]
