"""An OpenLDAP slapd the CRL publisher runs, holding the lab CAs' CRLs (RFC 4523).

One entry per CA under ``o=lab`` (``cn=issuing,o=lab``, ``cn=root,o=lab``, objectClass
cRLDistributionPoint) with the CRL in ``certificateRevocationList;binary``; the URL a
certificate names is ``ldap://127.0.0.1:PORT/cn=issuing,o=lab?certificateRevocationList;binary``.
The directory is made afresh at each start (slapadd), slapd listens on loopback only and is
a child of the publisher that dies with it (PR_SET_PDEATHSIG: start it from a thread that
lives as long as the process, the main one); a new CRL replaces the attribute (ldap3, bound as
the directory's root DN with a random password kept in its 0600 configuration).
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import subprocess
import time
from functools import partial
from pathlib import Path

from chassis import procs

BASE = "o=lab"
ATTRIBUTE = "certificateRevocationList;binary"
CORE_SCHEMA = Path("/etc/ldap/schema/core.schema")
MODULES = Path("/usr/lib/ldap")
START_TIMEOUT = 10.0


class LdapError(Exception):
    pass


def find_slapd() -> str | None:
    """slapd's path, or None when OpenLDAP's server is not installed."""
    found = shutil.which("slapd")
    if found:
        return found
    return "/usr/sbin/slapd" if os.access("/usr/sbin/slapd", os.X_OK) else None


def dn(name: str) -> str:
    return f"cn={name},{BASE}"


def url(port: int, name: str) -> str:
    return f"ldap://127.0.0.1:{port}/{dn(name)}?{ATTRIBUTE}"


_CONF = """\
include {schema}
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
modulepath {modules}
moduleload back_mdb
sockbuf_max_incoming_auth 134217728
database mdb
maxsize 1073741824
suffix "{base}"
rootdn "cn=admin,{base}"
rootpw {password}
directory {d}/db
"""


class Slapd:
    def __init__(self, home: Path, port: int, slapd: str | None = None) -> None:
        self.home, self.port = Path(home), port
        self.slapd = slapd or find_slapd()
        self.proc: subprocess.Popen | None = None
        self.password = ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, crls: dict[str, bytes]) -> None:
        """A fresh directory holding `crls` (entry name -> DER), served on the port."""
        if self.slapd is None:
            raise LdapError("slapd is not installed")
        if not CORE_SCHEMA.exists():
            raise LdapError(f"{CORE_SCHEMA} is missing (Debian's slapd installs it)")
        self.stop()
        shutil.rmtree(self.home / "db", ignore_errors=True)
        (self.home / "db").mkdir(parents=True, mode=0o700)
        self.password = secrets.token_hex(16)
        conf = self.home / "slapd.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_CONF.format(schema=CORE_SCHEMA, d=self.home, modules=MODULES, base=BASE,
                                 password=self.password))  # fmt: skip
        ldif = f"dn: {BASE}\nobjectClass: organization\no: lab\n\n" + "".join(
            f"dn: {dn(name)}\nobjectClass: cRLDistributionPoint\ncn: {name}\n"
            f"{ATTRIBUTE}:: {base64.b64encode(der).decode()}\n\n"
            for name, der in crls.items()
        )
        (self.home / "data.ldif").write_text(ldif)
        added = subprocess.run(
            ["slapadd" if shutil.which("slapadd") else "/usr/sbin/slapadd", "-q", "-f", str(conf),
             "-l", str(self.home / "data.ldif")],
            capture_output=True, timeout=30, text=True,
        )  # fmt: skip
        if added.returncode != 0:
            raise LdapError(f"slapadd failed: {added.stderr.strip()[-300:]}")
        with open(self.home / "slapd.log", "ab") as out:
            self.proc = subprocess.Popen(
                [self.slapd, "-f", str(conf), "-h", f"ldap://127.0.0.1:{self.port}/", "-d", "0"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=partial(procs.die_with_parent, os.getpid()),
                close_fds=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LdapError(
                    f"slapd exited with {self.proc.returncode} (see {self.home / 'slapd.log'})"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise LdapError(f"slapd did not listen on port {self.port} in {START_TIMEOUT:g} s")

    def update(self, crls: dict[str, bytes]) -> None:
        """Replace the CRL of each named entry."""
        import ldap3

        server = ldap3.Server("127.0.0.1", port=self.port, connect_timeout=5, get_info=ldap3.NONE)
        conn = ldap3.Connection(
            server, user=f"cn=admin,{BASE}", password=self.password, receive_timeout=10
        )
        try:
            if not conn.bind():
                raise LdapError(f"bind refused: {conn.result.get('description')}")
            for name, der in crls.items():
                conn.modify(dn(name), {ATTRIBUTE: [(ldap3.MODIFY_REPLACE, [der])]})
                if conn.result.get("result") != 0:
                    raise LdapError(f"modify {dn(name)}: {conn.result.get('description')}")
        except ldap3.core.exceptions.LDAPException as exc:
            raise LdapError(f"LDAP: {exc}") from exc
        finally:
            conn.unbind()

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
