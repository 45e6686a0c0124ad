"""supervisor.pki.credentials: parsing and checking certificates and private keys."""

from __future__ import annotations

import concurrent.futures
import re
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.pki.credentials import (
    CredentialError,
    check_pair,
    check_pem_size,
    describe,
    load_certificate,
    load_private_key,
    validate_key,
    validity_warning,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER


# --- fixtures (also imported by test_pki_store) -------------------------------------------------


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def key_pem(key, fmt=serialization.PrivateFormat.PKCS8, password: bytes | None = None) -> bytes:
    enc = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(PEM, fmt, enc)


def make_cert(
    cn: str,
    key,
    issuer: tuple[x509.Certificate, object] | None = None,
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=365),
    ca: bool = False,
    serial: int = 0x1234,
) -> x509.Certificate:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Cisco"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def pki():
    ca_key, ee_key, ec_key = rsa_key(), rsa_key(), ec.generate_private_key(ec.SECP256R1())
    ca = make_cert("Lab CA", ca_key, ca=True, serial=1)
    signer = (ca, ca_key)
    return {
        "ca_key": ca_key,
        "ca": ca,
        "ee_key": ee_key,
        "ee": make_cert("segw.example.net", ee_key, signer),
        "ec_key": ec_key,
        "ec": make_cert("ec.example.net", ec_key, signer),
        "expired": make_cert(
            "old", ee_key, signer, NOW - timedelta(days=30), NOW - timedelta(days=1)
        ),
        "future": make_cert(
            "new", ee_key, signer, NOW + timedelta(days=1), NOW + timedelta(days=30)
        ),
    }


def one_line(msg: str) -> str:
    assert "\n" not in msg and "\r" not in msg
    assert "MII" not in msg  # no base64 DER (certificates and keys start with MII...)
    return msg


def refused(fn, *args, **kwargs) -> str:
    with pytest.raises(CredentialError) as e:
        fn(*args, **kwargs)
    return one_line(str(e.value))


# --- certificates -------------------------------------------------------------------------------


def test_load_pem_and_der(pki):
    ee = pki["ee"]
    assert load_certificate(ee.public_bytes(PEM), "pem") == ee
    assert load_certificate(ee.public_bytes(DER), "der") == ee


def test_pem_tolerates_surrounding_text_and_flattened_lines(pki):
    pem = pki["ee"].public_bytes(PEM)
    assert load_certificate(b"Bag Attributes\n subject=/CN=x\n" + pem + b"trailer\n", "pem")
    # a one-line CLI value: line breaks turned into spaces
    assert load_certificate(pem.replace(b"\n", b" "), "pem") == pki["ee"]


def test_malformed_certificates(pki):
    pem = pki["ee"].public_bytes(PEM)
    der = pki["ee"].public_bytes(DER)
    key = key_pem(pki["ee_key"])
    garbage = b"-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n"
    cases = [
        (b"", "pem", "empty certificate data"),
        (b"  \n", "der", "empty certificate data"),
        (b"hello", "pem", "malformed PEM certificate: no -----BEGIN CERTIFICATE----- line"),
        (pem[:-30], "pem", "without a matching END line"),
        (pem.replace(b"MII", b"M!I", 1), "pem", "invalid base64"),
        (garbage, "pem", "malformed PEM certificate"),
        (key, "pem", "not a certificate (found PRIVATE KEY block)"),
        (pem + pki["ca"].public_bytes(PEM), "pem", "holds 2 certificates"),
        (pem + key, "pem", "also holds a PRIVATE KEY block; give the key with private-key pem"),
        (der[:-10], "der", "malformed DER certificate"),
        (der + b"\x00", "der", "malformed DER certificate"),
        (pem, "der", "malformed DER certificate: the data is PEM text"),
        (der, "xml", "unknown certificate format"),
    ]
    for data, fmt, expected in cases:
        assert expected in refused(load_certificate, data, fmt), (data[:40], fmt)


