"""The partial Debian mirror a lab node installs its user-data packages from, and its server.

Debian's signed indexes are kept byte for byte, so the node's apt verifies them with its own
keyring as on EC2. The pool holds only the .debs `apt-get install <user-data packages>` needs
on top of the image's rootfs, as apt itself decides in an overlay of that rootfs against the
very indexes being mirrored. The docker.io / docker-compose stand-ins come from a trusted flat
repo (`prep-ha-lab`) whose versions carry an epoch, so they win over Debian's. Indexes and
pool are built together into a new directory, so a new index never meets an old pool.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import http.client
import io
import itertools
import json
import lzma
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from lab.image import (
    CHROOT_ENV,
    ETC_HOSTS,
    LAB_REPO,
    MIRROR_HOST,
    POLICY_RC_D,
    SUITES,
    Echo,
    Image,
    ImageError,
    Overlay,
    chroot_command,
    in_root,
    run,
    timed,
)
from prep_ha.payload import APT_GET

# Bump when the recipe changes in a way the cache key cannot see (code, not data).
MIRROR_VERSION = 2
MIRROR_MAX_AGE = dt.timedelta(days=5)
# A lab run lasts hours; apt on the node must not find the security index expired mid-run.
VALID_UNTIL_MARGIN = dt.timedelta(days=1)
# Index files per suite. Translation-en too: were Release to list one the mirror lacks,
# apt-get update would fail, and with it cloud-init's package_update.
INDEX_FILES = ("main/binary-amd64/Packages.xz", "main/i18n/Translation-en.xz")



def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class _Files:
    """Files of a new mirror, each hard-linked from an earlier build when identical, else
    downloaded from deb.debian.org (one keep-alive connection per thread, 4 tries)."""

    def __init__(self, mirror: Path, old_mirrors: Iterable[Path]) -> None:
        self.mirror, self.old = mirror, list(old_mirrors)
        self.local, self.lock = threading.local(), threading.Lock()
        self.downloaded_bytes = self.reused = 0

    def get(self, path: str) -> bytes:
        """The body of http://deb.debian.org<path>."""
        attempt = 0
        while True:
            if getattr(self.local, "conn", None) is None:
                self.local.conn = http.client.HTTPConnection(MIRROR_HOST, timeout=60)
            try:
                self.local.conn.request("GET", path, headers={"User-Agent": "prep-ha-lab-image"})
                resp = self.local.conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as err:
                self.local.conn.close()
                self.local.conn = None
                attempt += 1
                if attempt == 4:
                    raise ImageError(f"GET http://{MIRROR_HOST}{path}: {err}") from err
                time.sleep(2 * attempt - 1)
                continue
            if resp.status != 200:
                raise ImageError(f"GET http://{MIRROR_HOST}{path}: HTTP {resp.status}")
            with self.lock:
                self.downloaded_bytes += len(data)
            return data

    def add(self, path: str, size: int, sha256: str, source: str) -> Path:
        """mirror/<path>, which `source` says has this size and SHA256."""
        dest = self.mirror / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        for old in self.old:
            src = old / path.lstrip("/")
            if src.is_file() and src.stat().st_size == size and _sha256(src) == sha256:
                os.link(src, dest)
                with self.lock:
                    self.reused += 1
                return dest
        data = self.get(path)
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
            raise ImageError(f"{path}: size or SHA256 differs from {source}")
        dest.write_bytes(data)
        return dest


def _clearsigned_body(text: str) -> str:
    """The signed text of an OpenPGP cleartext-signed message (RFC 4880 7.1)."""
    lines = text.split("\n")
    start = lines.index("") + 1  # after the armor headers ("Hash: ...")
    end = lines.index("-----BEGIN PGP SIGNATURE-----")
    return "\n".join(ln[2:] if ln.startswith("- ") else ln for ln in lines[start:end])


def _parse_release(text: str) -> tuple[dict[str, str], dict[str, tuple[str, int]]]:
    """(fields, {path: (SHA256, size)}) of a Release file."""
    fields, sha256, current = {}, {}, None
    for line in text.splitlines():
        if line.startswith(" ") and current == "SHA256":
            digest, size, name = line.split()
            sha256[name] = (digest, int(size))
        elif ":" in line and not line.startswith(" "):
            current, _, value = line.partition(":")
            fields[current] = value.strip()
    return fields, sha256


