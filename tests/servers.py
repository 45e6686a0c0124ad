"""Real file servers on loopback for tests: http, ftp, tftp, sftp, ldap, plus dead ends.

Every server binds 127.0.0.1 on a port picked by the kernel (xdist-safe), every start-up
wait is bounded, and every process started here is stopped by its own pid.
Import the fixtures into a test module: `from servers import http_server, ...`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
from helpers import wait_until

USER, PASSWORD = "alice", "s3cret-Pw"
# Files every server serves: a small one, one larger than test limits, an empty one.
FILES = {
    "cert.pem": bytes(range(256)) * 12 + b"end\n",
    "sub/ca.pem": b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    "big.bin": os.urandom(300_000),
    "empty.bin": b"",
}
TFTPD = "/usr/sbin/in.tftpd"
SLAPD = "/usr/sbin/slapd"


def write_files(root: Path) -> Path:
    """Fill root with FILES, world-readable (tftpd drops to user tftp)."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    for name, data in FILES.items():
        path = root / name
        path.parent.mkdir(exist_ok=True)
        path.parent.chmod(0o755)
        path.write_bytes(data)
        path.chmod(0o644)
    return root


def free_udp_port() -> int:
    """A UDP port nobody listens on right now (small race, acceptable on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tcp_ready(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _start(cmd: list[str]) -> subprocess.Popen:
    """Start a server; stderr goes to a file (a full pipe would block a chatty server).
    Own session: _stop() signals the whole process group (tftpd forks per request)."""
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    proc.log = log
    return proc


def _log(proc: subprocess.Popen) -> str:
    proc.log.seek(0)
    return proc.log.read().decode(errors="replace")[-2000:]


def _stop(proc: subprocess.Popen) -> None:
    """Stop a server we started (its own session, so forked children go too)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    proc.stdout.close()
    proc.log.close()


def _wait_tcp(proc: subprocess.Popen, port: int, what: str) -> None:
    def up():
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited: {_log(proc)}")
        return _tcp_ready(port)

    wait_until(up, timeout=10, what=f"{what} on port {port}")


# ---------------------------------------------------------------- dead ends


@pytest.fixture
def refused_port():
    """A TCP port that refuses connections: bound (so nobody else takes it), not listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
def silent_tcp_port():
    """A TCP port whose kernel completes the handshake but nobody ever answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


@pytest.fixture
def silent_udp_port():
    """A UDP port that receives datagrams and never replies."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


# ---------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def served_dir(tmp_path_factory) -> Path:
    return write_files(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def http_server(served_dir):
    """The stdlib's `python -m http.server`; yields its port."""
    port = free_tcp_port()
    cmd = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    proc = _start([*cmd, "--directory", str(served_dir)])
    try:
        _wait_tcp(proc, port, "http.server")
        yield port
    finally:
        _stop(proc)


class _AuthHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory behind HTTP basic auth (USER/PASSWORD)."""

    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    def do_GET(self):
        if self.headers.get("Authorization") != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="pki"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def http_auth_server(served_dir):
    """An in-thread stdlib HTTP server with basic auth; yields its port."""
    handler = functools.partial(_AuthHandler, directory=str(served_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


_FTPD = """
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer
root, user, password = sys.argv[1:4]
auth = DummyAuthorizer()
auth.add_user(user, password, root, perm="elr")
auth.add_anonymous(root)
FTPHandler.authorizer = auth
FTPHandler.auth_failed_timeout = 0  # answer a wrong password at once
server = FTPServer(("127.0.0.1", 0), FTPHandler)
print(server.socket.getsockname()[1], flush=True)
server.serve_forever()
"""


@pytest.fixture(scope="module")
def ftp_server(served_dir):
    """pyftpdlib in a subprocess with USER/PASSWORD and anonymous; yields its port."""
    args = [sys.executable, "-c", _FTPD, str(served_dir), USER, PASSWORD]
    proc = _start(args)
    try:
        line = _readline(proc, 10)
        assert line.strip().isdigit(), f"pyftpdlib did not start: {line!r}"
        port = int(line)
        _wait_tcp(proc, port, "pyftpdlib")
        yield port
    finally:
        _stop(proc)


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    """First stdout line of proc, or "" after timeout (reads in a thread to stay bounded)."""
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return out[0].decode() if out else ""


@pytest.fixture(scope="module")
def tftp_server(served_dir):
    """Debian's tftpd-hpa (`apt-get install tftpd-hpa`); yields its port."""
    if not os.access(TFTPD, os.X_OK):
        pytest.fail(f"{TFTPD} is missing: install Debian's tftpd-hpa (apt-get install tftpd-hpa)")
    port = free_udp_port()
    cmd = [TFTPD, "--listen", "--foreground", "--address", f"127.0.0.1:{port}"]
    proc = _start([*cmd, "--secure", str(served_dir)])
    try:
        wait_until(lambda: _tftp_ready(proc, port), timeout=10, what="in.tftpd")
        yield port
    finally:
        _stop(proc)


