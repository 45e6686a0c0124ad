"""supervisor.pki.urls against real servers on loopback (see servers.py)."""

# ruff: noqa: F811  (pytest fixtures imported from servers.py are redefined as arguments)

from __future__ import annotations

import asyncio
import logging
import os
import time
import traceback
from urllib.parse import quote

import asyncssh
import pytest
from hypothesis import given
from hypothesis import strategies as st
from servers import (  # noqa: F401  (fixtures)
    FILES,
    LDAP_CRL_DN,
    PASSWORD,
    USER,
    free_udp_port,
    ftp_server,
    http_auth_server,
    http_server,
    ldap_server,
    refused_port,
    served_dir,
    sftp_server,
    silent_tcp_port,
    silent_udp_port,
    tftp_server,
    write_files,
)

from supervisor.pki.urls import CERT_LIMIT, Fetcher, FetchError, Url, mask, parse

SMALL = FILES["cert.pem"]
WRONG = "Wr0ng-Secret-xyzzy"  # must never show up in errors or logs
TIMEOUT = 0.6
MARGIN = 0.9


@pytest.fixture
def fetcher(tmp_path) -> Fetcher:
    roots = {"/flash": write_files(tmp_path / "flash"), "/hd-raid": tmp_path / "hd-raid"}
    roots["/hd-raid"].mkdir()
    return Fetcher(local_roots=roots, known_hosts=tmp_path / "known_hosts", timeout=5)


def get(fetcher: Fetcher, url: str, limit: int = CERT_LIMIT, **kw) -> bytes:
    return asyncio.run(fetcher.fetch(url, limit=limit, **kw))


def error(fetcher: Fetcher, url: str, limit: int = CERT_LIMIT, **kw) -> str:
    with pytest.raises(FetchError) as info:
        get(fetcher, url, limit, **kw)
    text = str(info.value)
    assert "\n" not in text
    return text


def timed_error(fetcher: Fetcher, url: str) -> tuple[str, float]:
    """The error of a fetch that should time out, and how long the fetch took."""

    async def run():
        start = time.monotonic()
        with pytest.raises(FetchError) as info:
            await fetcher.fetch(url, limit=CERT_LIMIT, timeout=TIMEOUT)
        return str(info.value), time.monotonic() - start

    return asyncio.run(run())


# ---------------------------------------------------------------- parse / mask

GOOD = [
    ("/flash/cert.pem", ("file", None, None, None, None, "/flash/cert.pem")),
    ("file:/usb1/d/c.crt", ("file", None, None, None, None, "/usb1/d/c.crt")),
    ("file:///hd-raid/c.crt", ("file", None, None, None, None, "/hd-raid/c.crt")),
    ("tftp://10.0.0.1/c.crt", ("tftp", "10.0.0.1", 69, None, None, "/c.crt")),
    ("tftp://h:6969/d/c%20x.crt", ("tftp", "h", 6969, None, None, "/d/c x.crt")),
    ("ftp://h/c", ("ftp", "h", 21, None, None, "/c")),
    ("FTP://u:p%2Fw@h:2121/d/c", ("ftp", "h", 2121, "u", "p/w", "/d/c")),
    ("ftp://u:p@ss@h/c", ("ftp", "h", 21, "u", "p@ss", "/c")),
    ("ftp://u@h/c", ("ftp", "h", 21, "u", None, "/c")),
    ("sftp://u:pw@[::1]:2222/etc/c", ("sftp", "::1", 2222, "u", "pw", "/etc/c")),
    (
        "http://ca.example.com/crl/ca1.crl",
        ("http", "ca.example.com", 80, None, None, "/crl/ca1.crl"),
    ),
    ("https://u:p@ca:8443/c?x=%41", ("https", "ca", 8443, "u", "p", "/c?x=%41")),
    (
        "ldap://ldap:3389/cn=CA%201,o=Lab?certificateRevocationList",
        ("ldap", "ldap", 3389, None, None, "/cn=CA%201,o=Lab?certificateRevocationList"),
    ),
]