def _gpgv(keyring: Path, *files: Path) -> bool:
    return subprocess.run(["gpgv", "--keyring", str(keyring), *map(str, files)],
                          capture_output=True).returncode == 0


def _fetch_indexes(files: _Files, keyring: Path, echo: Echo) -> dict:
    """Debian's signed indexes of the three suites into mirror/, exactly as served."""
    info = {}
    for archive, suite in SUITES:
        base = f"/{archive}/dists/{suite}"
        dists = files.mirror / archive / "dists" / suite
        dists.mkdir(parents=True)
        for attempt in range(3):
            inrelease = files.get(f"{base}/InRelease")
            release = files.get(f"{base}/Release")
            (dists / "InRelease").write_bytes(inrelease)
            (dists / "Release").write_bytes(release)
            # Fetched seconds apart: a mirror push in between would pair a Release with
            # another InRelease.
            if _gpgv(keyring, dists / "InRelease") and _clearsigned_body(
                    inrelease.decode()).rstrip("\n") == release.decode().rstrip("\n"):
                break
            echo(f"image: {suite}: InRelease does not verify or differs from Release, retrying")
            time.sleep(10 * (attempt + 1))
        else:
            raise ImageError(f"{suite}: no verified InRelease matching Release")
        # apt never reads Release.gpg while InRelease verifies, but deb.debian.org has served
        # stale ones (signing an older Release), and a mirror must not offer a bad one.
        (dists / "Release.gpg").write_bytes(files.get(f"{base}/Release.gpg"))
        release_gpg = "verified"
        if not _gpgv(keyring, dists / "Release.gpg", dists / "Release"):
            (dists / "Release.gpg").unlink()
            release_gpg = "omitted: upstream's does not verify against Release"
            echo(f"image: {suite}: Release.gpg from {MIRROR_HOST} does not verify; left out")
        fields, sha256 = _parse_release(release.decode())
        for index in INDEX_FILES:
            if index not in sha256:
                raise ImageError(f"{suite}: Release lists no {index}")
            digest, size = sha256[index]
            # by-hash URLs never change content, so a mirror push cannot race this download.
            by_hash = f"{base}/{posixpath.dirname(index)}/by-hash/SHA256/{digest}"
            os.link(files.add(by_hash, size, digest, "Release"), dists / index)
        info[suite] = {"date": fields.get("Date"), "release_gpg": release_gpg,
                       "valid_until": fields.get("Valid-Until"), "indexes": list(INDEX_FILES)}
    return info


def mirror_expiry(built: dt.datetime, indexes: dict) -> dt.datetime:
    """MIRROR_MAX_AGE after it was built or VALID_UNTIL_MARGIN before the earliest
    Valid-Until of its indexes (the security suite has one), whichever comes first."""
    expiry = built + MIRROR_MAX_AGE
    for info in indexes.values():
        if info.get("valid_until"):
            valid = email.utils.parsedate_to_datetime(info["valid_until"])
            expiry = min(expiry, valid - VALID_UNTIL_MARGIN)
    return expiry


def deb_digest(deb: Path) -> str:
    """Content of a .deb (control fields, file names, modes and contents) without its
    timestamps, so rebuilding identical stand-ins does not invalidate the mirror."""
    digest = hashlib.sha256()
    for part in ("--ctrl-tarfile", "--fsys-tarfile"):
        with tarfile.open(fileobj=io.BytesIO(run(["dpkg-deb", part, deb]).stdout)) as tar:
            for m in sorted(tar.getmembers(), key=lambda m: m.name):
                digest.update(f"{m.name}\0{m.mode}\0{m.type!r}\0{m.linkname}\0{m.size}\0"
                              f"{m.uid}\0{m.gid}\n".encode())
                if m.isfile():
                    digest.update(tar.extractfile(m).read())
    return digest.hexdigest()