def _tftp_ready(proc: subprocess.Popen, port: int) -> bool:
    """Ask for a missing file: any reply means the server is up."""
    if proc.poll() is not None:
        raise AssertionError(f"in.tftpd exited: {_log(proc)}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.sendto(b"\x00\x01no-such-file\x00octet\x00", ("127.0.0.1", port))
        try:
            return bool(s.recvfrom(600)[0])
        except OSError:
            return False


@dataclass
class SftpServer:
    port: int
    root: Path
    host_key: asyncssh.SSHKey

    def known_hosts_line(self, key: asyncssh.SSHKey | None = None) -> str:
        algo, blob = (key or self.host_key).export_public_key().decode().split()[:2]
        return f"[127.0.0.1]:{self.port} {algo} {blob}\n"


class _SshServer(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return (username, password) == (USER, PASSWORD)


@pytest.fixture(scope="module")
def sftp_server(served_dir):
    """An asyncssh SFTP server (password auth, chroot to served_dir) on its own loop thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    key = asyncssh.generate_private_key("ssh-ed25519")

    def run(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(10)

    async def start():
        return await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[key],
            server_factory=_SshServer,
            sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=bytes(served_dir)),
        )

    async def stop(server):
        server.close()
        await server.wait_closed()

    server = run(start())
    try:
        yield SftpServer(server.sockets[0].getsockname()[1], served_dir, key)
    finally:
        run(stop(server))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


LDAP_BASE = "o=lab"
LDAP_CRL_DN = "cn=ca1,o=lab"
_SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
pidfile {d}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
suffix "{base}"
rootdn "cn=admin,{base}"
directory {d}/db
"""


@contextlib.contextmanager
def slapd(tmp_path_factory, dn: str, cn: str, value: bytes):
    """OpenLDAP slapd on loopback with one cRLDistributionPoint entry ``dn`` holding ``value``
    as its certificateRevocationList;binary; yields the port."""
    if not os.access(SLAPD, os.X_OK):
        pytest.fail(f"{SLAPD} is missing: install Debian's slapd (apt-get install slapd)")
    d = tmp_path_factory.mktemp("slapd")
    (d / "db").mkdir()
    (d / "slapd.conf").write_text(_SLAPD_CONF.format(d=d, base=LDAP_BASE))
    data = base64.b64encode(value).decode()
    (d / "data.ldif").write_text(
        f"dn: {LDAP_BASE}\nobjectClass: organization\no: lab\n\n"
        f"dn: {dn}\nobjectClass: cRLDistributionPoint\ncn: {cn}\n"
        f"certificateRevocationList;binary:: {data}\n\n"
    )
    conf = str(d / "slapd.conf")
    subprocess.run(
        ["slapadd", "-q", "-f", conf, "-l", str(d / "data.ldif")],
        check=True,
        capture_output=True,
        timeout=30,
    )
    port = free_tcp_port()
    proc = _start([SLAPD, "-f", conf, "-h", f"ldap://127.0.0.1:{port}/", "-d", "0"])
    try:
        _wait_tcp(proc, port, "slapd")
        yield port
    finally:
        _stop(proc)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def ldap_server(tmp_path_factory):
    """slapd with one cRLDistributionPoint entry holding FILES["cert.pem"]."""
    with slapd(tmp_path_factory, LDAP_CRL_DN, "ca1", FILES["cert.pem"]) as port:
        yield port
