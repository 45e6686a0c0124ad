"""URL fetching for the management card: certificates now, CRLs and OCSP later.

URL forms (StarOS "IPSec Certificates" reference):
  [file:]{/flash|/usb1|/hd-raid}[/dir]/file     tftp://host[:port][/dir]/file
  {ftp|sftp|http|https}://[user[:password]@]host[:port][/dir]/file
  ldap://host[:port]/DN?attr
Every fetch is bounded in time and size. Errors are a one-line FetchError naming the cause
and the URL with its password masked; passwords never reach a message or a log line.
"""

from __future__ import annotations

import asyncio
import errno
import ftplib
import ipaddress
import logging
import math
import os
import re
import socket
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import asyncssh
import httpx
import ldap3
import tftpy

log = logging.getLogger(__name__)

CERT_LIMIT = 64 * 1024
OCSP_LIMIT = 64 * 1024
CRL_LIMIT = 64 * 1024 * 1024

LOCAL_ROOTS = ("/flash", "/usb1", "/hd-raid")
DEFAULT_PORTS = {"tftp": 69, "ftp": 21, "sftp": 22, "http": 80, "https": 443, "ldap": 389}
_USER_SCHEMES = {"ftp", "sftp", "http", "https"}
_LDAP_DEFAULT_ATTR = "certificateRevocationList;binary"
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?")
_SPACE_CTRL_RE = re.compile(r"[\x00-\x20\x7f]")
_CTRL_RE = re.compile(r"[\x00-\x1f\x7f]")  # after %-decoding: would inject FTP commands etc.
_IP_RECVERR = 11  # Linux <netinet/in.h>; not exported by the socket module


class FetchError(Exception):
    """A fetch failed; str() is one line naming the cause and the masked URL."""


class _TooLarge(Exception):
    """Raised from inside a download as soon as the data passes the limit."""


class _Cause(Exception):
    """A scheme helper's failure reason, without the URL (fetch() adds it)."""


@dataclass(frozen=True)
class Url:
    """A parsed URL. port is filled with the scheme default; host/port are None for file.

    path: file -> "/flash/dir/file"; tftp/ftp/sftp -> %-decoded "/dir/file";
    http(s) and ldap -> as written ("/dir/file?query", "/DN?attr") since escapes matter there.
    """

    scheme: str
    host: str | None
    port: int | None
    user: str | None
    password: str | None = field(repr=False)
    path: str
    raw: str = field(repr=False)

    def masked(self) -> str:
        if self.password is None:
            return self.raw
        scheme, rest = self.raw.split("://", 1)
        netloc, slash, path = rest.partition("/")
        userinfo, _, hostport = netloc.rpartition("@")
        return f"{scheme}://{userinfo.split(':', 1)[0]}:****@{hostport}{slash}{path}"


def mask(url: str) -> str:
    """The URL with any password replaced by ****, safe to log even if it does not parse."""
    try:
        return parse(url).masked()
    except FetchError:
        return _mask_unparsed(str(url))


def _mask_unparsed(s: str) -> str:
    # We cannot tell where a broken URL's password ends, so hide all up to the last "@".
    s = _CTRL_RE.sub("?", s)
    at = s.rfind("@")
    if at >= 0:
        m = re.match(r"[A-Za-z][A-Za-z0-9+.-]*:/*", s)
        s = s[: m.end() if m else 0] + "****" + s[at:]
    return s if len(s) <= 200 else s[:200] + "..."


def parse(url: str) -> Url:
    if not isinstance(url, str):
        raise FetchError(f"bad URL: expected a string, got {type(url).__name__}")

    def bad(reason: str) -> FetchError:
        return FetchError(f"bad URL {_mask_unparsed(url)}: {reason}")

    if not url:
        raise bad("empty")
    if _SPACE_CTRL_RE.search(url):
        raise bad("contains whitespace or control characters")
    if len(url) > 2048:
        raise bad("longer than 2048 characters")
    m = _SCHEME_RE.match(url)
    scheme = m.group(1).lower() if m else ""
    if url.startswith("/") or scheme == "file":
        return _parse_local(url, bad)
    if not m or not url[m.end() :].startswith("//"):
        raise bad("expected [file:]/flash/..., /usb1/..., /hd-raid/... or scheme://host/...")
    if scheme not in DEFAULT_PORTS:
        raise bad(f"unknown scheme {scheme!r}")
    netloc, slash, path = url[m.end() + 2 :].partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    user = password = None
    if at:
        if scheme not in _USER_SCHEMES:
            raise bad(f"{scheme} URLs take no user name")
        name, colon, secret = userinfo.partition(":")
        user, password = unquote(name), (unquote(secret) if colon else None)
        if not user:
            raise bad("empty user name")
        if _CTRL_RE.search(user + (password or "")):
            raise bad("control characters in user name or password")
    host, port = _parse_hostport(hostport, scheme, bad)
    path = slash + path
    if scheme in _USER_SCHEMES and "@" in path:  # else "u:12/x@h/f" would hide a password
        raise bad("'@' after the host (write '/' in a password as %2F)")
    if scheme in ("http", "https", "ldap"):
        _check_path(unquote(path.partition("?")[0]), bad)
    else:
        path = unquote(path)
        _check_path(path, bad)
    return Url(scheme, host, port, user, password, path, url)