def test_describe(pki):
    d = describe(pki["ee"], NOW)
    assert d["subject"] == "CN=segw.example.net,O=Cisco,C=US"
    assert d["issuer"] == "CN=Lab CA,O=Cisco,C=US"
    assert d["serial"] == "1234"
    assert d["not_before"] == "2025-05-31T12:00:00+00:00"
    assert d["not_after"] == "2026-06-01T12:00:00+00:00"
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", d["sha256"])
    assert re.fullmatch(r"([0-9A-F]{2}:){19}[0-9A-F]{2}", d["sha1"])
    assert d["sha256"].replace(":", "") == pki["ee"].fingerprint(hashes.SHA256()).hex().upper()
    assert d["key"] == "RSA 2048"
    assert d["is_ca"] is False and d["warning"] is None
    assert describe(pki["ca"], NOW)["is_ca"] is True
    assert describe(pki["ca"], NOW)["serial"] == "01"
    assert describe(pki["ec"], NOW)["key"] == "ECDSA P-256"
    assert "has expired" in describe(pki["expired"], NOW, name="old")["warning"]


def test_describe_fingerprint_matches_openssl(pki):
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
        input=pki["ee"].public_bytes(PEM),
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout.decode()
    assert out.strip().split("=", 1)[1] == describe(pki["ee"], NOW)["sha256"]


def test_validity_warnings(pki):
    assert validity_warning(pki["ee"], NOW) is None
    expired = one_line(validity_warning(pki["expired"], NOW, name="segw-old"))
    assert expired == (
        "Warning: certificate segw-old has expired (notAfter 2025-05-31T12:00:00+00:00)"
    )
    future = validity_warning(pki["future"], NOW, name="segw-new")
    assert future == (
        "Warning: certificate segw-new is not yet valid (notBefore 2025-06-02T12:00:00+00:00)"
    )
    # the validity period is inclusive at both ends; a naive `now` is UTC
    assert validity_warning(pki["expired"], NOW - timedelta(days=1)) is None
    assert validity_warning(pki["future"], NOW + timedelta(days=1)) is None
    assert validity_warning(pki["ee"], NOW.replace(tzinfo=None)) is None
    # without a name the subject identifies the certificate
    assert "CN=old" in validity_warning(pki["expired"], NOW)


def test_expired_certificates_still_load(pki):
    for which in ("expired", "future"):
        assert load_certificate(pki[which].public_bytes(PEM), "pem") == pki[which]


def test_check_pem_size():
    check_pem_size("x" * 4095, with_key=False)
    check_pem_size("x" * 8191, with_key=True)
    assert "4095" in refused(check_pem_size, "x" * 4096, with_key=False)
    assert "8191" in refused(check_pem_size, "x" * 8192, with_key=True)


# --- private keys -------------------------------------------------------------------------------


def test_load_key_formats(pki):
    k, e = pki["ee_key"], pki["ec_key"]
    trad = serialization.PrivateFormat.TraditionalOpenSSL
    for key, pem in [
        (k, key_pem(k)),
        (k, key_pem(k, trad)),  # BEGIN RSA PRIVATE KEY
        (e, key_pem(e)),
        (e, key_pem(e, trad)),  # BEGIN EC PRIVATE KEY
        (k, key_pem(k).replace(b"\n", b" ")),  # flattened onto one line
    ]:
        assert load_private_key(pem).private_numbers() == key.private_numbers()
    # `openssl ecparam -genkey` output: EC PARAMETERS then the key
    params = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    assert load_private_key(params + key_pem(e)).private_numbers() == e.private_numbers()
    # a password for an unencrypted key is ignored
    assert load_private_key(key_pem(k), b"pw").private_numbers() == k.private_numbers()


@pytest.mark.parametrize("fmt", ["PKCS8", "TraditionalOpenSSL"])
def test_encrypted_keys(pki, fmt):
    pem = key_pem(pki["ee_key"], getattr(serialization.PrivateFormat, fmt), b"s3cret")
    key = load_private_key(pem, b"s3cret")
    assert key.private_numbers() == pki["ee_key"].private_numbers()
    assert "encrypted but no password" in refused(load_private_key, pem)
    assert "wrong password" in refused(load_private_key, pem, b"guess")