BAD = [
    ("", "empty"),
    ("gopher://h/c", "unknown scheme"),
    ("flash/c.pem", "expected"),
    ("/tmp/c.pem", "under /flash"),
    ("file:/etc/passwd", "under /flash"),
    ("file://host/flash/c", "no remote host"),
    ("/flash/", "missing file name"),
    ("/flash/../etc/passwd", "'..'"),
    ("ftp://h/d/%2E%2E/c", "'..'"),
    ("http://h/a/../c", "'..'"),
    ("http://h/", "missing file name"),
    ("http://h", "missing file name"),
    ("ftp:///c", "missing host"),
    ("ftp://h:0/c", "bad port"),
    ("ftp://h:65536/c", "bad port"),
    ("ftp://h:x/c", "bad port"),
    ("ftp://h:/c", "bad port"),
    ("ftp://[::1/c", "IPv6"),
    ("ftp://[zz]/c", "bad IPv6"),
    ("ftp://h_-!/c", "bad host"),
    ("tftp://u@h/c", "no user"),
    ("ftp://:pw@h/c", "empty user"),
    ("ftp://u:pa/ss@h/c", "bad port"),
    ("ftp://h/a b", "whitespace"),
    ("ftp://h/a%0d%0aDELE%20x", "control"),
    ("ftp://u%0a:pw@h/c", "control"),
    ("http://u:12/x@h/c", "'@' after the host"),
    ("x" * 3000, "longer than"),
]


@pytest.mark.parametrize("url, fields", GOOD)
def test_parse_good(url, fields):
    u = parse(url)
    assert (u.scheme, u.host, u.port, u.user, u.password, u.path) == fields
    assert u.raw == url


@pytest.mark.parametrize("url, reason", BAD)
def test_parse_bad(url, reason):
    with pytest.raises(FetchError, match="^bad URL") as info:
        parse(url)
    assert reason in str(info.value)


def test_parse_rejects_non_strings():
    with pytest.raises(FetchError, match="bad URL"):
        parse(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url, masked",
    [
        ("ftp://u:pw@h/c", "ftp://u:****@h/c"),
        ("sftp://u:p@ss@h:22/c", "sftp://u:****@h:22/c"),
        ("http://u@h/c", "http://u@h/c"),
        ("/flash/a@b", "/flash/a@b"),
        ("ftp://u:pa/ss@h/c", "ftp://****@h/c"),  # unparsable: all userinfo hidden
        ("foo://u:pw@h/c", "foo://****@h/c"),
        ("u:pw@h", "u:****@h"),
        ("ftp://u:pw@h/a\nb", "ftp://****@h/a?b"),
    ],
)
def test_mask(url, masked):
    assert mask(url) == masked


def test_url_repr_hides_password():
    assert "pw" not in repr(parse("ftp://u:pw@h/c"))


_PREFIXES = ["", "/flash/", "file:", "ftp://", "sftp://", "tftp://", "http://", "ldap://"]


@given(st.one_of(st.text(), st.tuples(st.sampled_from(_PREFIXES), st.text()).map("".join)))
def test_parse_total(text):
    try:
        assert isinstance(parse(text), Url)
    except FetchError as exc:
        assert "\n" not in str(exc)
    assert "\n" not in mask(text)


@given(
    scheme=st.sampled_from(["ftp", "sftp", "http", "https", "foo", "tftp"]),
    user=st.text("abcdefghij", min_size=1, max_size=5),
    secret=st.text(min_size=0, max_size=12),
    encode=st.booleans(),
    host=st.sampled_from(["h", "127.0.0.1", "[::1]", "", "h:21"]),
    path=st.sampled_from(["/c", "/d/c.pem", "", "/", "/a@b"]),
)
def test_mask_never_shows_password(scheme, user, secret, encode, host, path):
    password = "Zq9" + secret  # a marker that appears nowhere else in the URL
    written = quote(password, safe="") if encode else password
    url = f"{scheme}://{user}:{written}@{host}{path}"
    out = mask(url)
    assert password not in out and written not in out
    try:
        err = str(parse(url))
    except FetchError as exc:
        err = str(exc)
    assert password not in err and written not in err


# ---------------------------------------------------------------- local storage


def test_local_good(fetcher):
    assert get(fetcher, "/flash/cert.pem") == SMALL
    assert get(fetcher, "file:/flash/sub/ca.pem") == FILES["sub/ca.pem"]


def test_local_errors(fetcher, tmp_path):
    flash = fetcher.local_roots["/flash"]
    (tmp_path / "outside.pem").write_bytes(b"x")
    (flash / "link.pem").symlink_to(tmp_path / "outside.pem")
    (flash / "inner.pem").symlink_to(flash / "cert.pem")
    os.mkfifo(flash / "fifo")
    assert "no such file" in error(fetcher, "/flash/missing.pem")
    assert "/usb1 is not present" in error(fetcher, "/usb1/cert.pem")
    assert "outside its storage root" in error(fetcher, "/flash/link.pem")
    assert get(fetcher, "/flash/inner.pem") == SMALL  # a link inside the root is fine
    assert "not a regular file" in error(fetcher, "/flash/sub")
    assert "not a regular file" in error(fetcher, "/flash/fifo")
    assert "file is empty" in error(fetcher, "/flash/empty.bin")
    assert "exceeds 100 bytes" in error(fetcher, "/flash/cert.pem", limit=100)
    assert "bad URL" in error(fetcher, "/flash/../x")