def _build_lab_repo(repo: Path, debs: Sequence[Path], rootfs: Path, work: Path) -> None:
    """A flat repository (`deb [trusted=yes] .../prep-ha-lab ./`) built by the image's own
    apt-ftparchive, so the host needs no dpkg-dev."""
    repo.mkdir(parents=True)
    for deb in debs:
        fields = run(["dpkg-deb", "-f", deb, "Package", "Version", "Architecture"]).stdout
        info = dict(line.split(": ", 1) for line in fields.decode().splitlines())
        # Debian's pool naming: no epoch in the file name.
        version = info["Version"].split(":", 1)[-1]
        shutil.copy2(deb, repo / f"{info['Package']}_{version}_{info['Architecture']}.deb")
    script = ("cd /srv/repo && apt-ftparchive packages . > Packages && gzip -9nk Packages "
              "&& apt-ftparchive -o APT::FTPArchive::Release::Origin=prep-ha-lab "
              "-o APT::FTPArchive::Release::Label=prep-ha-lab release . > Release.new "
              "&& mv Release.new Release")
    in_root(Overlay(rootfs, work), ["/bin/sh", "-ec", script], binds=[(repo, "/srv/repo")])


def _pool_index(mirror: Path) -> dict[str, tuple[int, str]]:
    """URL path -> (Size, SHA256) of every .deb in the mirrored Debian Packages indexes."""
    files: dict[str, tuple[int, str]] = {}
    for archive, suite in SUITES:
        index = mirror / archive / "dists" / suite / "main/binary-amd64/Packages.xz"
        stanza: dict[str, str] = {}
        with lzma.open(index, "rt", encoding="utf-8") as f:
            for line in itertools.chain(f, ["\n"]):
                if line == "\n" and "Filename" in stanza:
                    files[f"/{archive}/{stanza['Filename']}"] = (int(stanza["Size"]),
                                                                 stanza["SHA256"])
                    stanza = {}
                elif line.startswith(("Filename: ", "Size: ", "SHA256: ")):
                    name, _, value = line.partition(": ")
                    stanza[name] = value.strip()
    return files


# 'URI' file size hash -- the hash is an MD5Sum, or nothing where the index has none
# (the security suite), so the SHA256 comes from the Packages index instead.
_PRINT_URI = re.compile(r"^'([^']+)' (\S+) (\d+) ?(\S*)$")


def place_apt_conf(upper: Path, apt_conf: Mapping[str, str]) -> None:
    """The user-data's apt.conf.d files into an overlay's upper layer, as write_files puts
    them on a node before its packages install."""
    conf_dir = upper / "etc/apt/apt.conf.d"
    conf_dir.mkdir(parents=True, exist_ok=True)
    for name, text in apt_conf.items():
        (conf_dir / name).write_text(text)


def _resolve(rootfs: Path, mirror: Path, work: Path, packages: Sequence[str],
             apt_conf: Mapping[str, str], echo: Echo) -> tuple[list[tuple[str, int]], str]:
    """(URL path, size) of every .deb the user-data install downloads, decided by apt in an
    overlay of the rootfs against the indexes in mirror/ (served locally through apt's proxy
    setting, so apt-get update also checks Debian's signatures on exactly these files)."""
    overlay = Overlay(rootfs, work)
    place_apt_conf(overlay.upper, apt_conf)
    with serve_mirror(mirror, "127.0.0.1", 0) as server:
        proxy = f"-oAcquire::http::Proxy=http://127.0.0.1:{server.server_address[1]}/"
        update = in_root(overlay, ["apt-get", proxy, "update"])
        out = (update.stdout + update.stderr).decode()
        if re.search(r"(?m)^(W|E):", out):
            raise ImageError(f"apt-get update against the new mirror complained:\n{out}")
        echo(f"image: apt-get update against the new mirror: OK ({server.requests} requests, "
             f"not found: {sorted(set(server.misses))})")
        plan = in_root(overlay, [*APT_GET, proxy, "--print-uris", "-qq", "install",
                                 *packages]).stdout.decode()
    uris = []
    for line in plan.splitlines():
        if not (m := _PRINT_URI.match(line)):
            raise ImageError(f"unexpected apt-get --print-uris line: {line!r}")
        uris.append((posixpath.normpath(unquote(urlsplit(m.group(1)).path)), int(m.group(3))))
    return uris, out