def test_malformed_keys(pki):
    pem = key_pem(pki["ee_key"])
    body = b"".join(pem.split(b"\n")[1:-2])
    ed = ed25519.Ed25519PrivateKey.generate()
    k1 = ec.generate_private_key(ec.SECP256K1())
    cases = [
        (b"", "empty private key data"),
        (b"not a key", "malformed PEM private key: no -----BEGIN PRIVATE KEY----- line"),
        (pem[:-20], "without a matching END line"),
        (pem.replace(body[:20], b"*" * 20), "invalid base64"),
        (
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
            "malformed PEM private key: not a valid PRIVATE KEY",
        ),
        (pki["ee"].public_bytes(PEM), "not a private key (found CERTIFICATE block)"),
        (pem + key_pem(pki["ec_key"]), "holds 2 private keys"),
        (pem + pki["ee"].public_bytes(PEM), "also holds a CERTIFICATE block"),
        (key_pem(ed), "unsupported private key type Ed25519"),
        (key_pem(k1), "unsupported private key type ECDSA secp256k1"),
        (
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----",
            "unsupported private key type (OPENSSH PRIVATE KEY",
        ),
    ]
    for data, expected in cases:
        assert expected in refused(load_private_key, data), data[:40]


def test_check_pair(pki):
    check_pair(pki["ee"], pki["ee_key"])
    check_pair(pki["ec"], pki["ec_key"])
    msg = refused(check_pair, pki["ee"], pki["ca_key"], name="segw")
    assert msg == "private key does not match certificate segw (the public keys differ)"
    assert "CN=ec.example.net" in refused(check_pair, pki["ec"], pki["ee_key"])


def _inconsistent_rsa_pem(key: rsa.RSAPrivateKey) -> bytes:
    n = key.private_numbers()
    bad = rsa.RSAPrivateNumbers(
        n.p, n.q, n.d + 2, n.dmp1, n.dmq1, n.iqmp, n.public_numbers
    ).private_key(unsafe_skip_rsa_key_validation=True)
    return key_pem(bad)


def test_validate_key(pki):
    validate_key(key_pem(pki["ee_key"]))
    validate_key(key_pem(pki["ec_key"]))
    validate_key(key_pem(pki["ee_key"], password=b"pw"), b"pw")
    bad = _inconsistent_rsa_pem(pki["ee_key"])
    load_private_key(bad)  # the fast load does not notice ...
    assert "failed validation" in refused(validate_key, bad)  # ... full validation does
    assert "malformed PEM private key" in refused(validate_key, b"nope")


def test_validate_key_runs_in_a_process_pool(pki):
    good, bad = key_pem(pki["ee_key"]), _inconsistent_rsa_pem(pki["ee_key"])
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
        assert pool.submit(validate_key, good).result(timeout=60) is None
        with pytest.raises(CredentialError, match="failed validation"):
            pool.submit(validate_key, bad).result(timeout=60)


# --- arbitrary input: only CredentialError ------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_credential_errors(fn, *args):
    try:
        fn(*args)
    except CredentialError as e:
        one_line(str(e))


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from(["pem", "der"]))
def test_load_certificate_arbitrary_bytes(data, fmt):
    _only_credential_errors(load_certificate, data, fmt)


@FUZZ
@given(st.binary(max_size=2048), st.one_of(st.none(), st.binary(max_size=16)))
def test_load_private_key_arbitrary_bytes(data, password):
    _only_credential_errors(load_private_key, data, password)


def _mutated(original: bytes):
    """Valid input with a few bytes changed, cut short or extended: reaches the deep parsers."""
    edits = st.lists(
        st.tuples(st.integers(0, len(original) - 1), st.integers(0, 255)), min_size=1, max_size=4
    )

    def apply(args):
        edits, cut = args
        buf = bytearray(original)
        for pos, value in edits:
            buf[pos] = value
        return bytes(buf[:cut])

    return st.tuples(edits, st.integers(1, len(original) + 1)).map(apply)


_CA_KEY = ec.generate_private_key(ec.SECP256R1())
_FUZZ_CERT = make_cert("fuzz.example.net", _CA_KEY, ca=True)


@FUZZ
@given(_mutated(_FUZZ_CERT.public_bytes(DER)))
def test_load_certificate_mutated_der(data):
    _only_credential_errors(load_certificate, data, "der")


@FUZZ
@given(_mutated(_FUZZ_CERT.public_bytes(PEM)))
def test_load_certificate_mutated_pem(data):
    _only_credential_errors(load_certificate, data, "pem")


@FUZZ
@given(_mutated(key_pem(_CA_KEY)))
def test_load_private_key_mutated_pem(data):
    _only_credential_errors(load_private_key, data)


@FUZZ
@given(_mutated(key_pem(_CA_KEY, serialization.PrivateFormat.TraditionalOpenSSL, b"pw")))
def test_load_encrypted_key_mutated_pem(data):
    _only_credential_errors(load_private_key, data, b"pw")