# ---------------------------------------------------------------- http


def test_http(fetcher, http_server, refused_port, silent_tcp_port):
    base = f"http://127.0.0.1:{http_server}"
    assert get(fetcher, f"{base}/cert.pem") == SMALL
    assert get(fetcher, f"{base}/sub/ca.pem") == FILES["sub/ca.pem"]
    assert "not found (HTTP 404" in error(fetcher, f"{base}/missing.pem")
    assert "exceeds 1000 bytes" in error(fetcher, f"{base}/big.bin", limit=1000)
    assert "file is empty" in error(fetcher, f"{base}/empty.bin")
    assert "connection refused" in error(fetcher, f"http://127.0.0.1:{refused_port}/c")
    text, took = timed_error(fetcher, f"http://127.0.0.1:{silent_tcp_port}/c")
    assert "timed out" in text and took < TIMEOUT + MARGIN


def test_http_basic_auth(fetcher, http_auth_server, caplog):
    caplog.set_level(logging.DEBUG)
    base = f"127.0.0.1:{http_auth_server}"
    assert get(fetcher, f"http://{USER}:{PASSWORD}@{base}/cert.pem") == SMALL
    assert "login refused (HTTP 401" in error(fetcher, f"http://{USER}@{base}/cert.pem")
    assert_no_leak(fetcher, f"http://{USER}:{WRONG}@{base}/cert.pem", "login refused", caplog)


def test_https_same_code(fetcher, refused_port):
    assert "connection refused" in error(fetcher, f"https://127.0.0.1:{refused_port}/c")


def test_unresolvable_host(fetcher):
    assert "cannot resolve host" in error(fetcher, "http://no-such-host.invalid/c", timeout=3)


# ---------------------------------------------------------------- ftp


def test_ftp(fetcher, ftp_server, refused_port, silent_tcp_port, caplog):
    caplog.set_level(logging.DEBUG)
    base = f"127.0.0.1:{ftp_server}"
    assert get(fetcher, f"ftp://{base}/cert.pem") == SMALL  # anonymous
    assert get(fetcher, f"ftp://{USER}:{PASSWORD}@{base}/sub/ca.pem") == FILES["sub/ca.pem"]
    assert "not found or not accessible (550" in error(fetcher, f"ftp://{base}/missing.pem")
    assert "exceeds 1000 bytes" in error(fetcher, f"ftp://{base}/big.bin", limit=1000)
    assert "file is empty" in error(fetcher, f"ftp://{base}/empty.bin")
    assert_no_leak(fetcher, f"ftp://{USER}:{WRONG}@{base}/cert.pem", "login refused (530", caplog)
    assert "connection refused" in error(fetcher, f"ftp://127.0.0.1:{refused_port}/c")
    text, took = timed_error(fetcher, f"ftp://127.0.0.1:{silent_tcp_port}/c")
    assert "timed out" in text and took < TIMEOUT + MARGIN


# ---------------------------------------------------------------- tftp


def test_tftp(fetcher, tftp_server, silent_udp_port):
    base = f"tftp://127.0.0.1:{tftp_server}"
    assert get(fetcher, f"{base}/cert.pem") == SMALL
    assert get(fetcher, f"{base}/sub/ca.pem") == FILES["sub/ca.pem"]
    assert get(fetcher, f"{base}/big.bin", limit=len(FILES["big.bin"])) == FILES["big.bin"]
    assert "file not found (TFTP error 1)" in error(fetcher, f"{base}/missing.pem")
    assert "exceeds 1000 bytes" in error(fetcher, f"{base}/big.bin", limit=1000)
    assert "file is empty" in error(fetcher, f"{base}/empty.bin")
    text, took = timed_error(fetcher, f"tftp://127.0.0.1:{silent_udp_port}/c")
    assert "timed out" in text and took < TIMEOUT + MARGIN


def test_tftp_refused(fetcher):
    # Nobody on the port: the kernel's ICMP port-unreachable becomes "connection refused".
    port = free_udp_port()
    assert "connection refused" in error(fetcher, f"tftp://127.0.0.1:{port}/c")


# ---------------------------------------------------------------- sftp


def trust(fetcher: Fetcher, line: str) -> None:
    fetcher.known_hosts.write_text(line)