def build_mirror(mirror: Path, rootfs: Path, work: Path, packages: Sequence[str],
                 apt_conf: Mapping[str, str], lab_debs: Sequence[Path],
                 old_mirrors: Iterable[Path], echo: Echo = print) -> dict:
    """Debian's indexes, the lab repo and the .debs `apt-get install packages` needs on top
    of rootfs into mirror/; returns its manifest. Files identical in old_mirrors are linked."""
    timings: dict[str, float] = {}
    files = _Files(mirror, old_mirrors)
    with timed(timings, "indexes_s"):
        mirror.mkdir(parents=True)
        keyring = rootfs / "usr/share/keyrings/debian-archive-keyring.gpg"
        indexes = _fetch_indexes(files, keyring, echo)
        _build_lab_repo(mirror / LAB_REPO, lab_debs, rootfs, work / "ftparchive")
    now = dt.datetime.now(dt.UTC)
    if mirror_expiry(now, indexes) <= now:
        raise ImageError(f"{MIRROR_HOST} serves an index expiring within {VALID_UNTIL_MARGIN}: "
                         f"{ {s: i['valid_until'] for s, i in indexes.items()} }")

    with timed(timings, "resolve_s"):
        uris, update_log = _resolve(rootfs, mirror, work / "resolve", packages, apt_conf, echo)
    lab = sorted(p for p, _ in uris if p.startswith(f"/{LAB_REPO}/"))
    pool = _pool_index(mirror)
    debian = []
    for path, size in uris:
        if path in lab:
            continue
        if pool.get(path, (None,))[0] != size:
            raise ImageError(f"apt wants {path} ({size} bytes), not in the mirrored indexes")
        debian.append((path, size, pool[path][1]))
    for name in ("docker.io", "docker-compose"):
        if name in packages and any(Path(p).name.startswith(f"{name}_") for p, _, _ in debian):
            raise ImageError(f"apt resolved {name} to Debian's package, not the lab stand-in "
                             f"(are the stand-in .debs given, with an epoch?)")
    total = sum(s for _, s, _ in debian)
    echo(f"image: {len(debian)} .debs from Debian ({total / 1e6:.0f} MB), "
         f"{len(lab)} from the lab repo")

    with timed(timings, "download_s"), ThreadPoolExecutor(4) as executor:
        list(executor.map(lambda deb: files.add(*deb, "the Packages index"), debian))
    return {"indexes": indexes, "packages": list(packages),
            "debs": sorted(p for p, _, _ in debian), "lab_debs": lab, "debs_bytes": total,
            "downloaded_bytes": files.downloaded_bytes, "reused_files": files.reused,
            "apt_update": update_log.splitlines(), "timings": timings}


# --------------------------------------------------------------------------- the server


class MirrorServer(ThreadingHTTPServer):
    """Static files of a mirror directory, as deb.debian.org serves them to apt."""

    daemon_threads = True

    def __init__(self, mirror: Path, address: tuple[str, int], hosts: Iterable[str],
                 log: Echo | None) -> None:
        self.mirror = Path(mirror).resolve()
        self.hosts = frozenset(h.lower() for h in hosts)
        self.log = log
        self.requests = 0
        self.misses: list[str] = []
        super().__init__(address, MirrorHandler)
        self._thread = threading.Thread(target=self.serve_forever, name="mirror", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self._thread.join()
        self.server_close()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MirrorHandler(BaseHTTPRequestHandler):
    # Keep-alive: apt fetches hundreds of files over one connection, pipelined.
    protocol_version = "HTTP/1.1"
    server_version = "prep-ha-lab-mirror"
    timeout = 300  # seconds an idle keep-alive connection keeps its thread
    server: MirrorServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)

    def _file(self) -> Path | None:
        target = urlsplit(self.path)
        # apt sends absolute-form targets through Acquire::http::Proxy (see _resolve).
        host = (target.hostname or self.headers.get("Host", "").rsplit(":", 1)[0]).lower()
        if self.server.hosts and host and host not in self.server.hosts:
            return None
        rel = posixpath.normpath("/" + unquote(target.path)).lstrip("/")
        if rel.split("/")[0] not in ("debian", "debian-security", LAB_REPO):
            return None
        path = self.server.mirror / rel
        return path if path.is_file() else None

    def _serve(self, body: bool) -> None:
        self.server.requests += 1
        path = self._file()
        if path is None:
            self.server.misses.append(self.path)
            self._respond(404, b"not in the lab mirror\n", body)
            return
        st = path.stat()
        since = self.headers.get("If-Modified-Since")
        try:
            if since and int(st.st_mtime) <= email.utils.parsedate_to_datetime(since).timestamp():
                self._respond(304, b"", body)
                return
        except (TypeError, ValueError):  # a malformed date: answer in full
            pass
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(st.st_size))
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        self.end_headers()
        if body:
            with path.open("rb") as f:
                self.connection.sendfile(f)

    def _respond(self, status: int, message: bytes, body: bool) -> None:
        self.send_response(status)
        if message:
            self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(message)))
        self.end_headers()
        if body:
            self.wfile.write(message)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        if self.server.log:
            self.server.log(f"mirror: {self.address_string()} {format % args}")


