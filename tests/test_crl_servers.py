"""CrlCache with the real Fetcher against real servers on loopback (see servers.py): a CRL
served over file, http, ftp, tftp, sftp and ldap is fetched, verified and indexed; bad CRLs,
oversize bodies and silent servers end in one-line errors within the timeout, and the
previous good CRL stays."""

# ruff: noqa: F811  (pytest fixtures imported from servers.py are redefined as arguments)

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from servers import (  # noqa: F401  (fixtures)
    PASSWORD,
    USER,
    ftp_server,
    http_server,
    refused_port,
    sftp_server,
    silent_tcp_port,
    slapd,
    tftp_server,
    write_files,
)
from test_crl import DAY, T0, key, lab, make_crl, pem_of

from chassis.ipc.crl_index import CrlIndex
from supervisor.pki.crl import CrlCache, Entry
from supervisor.pki.urls import Fetcher

REVOKED = (3, 2**159 + 5, 2**64 + 3)  # what lab()'s CRL revokes
TIMEOUT = 0.6
MARGIN = 1.5
LDAP_DN = "cn=crl1,o=lab"


def crl_files() -> dict[str, bytes]:
    ca, k, crl = lab()
    return {
        "crl/ca1.crl": crl,
        "crl/ca1.pem": pem_of(crl),
        "crl/wrongsig.crl": make_crl(ca, k, [1], aki=False, signer=key("impostor")),
        "crl/stale.crl": make_crl(ca, k, [1], this=T0 - 2 * DAY, next=T0 - DAY),
        "crl/newer.crl": make_crl(ca, k, [1, 2, 3], number=5),
        "crl/garbage.crl": b"\x30\x82\x01\x00 not a CRL at all",
    }


@pytest.fixture(scope="module")
def served_dir(tmp_path_factory) -> Path:
    """servers.py's files plus our CRLs; overrides servers.served_dir for this module."""
    root = write_files(tmp_path_factory.mktemp("served"))
    (root / "crl").mkdir(mode=0o755)
    (root / "crl").chmod(0o755)
    for rel, data in crl_files().items():
        (root / rel).write_bytes(data)
        (root / rel).chmod(0o644)
    return root


@pytest.fixture(scope="module")
def crl_ldap_server(tmp_path_factory):
    """slapd with a cRLDistributionPoint entry holding lab()'s CRL."""
    with slapd(tmp_path_factory, LDAP_DN, "crl1", lab()[2]) as port:
        yield port


@pytest.fixture
def fetcher(tmp_path, served_dir) -> Fetcher:
    flash = tmp_path / "flash"
    shutil.copytree(served_dir, flash)
    return Fetcher(local_roots={"/flash": flash}, known_hosts=tmp_path / "known_hosts", timeout=5)


class Rig:
    def __init__(self, fetch, **kw) -> None:
        self.t = T0
        self.updates: list[tuple[str, int]] = []
        kw.setdefault("fetch_timeout_s", 5.0)
        self.cache = CrlCache(fetch, self.inline, lambda: self.t, self.on_update, **kw)

    @staticmethod
    async def inline(fn, *args):
        return fn(*args)

    def on_update(self, entry: Entry) -> None:
        self.updates.append((entry.key, entry.version))