def test_sftp(fetcher, sftp_server, refused_port, silent_tcp_port, caplog):
    caplog.set_level(logging.DEBUG)
    trust(fetcher, sftp_server.known_hosts_line())
    base = f"sftp://{USER}:{PASSWORD}@127.0.0.1:{sftp_server.port}"
    assert get(fetcher, f"{base}/cert.pem") == SMALL
    assert get(fetcher, f"{base}/sub/ca.pem") == FILES["sub/ca.pem"]
    assert "no such file" in error(fetcher, f"{base}/missing.pem")
    assert "exceeds 1000 bytes" in error(fetcher, f"{base}/big.bin", limit=1000)
    assert "file is empty" in error(fetcher, f"{base}/empty.bin")
    wrong = f"sftp://{USER}:{WRONG}@127.0.0.1:{sftp_server.port}/cert.pem"
    assert_no_leak(fetcher, wrong, "login refused (sftp authentication failed)", caplog)
    assert "connection refused" in error(fetcher, f"sftp://u:p@127.0.0.1:{refused_port}/c")
    text, took = timed_error(fetcher, f"sftp://u:p@127.0.0.1:{silent_tcp_port}/c")
    assert "timed out" in text and took < TIMEOUT + MARGIN


def test_sftp_unknown_host_key_strict(fetcher, sftp_server, caplog):
    caplog.set_level(logging.DEBUG)
    url = f"sftp://{USER}:{PASSWORD}@127.0.0.1:{sftp_server.port}/cert.pem"
    text = error(fetcher, url)
    assert "host key unknown (SHA256:" in text and "not in known_hosts" in text
    assert PASSWORD not in text and PASSWORD not in caplog.text
    assert not fetcher.known_hosts.exists()


def test_sftp_changed_host_key(fetcher, sftp_server):
    other = asyncssh.generate_private_key("ssh-ed25519")
    trust(fetcher, sftp_server.known_hosts_line(other))
    url = f"sftp://{USER}:{PASSWORD}@127.0.0.1:{sftp_server.port}/cert.pem"
    assert "host key mismatch" in error(fetcher, url)
    fetcher.strict_host_keys = False  # TOFU never accepts a changed key
    assert "host key mismatch" in error(fetcher, url)


def test_sftp_trust_on_first_use(fetcher, sftp_server):
    fetcher.strict_host_keys = False
    url = f"sftp://{USER}:{PASSWORD}@127.0.0.1:{sftp_server.port}/cert.pem"
    assert get(fetcher, url) == SMALL
    assert fetcher.known_hosts.read_text() == sftp_server.known_hosts_line()
    fetcher.strict_host_keys = True
    assert get(fetcher, url) == SMALL


# ---------------------------------------------------------------- ldap


def test_ldap(fetcher, ldap_server, refused_port, silent_tcp_port):
    base = f"ldap://127.0.0.1:{ldap_server}"
    dn = quote(LDAP_CRL_DN, safe="=,")
    assert get(fetcher, f"{base}/{dn}?certificateRevocationList;binary") == SMALL
    assert get(fetcher, f"{base}/{dn}") == SMALL  # default attribute
    assert get(fetcher, f"{base}/{dn}?certificateRevocationList") == SMALL
    assert "no such entry" in error(fetcher, f"{base}/cn=nope,o=lab")
    assert "no deltaRevocationList" in error(fetcher, f"{base}/{dn}?deltaRevocationList")
    assert "exceeds 1000 bytes" in error(fetcher, f"{base}/{dn}", limit=1000)
    assert "connection refused" in error(fetcher, f"ldap://127.0.0.1:{refused_port}/o=x")
    text, took = timed_error(fetcher, f"ldap://127.0.0.1:{silent_tcp_port}/o=x")
    assert "timed out" in text and took < TIMEOUT + MARGIN


# ---------------------------------------------------------------- helpers


def assert_no_leak(fetcher: Fetcher, url: str, reason: str, caplog) -> None:
    """The fetch fails for `reason`; the password is in no message, traceback or log line."""
    with pytest.raises(FetchError) as info:
        get(fetcher, url)
    assert reason in str(info.value)
    assert "****" in str(info.value)
    full = "".join(traceback.format_exception(info.value))
    assert WRONG not in full and quote(WRONG) not in full
    assert WRONG not in caplog.text


def test_no_password_in_bad_url_error(caplog):
    with pytest.raises(FetchError) as info:
        parse(f"ftp://u:{WRONG}/x@h/c")
    assert WRONG not in str(info.value) and "Wr0ng" not in str(info.value)


def test_api_constants():
    from supervisor.pki import urls

    assert (urls.CERT_LIMIT, urls.OCSP_LIMIT, urls.CRL_LIMIT) == (65536, 65536, 64 << 20)