def serve_mirror(mirror: Path, host: str = "0.0.0.0", port: int = 80, *,
                 hosts: Iterable[str] = (MIRROR_HOST,), log: Echo | None = None) -> MirrorServer:
    """Serve mirror/ over HTTP in a background thread (stop() or use as a context manager).
    Answers GET/HEAD for /debian/..., /debian-security/..., /prep-ha-lab/... when the Host is
    one of `hosts`; port 0 picks a free port (server.server_address)."""
    return MirrorServer(mirror, (host, port), hosts, log)


# --------------------------------------------------------------------------- verification


def install_offline(rootfs: Path, mirror: Path, packages: Sequence[str],
                    apt_conf: Mapping[str, str], work: Path, echo: Echo = print) -> dict:
    """Install `packages` into an overlay of the rootfs (upper layer: work/node/upper) exactly
    as cloud-init does (apt-get update, then its apt-get install), from the mirror served on
    127.0.0.1:80 as deb.debian.org, inside a network namespace whose only interface is lo.
    Returns the timings, apt's output and the server's request counts."""
    work.mkdir(parents=True, exist_ok=True)
    place_apt_conf(work / "node/upper", apt_conf)
    proc = subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-m", "lab.mirror",
         str(rootfs), str(mirror), str(work), *packages],
        capture_output=True, cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode != 0:
        raise ImageError(f"offline install failed ({proc.returncode}):\n"
                         f"{(proc.stdout + proc.stderr).decode(errors='replace')[-6000:]}")
    result = json.loads((work / "result.json").read_text())
    echo(f"image: offline install OK: update {result['update_s']} s, install "
         f"{result['install_s']} s, {result['requests']} requests, misses {result['misses']}")
    return result


def offline_install_check(image: Image, work: Path, echo: Echo = print) -> dict:
    """install_offline of the image's user-data packages, from its mirror."""
    return install_offline(image.rootfs, image.mirror, image.packages, dict(image.apt_conf),
                           work, echo)


def _offline_inner(rootfs: Path, mirror: Path, work: Path, packages: list[str]) -> None:
    """offline_install_check inside `unshare --net`, where only lo exists."""
    run(["ip", "link", "set", "lo", "up"])
    overlay = Overlay(rootfs, work / "node")
    # Scaffolding of the check, not part of the image: no daemon starts in this chroot.
    policy = overlay.upper / "usr/sbin/policy-rc.d"
    policy.parent.mkdir(parents=True, exist_ok=True)
    policy.write_text(POLICY_RC_D)
    policy.chmod(0o755)
    hosts = ETC_HOSTS + f"127.0.0.1\t{MIRROR_HOST}\n"
    result: dict = {}

    def chroot(argv: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(chroot_command(overlay, argv, hosts=hosts), capture_output=True,
                              env=CHROOT_ENV)

    with serve_mirror(mirror, "127.0.0.1", 80) as server:
        failed = False
        for step, args in (("update", ["update"]), ("install", ["install", *packages])):
            with timed(result, f"{step}_s"):
                proc = chroot([*APT_GET, *args])
            result[f"{step}_rc"] = proc.returncode
            result[f"{step}_log"] = (proc.stdout + proc.stderr).decode(errors="replace")
            failed = failed or proc.returncode != 0
        status = chroot(["dpkg-query", "-W", "-f", "${Package} ${Version} ${db:Status-Status}\n",
                         *(p.split("=")[0] for p in packages)])
        result["status"] = status.stdout.decode().splitlines()
        result["requests"] = server.requests
        result["misses"] = sorted(set(server.misses))
    (work / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    if failed or status.returncode:
        raise ImageError("apt-get update or install failed; see result.json")


if __name__ == "__main__":  # offline_install_check, inside `unshare --net`
    rootfs, mirror, work, *packages = sys.argv[1:]
    _offline_inner(Path(rootfs), Path(mirror), Path(work), packages)