def _parse_local(url: str, bad) -> Url:
    path = url[5:] if url[:5].lower() == "file:" else url
    if path.startswith("//"):  # file:///flash/x
        host, _, rest = path[2:].partition("/")
        if host not in ("", "localhost"):
            raise bad("file URLs name no remote host")
        path = "/" + rest
    if not any(path.startswith(root + "/") for root in LOCAL_ROOTS):
        raise bad("local path must be under /flash, /usb1 or /hd-raid")
    _check_path(path, bad)
    return Url("file", None, None, None, None, path, url)


def _parse_hostport(hostport: str, scheme: str, bad) -> tuple[str, int]:
    if hostport.startswith("["):
        host, closed, rest = hostport[1:].partition("]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad("bad IPv6 address") from None
        if not closed or (rest and not rest.startswith(":")):
            raise bad("bad [IPv6] host")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text = hostport.partition(":")
        if not host:
            raise bad("missing host")
        if not _HOST_RE.fullmatch(host):
            raise bad("bad host name")
        port_text = port_text if colon else None
    if port_text is None:
        return host, DEFAULT_PORTS[scheme]
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 0 < int(port_text) < 65536:
        raise bad("bad port")
    return host, int(port_text)


def _check_path(path: str, bad) -> None:
    if _CTRL_RE.search(path):
        raise bad("control characters in path")
    parts = path.split("/")
    if ".." in parts:
        raise bad("'..' in path")
    if len(parts) < 2 or not parts[-1]:
        raise bad("missing file name")


@dataclass
class Fetcher:
    local_roots: dict[str, Path]  # {"/flash": Path, "/usb1": Path, "/hd-raid": Path}
    known_hosts: Path  # OpenSSH known_hosts file for sftp
    strict_host_keys: bool = True  # False: accept and record unknown keys (never changed ones)
    timeout: float = 10.0

    async def fetch(self, url: str, *, limit: int, timeout: float | None = None) -> bytes:
        u = parse(url)
        t = self.timeout if timeout is None else timeout
        where = u.masked()
        log.debug("fetching %s (limit %d bytes, timeout %g s)", where, limit, t)
        if u.scheme in _BLOCKING:  # in a thread whose sockets time out too, so it ends soon
            job = asyncio.to_thread(_BLOCKING[u.scheme], u, limit, t)
        else:
            job = getattr(self, "_fetch_" + ("http" if u.scheme == "https" else u.scheme))(
                u, limit, t
            )
        try:
            data = await asyncio.wait_for(job, t)
        except TimeoutError:  # before OSError: TimeoutError is one
            raise FetchError(f"fetch {where}: timed out after {t:g} s") from None
        except _TooLarge:
            raise FetchError(f"fetch {where}: file exceeds {limit} bytes") from None
        except _Cause as exc:
            raise FetchError(f"fetch {where}: {exc}") from exc.__cause__
        except OSError as exc:
            raise FetchError(f"fetch {where}: {_os_reason(exc)}") from exc
        if len(data) > limit:
            raise FetchError(f"fetch {where}: file exceeds {limit} bytes")
        if not data:
            raise FetchError(f"fetch {where}: file is empty")
        log.debug("fetched %d bytes from %s", len(data), where)
        return data

    async def _fetch_file(self, u: Url, limit: int, t: float) -> bytes:
        root = next(r for r in LOCAL_ROOTS if u.path.startswith(r + "/"))
        if root not in self.local_roots:
            raise _Cause(f"{root} is not present")
        return await asyncio.to_thread(
            _read_local, self.local_roots[root], u.path[len(root) + 1 :], limit
        )

    async def _fetch_http(self, u: Url, limit: int, t: float) -> bytes:
        host = f"[{u.host}]" if ":" in u.host else u.host
        auth = (u.user, u.password or "") if u.user else None
        buf = bytearray()
        try:
            # trust_env=False: a management card uses no proxy from its environment.
            async with (
                httpx.AsyncClient(timeout=t, trust_env=False, follow_redirects=True) as client,
                client.stream("GET", f"{u.scheme}://{host}:{u.port}{u.path}", auth=auth) as r,
            ):
                if r.status_code != 200:
                    raise _Cause(_http_reason(r))
                length = r.headers.get("content-length", "")
                if length.isdigit() and int(length) > limit:
                    raise _TooLarge
                async for chunk in r.aiter_bytes():
                    buf += chunk
                    if len(buf) > limit:
                        raise _TooLarge
        except httpx.TimeoutException as exc:
            raise TimeoutError from exc
        except httpx.TooManyRedirects as exc:
            raise _Cause("too many redirects") from exc
        except httpx.HTTPError as exc:
            os_error = _os_cause(exc)
            reason = _os_reason(os_error) if os_error else f"HTTP error: {_one_line(exc)}"
            raise _Cause(reason) from exc
        return bytes(buf)

    async def _fetch_sftp(self, u: Url, limit: int, t: float) -> bytes:
        await self._check_host_key(u)
        opts = dict(known_hosts=str(self.known_hosts), client_keys=None, agent_path=None)
        opts.update(config=[], connect_timeout=t)  # config=[]: ignore ~/.ssh/config
        if u.user:
            opts["username"] = u.user
        if u.password is not None:
            opts["password"] = u.password
        try:
            async with (
                asyncssh.connect(u.host, u.port, **opts) as conn,
                conn.start_sftp_client() as sftp,
                sftp.open(u.path, "rb") as f,
            ):
                size = (await f.stat()).size
                if size is not None and size > limit:
                    raise _TooLarge
                return await f.read(limit + 1)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise _Cause("host key mismatch: not the key in known_hosts") from exc
        except asyncssh.PermissionDenied as exc:
            raise _Cause("login refused (sftp authentication failed)") from exc
        except asyncssh.SFTPNoSuchFile as exc:
            raise _Cause("no such file") from exc
        except asyncssh.SFTPPermissionDenied as exc:
            raise _Cause("permission denied") from exc
        except asyncssh.Error as exc:
            raise _Cause(f"sftp error: {_one_line(exc.reason)}") from exc

    async def _check_host_key(self, u: Url) -> None:
        """Refuse unknown host keys before any password is sent (or record them, TOFU)."""
        addr = u.host if _is_ip(u.host) else ""
        try:
            keys = asyncssh.match_known_hosts(str(self.known_hosts), u.host, addr, u.port)
        except FileNotFoundError:
            keys = ()
        except (OSError, ValueError) as exc:
            raise _Cause(f"cannot read known_hosts: {_one_line(exc)}") from exc
        if keys and any(keys[i] for i in (0, 1, 3, 5)):  # host keys, CA keys, x509 certs/subjects
            return  # known: asyncssh.connect() verifies the key (mismatch -> error)
        key = await asyncssh.get_server_host_key(u.host, u.port, config=[])
        if key is None:
            raise _Cause("server offered no host key")
        fingerprint = key.get_fingerprint()
        if self.strict_host_keys:
            raise _Cause(f"host key unknown ({fingerprint}), not in known_hosts")
        name = u.host if u.port == 22 else f"[{u.host}]:{u.port}"
        algo, blob = key.export_public_key("openssh").decode().split()[:2]
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with open(self.known_hosts, "a") as f:
            f.write(f"{name} {algo} {blob}\n")
        log.warning("accepted new sftp host key %s for %s (trust on first use)", fingerprint, name)


def _read_local(root: Path, rel: str, limit: int) -> bytes:
    base = root.resolve()
    target = (base / rel).resolve()  # follows symlinks, so a link out of the root is caught
    if not target.is_relative_to(base):
        raise _Cause("path leads outside its storage root")
    # O_NONBLOCK: opening a FIFO must not hang; the fstat check then refuses it.
    fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _Cause("not a regular file")
    with os.fdopen(fd, "rb") as f:
        return f.read(limit + 1)


class _CappedSink:
    """File-like sink for tftpy that stops the transfer as soon as it passes the limit."""

    def __init__(self, limit: int):
        self.limit, self.buf = limit, bytearray()

    def write(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > self.limit:
            raise _TooLarge


def _tftp_get(u: Url, limit: int, timeout: float) -> bytes:
    if ":" in u.host:
        raise _Cause("tftp over IPv6 is not supported")  # tftpy is IPv4 only
    sink = _CappedSink(limit)
    # RFC 3617 / curl: the path is relative to the server's root.
    # Per-packet timeout x retries ~ total timeout, so the thread ends soon after wait_for.
    ctx = tftpy.TftpContexts.TftpContextClientDownload(
        u.host, u.port, u.path[1:], sink, {"blksize": 1428}, None, max(timeout / 3, 0.1), retries=3
    )
    if sys.platform == "linux":  # report ICMP port unreachable on the unconnected socket
        ctx.sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)
    try:
        with ctx:
            ctx.start()
    except tftpy.TftpShared.TftpTimeout as exc:
        raise TimeoutError from exc
    except tftpy.TftpShared.TftpFileNotFoundError as exc:
        raise _Cause("file not found (TFTP error 1)") from exc
    except tftpy.TftpShared.TftpException as exc:
        m = re.search(r"errorcode = (\d+)\s+msg = (.*)", str(exc))
        raise _Cause(f"TFTP error {m[1]}: {m[2]}" if m else _one_line(exc)) from exc
    return bytes(sink.buf)


def _ftp_get(u: Url, limit: int, timeout: float) -> bytes:
    buf = bytearray()

    def sink(chunk: bytes) -> None:
        buf.extend(chunk)
        if len(buf) > limit:
            raise _TooLarge

    ftp = ftplib.FTP(timeout=timeout)
    try:  # no `with`: its QUIT after an aborted transfer would mask our exception
        ftp.connect(u.host, u.port)
        ftp.login(u.user or "anonymous", u.password or ("" if u.user else "anonymous@"))
        # RFC 1738 / curl: the path is relative to the login directory.
        ftp.retrbinary("RETR " + u.path[1:], sink)
    except ftplib.error_perm as exc:
        text = _one_line(exc)
        reasons = {"530": "login refused", "550": "not found or not accessible"}
        raise _Cause(f"{reasons.get(text[:3], 'FTP error')} ({text})") from exc
    except ftplib.Error as exc:
        raise _Cause(f"FTP error ({_one_line(exc)})") from exc
    except EOFError as exc:
        raise _Cause("connection closed by the server") from exc
    finally:
        ftp.close()
    return bytes(buf)


def _ldap_get(u: Url, limit: int, timeout: float) -> bytes:
    # ldap3 buffers a whole response, so here the size limit is checked after receipt.
    dn, _, attrs = u.path[1:].partition("?")
    attr = unquote(attrs.partition("?")[0]) or _LDAP_DEFAULT_ATTR
    server = ldap3.Server(u.host, port=u.port, connect_timeout=timeout, get_info=ldap3.NONE)
    conn = ldap3.Connection(server, receive_timeout=math.ceil(timeout))  # ldap3 wants an int
    try:
        conn.open()
        conn.search(unquote(dn), "(objectClass=*)", ldap3.BASE, attributes=[attr])
        result, entries = conn.result, conn.response or []
    except ldap3.core.exceptions.LDAPSocketOpenError as exc:
        text = _one_line(exc)
        raise _Cause("connection refused" if "refused" in text else text) from exc
    except ldap3.core.exceptions.LDAPSocketReceiveError as exc:
        raise TimeoutError from exc
    except ldap3.core.exceptions.LDAPException as exc:
        raise _Cause(f"LDAP error: {_one_line(exc)}") from exc
    finally:
        conn.unbind()
    if result.get("result") == 32:
        raise _Cause("no such entry (LDAP noSuchObject)")
    if result.get("result") != 0:
        raise _Cause(f"LDAP error: {result.get('description')}")
    base = attr.split(";")[0].lower()  # the server may answer "x;binary" for "x"
    for entry in entries:
        for name, values in entry.get("raw_attributes", {}).items():
            if name.split(";")[0].lower() == base and values:
                return values[0]
    raise _Cause(f"entry has no {attr} attribute")


_BLOCKING = {"tftp": _tftp_get, "ftp": _ftp_get, "ldap": _ldap_get}


def _http_reason(r: httpx.Response) -> str:
    status = f"HTTP {r.status_code} {r.reason_phrase}".strip()
    if r.status_code in (404, 410):
        return f"not found ({status})"
    if r.status_code == 401:
        return f"login refused ({status})"
    if r.status_code == 403:
        return f"permission denied ({status})"
    return status


def _os_cause(exc: BaseException) -> OSError | None:
    """The OSError that a library wrapped (httpx -> httpcore -> anyio -> socket)."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and (e.errno is not None or isinstance(e, socket.gaierror)):
            return e
        todo += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]
    return None


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return "cannot resolve host"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "host unreachable"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "path is a symbolic link"
    return _one_line(exc.strerror or exc) or type(exc).__name__


def _one_line(text: object, width: int = 160) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= width else s[:width] + "..."


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