def run(coro, timeout: float = 30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def assert_good(entry: Entry, version: int = 1) -> None:
    assert entry.last_result == "ok" and entry.error(T0) is None, entry.last_result
    assert entry.version == version
    index = CrlIndex(entry.index)
    assert all(s in index for s in REVOKED) and 4 not in index and len(index) == 3


@pytest.mark.parametrize("scheme", ["file", "http", "ftp", "tftp", "sftp", "ldap"])
def test_each_scheme_fetches_and_verifies(scheme, request, fetcher):
    ca = lab()[0]
    if scheme == "file":
        url = "/flash/crl/ca1.crl"
    elif scheme == "http":
        url = f"http://127.0.0.1:{request.getfixturevalue('http_server')}/crl/ca1.crl"
    elif scheme == "ftp":
        port = request.getfixturevalue("ftp_server")
        url = f"ftp://{USER}:{PASSWORD}@127.0.0.1:{port}/crl/ca1.crl"
    elif scheme == "tftp":
        url = f"tftp://127.0.0.1:{request.getfixturevalue('tftp_server')}/crl/ca1.crl"
    elif scheme == "sftp":
        server = request.getfixturevalue("sftp_server")
        fetcher.known_hosts.write_text(server.known_hosts_line())
        url = f"sftp://{USER}:{PASSWORD}@127.0.0.1:{server.port}/crl/ca1.crl"
    else:
        port = request.getfixturevalue("crl_ldap_server")
        url = f"ldap://127.0.0.1:{port}/{LDAP_DN}?certificateRevocationList;binary"

    async def scenario():
        rig = Rig(fetcher.fetch)
        entry = await rig.cache.need(url, [ca])  # learned from a CDP
        assert_good(entry)
        await rig.cache.configure("ca1", url, "der", [ca])  # configured
        assert_good(rig.cache.get("ca1"))
        assert rig.updates == [(url, 1), ("ca1", 1)]

    run(scenario())


def test_pem_over_http(fetcher, http_server):
    base = f"http://127.0.0.1:{http_server}/crl"

    async def scenario():
        rig = Rig(fetcher.fetch)
        await rig.cache.configure("pem", f"{base}/ca1.pem", "pem", [lab()[0]])
        assert_good(rig.cache.get("pem"))
        await rig.cache.configure("wrong", f"{base}/ca1.pem", "der", [lab()[0]])
        assert rig.cache.get("wrong").last_result.startswith("not a DER CRL: the file is PEM")

    run(scenario())


def test_bad_crls_name_the_cause(fetcher, http_server, ftp_server):
    ca = lab()[0]
    http = f"http://127.0.0.1:{http_server}"
    cases = [
        (f"{http}/crl/wrongsig.crl", "bad signature (issuer 'CN=Lab CA')"),
        (f"{http}/crl/stale.crl", "stale: nextUpdate 2030-03-16T"),
        (f"{http}/crl/garbage.crl", "not a CRL"),
        (f"{http}/cert.pem", "not a CRL"),
        (f"{http}/crl/missing.crl", "not found (HTTP 404"),
        (f"{http}/empty.bin", "file is empty"),
        (f"ftp://127.0.0.1:{ftp_server}/crl/stale.crl", "stale: nextUpdate"),
        ("/flash/crl/wrongsig.crl", "bad signature"),
    ]

    async def scenario():
        rig = Rig(fetcher.fetch)
        for url, error in cases:
            entry = await rig.cache.need(url, [ca])
            assert error in entry.last_result, (url, entry.last_result)
            assert entry.error(rig.t) == entry.last_result and entry.index is None
            assert "\n" not in entry.last_result
        assert rig.updates == []

    run(scenario())


@pytest.mark.parametrize("scheme", ["http", "ftp", "file"])
def test_oversize_body_is_refused(scheme, request, fetcher):
    if scheme == "file":
        url = "/flash/crl/ca1.crl"
    else:
        port = request.getfixturevalue(f"{scheme}_server")
        url = f"{scheme}://127.0.0.1:{port}/crl/ca1.crl"

    async def scenario():
        rig = Rig(fetcher.fetch, limit=200)
        entry = await rig.cache.need(url, [lab()[0]])
        assert entry.last_result.endswith("file exceeds 200 bytes") and entry.index is None

    run(scenario())


def test_silent_or_refusing_server_keeps_the_good_crl(
    fetcher, http_server, silent_tcp_port, refused_port
):
    """The configured URL points at a good server first, then at dead ends."""
    target = {"url": f"http://127.0.0.1:{http_server}/crl/ca1.crl"}

    async def fetch(url, *, limit, timeout):
        return await fetcher.fetch(target["url"], limit=limit, timeout=timeout)

    async def scenario():
        rig = Rig(fetch, fetch_timeout_s=TIMEOUT, backoff_s=30, default_refresh_s=600)
        await rig.cache.configure("ca1", "http://crl.example/ca1.crl", "der", [lab()[0]])
        entry = rig.cache.get("ca1")
        assert_good(entry)
        index = entry.index
        for dead, error in [
            (f"http://127.0.0.1:{silent_tcp_port}/crl/ca1.crl", f"timed out after {TIMEOUT:g} s"),
            (f"http://127.0.0.1:{refused_port}/crl/ca1.crl", "connection refused"),
        ]:
            target["url"] = dead
            rig.t = entry.next_refresh
            start = time.monotonic()
            assert await rig.cache.refresh_due() == [entry]
            assert time.monotonic() - start < TIMEOUT + MARGIN
            assert error in entry.last_result, entry.last_result
            assert entry.index is index and entry.version == 1 and entry.error(rig.t) is None
        rig.t = T0 + DAY  # the kept CRL's nextUpdate: now it fails closed
        assert entry.error(rig.t).startswith("stale: nextUpdate")

    run(scenario())


def test_silent_cdp_fails_within_the_timeout(silent_tcp_port, tmp_path):
    fetcher = Fetcher(local_roots={}, known_hosts=tmp_path / "known_hosts")

    async def scenario():
        rig = Rig(fetcher.fetch, fetch_timeout_s=TIMEOUT)
        start = time.monotonic()
        ftp = f"ftp://127.0.0.1:{silent_tcp_port}/ca1.crl"
        entry = await rig.cache.need(ftp, [lab()[0]])
        assert time.monotonic() - start < TIMEOUT + MARGIN
        assert entry.last_result == f"fetch {ftp}: timed out after {TIMEOUT:g} s"
        assert entry.error(rig.t) == entry.last_result

    run(scenario())


def test_file_replaced_on_flash(fetcher):
    """A refresh that finds a bad file keeps the CRL; a newer good one replaces it."""
    flash = fetcher.local_roots["/flash"] / "crl"

    async def scenario():
        rig = Rig(fetcher.fetch, default_refresh_s=60)
        await rig.cache.configure("ca1", "/flash/crl/ca1.crl", None, [lab()[0]])
        entry = rig.cache.get("ca1")
        assert_good(entry)
        for bad, error in [("wrongsig.crl", "bad signature"), ("stale.crl", "stale")]:
            shutil.copy(flash / bad, flash / "ca1.crl")
            rig.t = entry.next_refresh
            await rig.cache.refresh_due()
            assert entry.last_result.startswith(error) and entry.version == 1
            assert entry.error(rig.t) is None
        shutil.copy(flash / "newer.crl", flash / "ca1.crl")
        rig.t = entry.next_refresh
        await rig.cache.refresh_due()
        assert entry.version == 2 and entry.meta["number"] == 5 and entry.error(rig.t) is None
        assert rig.updates == [("ca1", 1), ("ca1", 2)]

    run(scenario())


def test_real_fetcher_and_process_pool(fetcher, http_server):
    from supervisor.workers import Workers

    url = f"http://127.0.0.1:{http_server}/crl/ca1.crl"

    async def scenario():
        workers = Workers()
        try:
            rig = Rig(fetcher.fetch)
            rig.cache._run_worker = workers.run
            entries = await asyncio.gather(*(rig.cache.need(url, [lab()[0]]) for _ in range(5)))
            assert all(e is entries[0] for e in entries)
            assert_good(entries[0])
        finally:
            workers.close()

    run(scenario(), timeout=60)
