"""supervisor.pki.keygen: `crypto rsa-keygen` keys, subject names and certificate requests."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.pki import keygen
from supervisor.pki.credentials import CredentialError, load_private_key, validate_key
from supervisor.pki.keygen import build_csr, generate_rsa, parse_subject, weak_warning

SUBJECT = "/C=US/O=Cisco/CN=segw.example.net"


@pytest.fixture(scope="module")
def rsa_pem() -> bytes:
    return generate_rsa(2048)


@pytest.fixture(scope="module")
def ec_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def refused(fn, *args) -> str:
    with pytest.raises(CredentialError) as e:
        fn(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


# --- key generation -----------------------------------------------------------------------------


@pytest.mark.parametrize("modulus", [512, 1024, 2048])
def test_generate_rsa(modulus):
    pem = generate_rsa(modulus)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, not encrypted
    key = load_private_key(pem)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == modulus
    assert key.private_numbers().public_numbers.e == 65537
    validate_key(pem)


def test_generate_rsa_4096_in_a_process_pool():
    # The supervisor runs it this way: a picklable top-level function returning bytes.
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
        pem = pool.submit(generate_rsa, 4096).result(timeout=120)
    assert load_private_key(pem).key_size == 4096


@pytest.mark.parametrize("modulus", [0, 768, 2047, 3072, 8192])
def test_unsupported_modulus(modulus):
    assert "unsupported RSA modulus" in refused(generate_rsa, modulus)


def test_512_without_openssl(monkeypatch):
    monkeypatch.setattr(keygen.shutil, "which", lambda name: None)
    msg = refused(generate_rsa, 512)
    assert msg == "cannot generate a 512-bit RSA key: the openssl command is not installed"


def test_512_openssl_refuses(monkeypatch):
    def run(argv, **kwargs):
        return subprocess.CompletedProcess(
            argv, 1, b"", b"...\ngenpkey: Error: key size too small\n"
        )

    monkeypatch.setattr(keygen.subprocess, "run", run)
    msg = refused(generate_rsa, 512)
    assert msg == (
        "cannot generate a 512-bit RSA key: openssl refused (genpkey: Error: key size too small)"
    )


def test_512_openssl_gives_wrong_size(monkeypatch):
    other = generate_rsa(1024)
    monkeypatch.setattr(
        keygen.subprocess,
        "run",
        lambda argv, **kw: subprocess.CompletedProcess(argv, 0, other, b""),
    )
    assert "wrong size" in refused(generate_rsa, 512)
    monkeypatch.setattr(
        keygen.subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(argv, 0, b"x", b"")
    )
    assert "unusable key" in refused(generate_rsa, 512)


def test_weak_warning():
    assert "512-bit RSA key is weak" in weak_warning(512)
    assert weak_warning(1024).startswith("Warning: a 1024-bit RSA key is weak")
    assert weak_warning(2048) is None and weak_warning(4096) is None


# --- subject names ------------------------------------------------------------------------------


def _attrs(name: x509.Name) -> list[tuple[str, str]]:
    return [(a.oid._name, a.value) for a in name]


GOOD_SUBJECTS = [
    (
        SUBJECT,
        [("countryName", "US"), ("organizationName", "Cisco"), ("commonName", "segw.example.net")],
    ),
    (
        "C=US, O=Cisco, CN=segw",
        [("countryName", "US"), ("organizationName", "Cisco"), ("commonName", "segw")],
    ),
    (
        "C=US,O=Cisco,CN=segw",
        [("countryName", "US"), ("organizationName", "Cisco"), ("commonName", "segw")],
    ),
    (
        "cn = segw , o = Cisco Systems",
        [("commonName", "segw"), ("organizationName", "Cisco Systems")],
    ),
    ("/CN=a\\/b/O=x", [("commonName", "a/b"), ("organizationName", "x")]),
    ("CN=Cisco\\, Inc., C=US", [("commonName", "Cisco, Inc."), ("countryName", "US")]),
    ("/CN=a,b", [("commonName", "a,b")]),
    ("CN=a/b", [("commonName", "a/b")]),
    ("/CN=x+y=z", [("commonName", "x+y=z")]),
    ("/CN=Zürich", [("commonName", "Zürich")]),
    (
        "/C=DE/ST=Bayern/L=München/O=Lab/OU=SeGW/CN=gw/emailAddress=ops@example.net"
        "/serialNumber=A-1/DC=example/DC=net",
        [
            ("countryName", "DE"),
            ("stateOrProvinceName", "Bayern"),
            ("localityName", "München"),
            ("organizationName", "Lab"),
            ("organizationalUnitName", "SeGW"),
            ("commonName", "gw"),
            ("emailAddress", "ops@example.net"),
            ("serialNumber", "A-1"),
            ("domainComponent", "example"),
            ("domainComponent", "net"),
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), GOOD_SUBJECTS)
def test_parse_subject(text, expected):
    assert _attrs(parse_subject(text)) == expected


def test_both_forms_give_the_same_name():
    assert parse_subject(SUBJECT) == parse_subject("C=US, O=Cisco, CN=segw.example.net")
    assert parse_subject(SUBJECT).rfc4514_string() == "CN=segw.example.net,O=Cisco,C=US"


BAD_SUBJECTS = [
    ("", "empty subject name"),
    ("   ", "empty subject name"),
    ("/", "empty component"),
    ("/CN=a//O=b", "empty component"),
    ("/CN=a/", "empty component"),
    ("CN=a,,O=b", "empty component"),
    ("segw", "subject component 'segw' has no '='"),
    ("/XX=1", "unknown subject attribute 'XX'"),
    ("C=US, FOO=bar", "unknown subject attribute 'FOO'"),
    ("/CN=", "subject attribute CN is empty"),
    ("/C=USA", "subject attribute C is 3 characters; the limit is 2"),
    ("/C=U1", "two-letter country code"),
    ("/CN=" + "a" * 65, "subject attribute CN is 65 characters; the limit is 64"),
    ("/O=" + "a" * 253, "subject attribute O is 253 characters; the limit is 64"),
    ("/CN=" + "a" * 253, "subject name is 257 characters; the limit is 256"),
    ("/CN=a\x07b", "subject attribute CN contains non-printable characters"),
    ("/emailAddress=bö@example.net", "subject attribute emailAddress must be ASCII"),
    ("/serialNumber=A*1", "subject attribute serialNumber must use letters"),
    ("/CN=\udc80", "subject attribute CN is not valid text"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_SUBJECTS)
def test_parse_subject_refuses(text, expected):
    assert expected in refused(parse_subject, text)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_FUZZ_KEY = ec.generate_private_key(ec.SECP256R1())


def _only_credential_errors(text: str) -> None:
    try:
        name = parse_subject(text)
    except CredentialError as e:
        assert "\n" not in str(e)
        return
    # whatever parses must also encode and sign: no late failure in build_csr
    x509.CertificateSigningRequestBuilder().subject_name(name).sign(_FUZZ_KEY, hashes.SHA256())


@FUZZ
@given(st.text(max_size=300))
def test_parse_subject_arbitrary_text(text):
    _only_credential_errors(text)


@FUZZ
@given(st.text(alphabet="/=,\\ +CNOUSTLDemailAdrsb\x00é\udc80-", max_size=60))
def test_parse_subject_plausible_text(text):
    _only_credential_errors(text)


# --- certificate requests -----------------------------------------------------------------------


def _openssl_verifies(csr_pem: bytes) -> None:
    out = subprocess.run(
        ["openssl", "req", "-verify", "-noout"],
        input=csr_pem,
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert b"verify OK" in out.stderr + out.stdout


@pytest.mark.parametrize(
    ("id_type", "value", "expected"),
    [
        ("fqdn", "segw.example.net", x509.DNSName("segw.example.net")),
        ("fqdn", "segw.example.net.", x509.DNSName("segw.example.net")),
        ("ip", "192.0.2.10", x509.IPAddress(ipaddress.ip_address("192.0.2.10"))),
        ("ip", "2001:db8::10", x509.IPAddress(ipaddress.ip_address("2001:db8::10"))),
        ("rfc822-addr", "segw@example.net", x509.RFC822Name("segw@example.net")),
    ],
)
def test_build_csr(rsa_pem, id_type, value, expected):
    pem = build_csr(rsa_pem, SUBJECT, id_type, value)
    csr = x509.load_pem_x509_csr(pem)
    assert csr.subject == parse_subject(SUBJECT)
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [expected]
    assert csr.public_key() == load_private_key(rsa_pem).public_key()
    assert csr.is_signature_valid
    assert csr.signature_hash_algorithm.name == "sha256"
    _openssl_verifies(pem)


@pytest.mark.parametrize("which", ["rsa_pem", "ec_pem"])
def test_build_csr_sha1_only_on_request(request, which):
    key_pem = request.getfixturevalue(which)
    assert (
        x509.load_pem_x509_csr(
            build_csr(key_pem, SUBJECT, "fqdn", "a.example")
        ).signature_hash_algorithm.name
        == "sha256"
    )
    pem = build_csr(key_pem, SUBJECT, "fqdn", "a.example", "sha1")
    csr = x509.load_pem_x509_csr(pem)
    assert csr.signature_hash_algorithm.name == "sha1"
    assert csr.subject == parse_subject(SUBJECT)
    _openssl_verifies(pem)
    # cryptography no longer verifies SHA-1 signatures in is_signature_valid; check by hand
    pub = csr.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        pub.verify(csr.signature, csr.tbs_certrequest_bytes, padding.PKCS1v15(), hashes.SHA1())
    else:
        pub.verify(csr.signature, csr.tbs_certrequest_bytes, ec.ECDSA(hashes.SHA1()))


def test_build_csr_ec_and_512(ec_pem):
    for key in (ec_pem, generate_rsa(512)):
        csr = x509.load_pem_x509_csr(build_csr(key, "C=US, CN=segw", "ip", "192.0.2.1"))
        assert csr.is_signature_valid
        assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "segw"


@pytest.mark.parametrize(
    ("id_type", "value", "expected"),
    [
        ("ip", "192.0.2", "is not an IPv4 or IPv6 address"),
        ("ip", "192.0.2.01", "is not an IPv4 or IPv6 address"),
        ("ip", "fe80::1%eth0", "is not an IPv4 or IPv6 address"),
        ("ip", "segw.example.net", "is not an IPv4 or IPv6 address"),
        ("fqdn", "bad_name.example", "is not a valid FQDN"),
        ("fqdn", "-x.example", "is not a valid FQDN"),
        ("fqdn", "a..b", "is not a valid FQDN"),
        ("fqdn", "a" * 64 + ".example", "is not a valid FQDN"),
        ("rfc822-addr", "segw", "is not an e-mail address"),
        ("rfc822-addr", "@example.net", "is not an e-mail address"),
        ("rfc822-addr", "a b@example.net", "is not an e-mail address"),
        ("rfc822-addr", "a@bad_domain", "is not a valid FQDN"),
        ("fqdn", "", "id must be 1-256 characters"),
        ("fqdn", "a" * 257, "id must be 1-256 characters"),
        ("dn", "x", "unknown id-type 'dn'"),
    ],
)
def test_build_csr_refuses_bad_ids(rsa_pem, id_type, value, expected):
    assert expected in refused(build_csr, rsa_pem, SUBJECT, id_type, value)


def test_build_csr_refuses_bad_hash_and_subject(rsa_pem):
    assert "unsupported hash 'md5'" in refused(build_csr, rsa_pem, SUBJECT, "fqdn", "a", "md5")
    assert "unknown subject attribute" in refused(build_csr, rsa_pem, "/X=1", "fqdn", "a")
    assert "malformed PEM private key" in refused(build_csr, b"junk", SUBJECT, "fqdn", "a")
